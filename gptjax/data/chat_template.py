"""The one chat template: training, sampling, the chat command line and the server use it.

    <|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|>

Each message is its role token, its content tokenized on its own (so no token merges
across a turn boundary), and an end-of-turn token. The four control tokens are special
tokens of the tokenizer (`tokenizers.with_added_tokens`): one id each, which no text
encodes to. Training learns each assistant message's content and its end-of-turn token
(so the model learns to stop), never the role tokens or the other roles' turns; a prompt
for generation ends with the assistant role token.
"""

from __future__ import annotations

import numpy as np

from gptjax.data.tokenizers import Tokenizer, special_token_id, with_added_tokens
from gptjax.errors import UserError

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


def with_chat_tokens(tokenizer: Tokenizer) -> Tokenizer:
  """The tokenizer with the control tokens appended where it lacks them."""
  return with_added_tokens(tokenizer, CHAT_TOKENS)


def chat_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
  ids = {name: special_token_id(tokenizer, name) for name in CHAT_TOKENS}
  missing = [name for name, i in ids.items() if i is None]
  if missing:
    raise UserError(f"the tokenizer has no chat tokens {missing}: it needs "
                    "gptjax.data.chat_template.with_chat_tokens (a chat task adds them)")
  return ids


def end_of_turn_id(tokenizer: Tokenizer) -> int:
  return chat_token_ids(tokenizer)[END]


def render(conversation: list[dict], tokenizer: Tokenizer,
           generation_prompt: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(token ids int32[L], trained bool[L]): trained marks the tokens the model learns to
  produce, i.e. assistant contents and their end-of-turn tokens. `generation_prompt`
  appends the assistant role token, for sampling the next reply."""
  ids = chat_token_ids(tokenizer)
  contents = tokenizer.encode_batch([m["content"] for m in conversation])
  pieces, trained = [], []
  for message, content in zip(conversation, contents):
    if message["role"] not in ROLE_TOKENS:
      raise UserError(f"chat role {message['role']!r} is not one of {sorted(ROLE_TOKENS)}")
    learn = message["role"] == "assistant"
    turn = np.concatenate([[ids[ROLE_TOKENS[message["role"]]]], content, [ids[END]]])
    pieces.append(turn)
    trained.append(np.concatenate([[False], np.full(len(turn) - 1, learn)]))
  if generation_prompt:
    pieces.append(np.asarray([ids[ASSISTANT]]))
    trained.append(np.asarray([False]))
  return (np.concatenate(pieces).astype(np.int32),
          np.concatenate(trained).astype(bool))


def render_prompt(conversation: list[dict], tokenizer: Tokenizer) -> np.ndarray:
  """Token ids that ask the model for the next assistant turn of `conversation`."""
  return render(conversation, tokenizer, generation_prompt=True)[0]
