"""Completions of many prompts by one model, in batches, through gptjax.beam_search (beams=1
is greedy): what translation, exact match and review packs decode with.

Prompts go in batches of a fixed size (the last one filled with copies), left-padded to a
power-of-two length, so an evaluation compiles once per length bucket; prompts of similar
length share a batch.
"""

from __future__ import annotations

import numpy as np

from gptjax import sharding
from gptjax.beam_search import beam_search
from gptjax.data import chat_template
from gptjax.errors import UserError
from gptjax.rollout import left_padded


def complete(loaded, prompts: list, *, stop_id: int, beams: int = 1, length_penalty: float = 1.0,
             max_new_tokens: int = 64, batch_size: int = 32) -> list[list[int]]:
  """Each prompt's completion (token ids, without the stop token)."""
  limit = loaded.model.cfg.max_len
  longest = max(map(len, prompts))
  if longest >= limit:
    raise UserError(f"a prompt of {longest} tokens leaves no room in the model's context of "
                    f"{limit}: shorten it")
  out = [None] * len(prompts)
  order = np.argsort([len(p) for p in prompts], kind="stable")
  with sharding.rules_context(loaded.mesh):
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      width = min(limit - 1, 1 << max(3, (max(len(prompts[i]) for i in chunk) - 1).bit_length()))
      rows = [prompts[i] for i in chunk] + [prompts[chunk[0]]] * (batch_size - len(chunk))
      prompt_BP, pad_B = left_padded(rows, width)
      tokens, lengths, _ = beam_search(
          loaded.model, loaded.params, prompt_BP, pad_B, beams=beams,
          max_new_tokens=min(max_new_tokens, limit - width), stop_id=stop_id,
          length_penalty=length_penalty, valid_vocab=loaded.tokenizer.vocab_size)
      for row, index in enumerate(chunk):
        ids = tokens[row, :lengths[row]].tolist()
        out[index] = ids[:-1] if ids and ids[-1] == stop_id else ids
  return out


def chat_answers(loaded, messages: list[str], **kwargs) -> list[str]:
  """The model's reply to each message as a one-turn chat, cut at its end of turn."""
  tok = loaded.tokenizer
  prompts = [chat_template.render_prompt([{"role": "user", "content": m}], tok).tolist()
             for m in messages]
  end = chat_template.end_of_turn_id(tok)
  return [tok.decode(ids).strip() for ids in complete(loaded, prompts, stop_id=end, **kwargs)]


def text_continuations(loaded, texts: list[str], **kwargs) -> list[str]:
  """A base model's continuation of each text, up to the end of its line."""
  from gptjax.evals.scoring import document_start
  tok = loaded.tokenizer
  newline = list(tok.encode("\n"))
  stop = newline[0] if len(newline) == 1 else tok.eos_id
  if stop is None:
    raise UserError("this tokenizer has neither a one-token newline nor an end-of-text token "
                    "to stop a continuation at")
  prompts = [document_start(tok) + list(tok.encode(t)) for t in texts]
  return [tok.decode(ids).split("\n")[0] for ids in complete(loaded, prompts, stop_id=stop,
                                                             **kwargs)]
