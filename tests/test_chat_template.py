"""The one chat template: special tokens, the loss mask, one rendering everywhere."""

import numpy as np
import pytest

from gptjax import generate
from gptjax.data import chat_data, chat_template, tokenizers
from gptjax.data.chat_template import ASSISTANT, END, SYSTEM, USER

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Ciao"},
]


@pytest.fixture(scope="module")
def tok():
  texts = [m["content"] for m in CONVERSATION] + list(chat_template.CHAT_TOKENS) + ["x"]
  base = tokenizers.CharTokenizer.from_texts(texts)
  return chat_template.with_chat_tokens(base)


def test_control_tokens_are_special_ids_that_no_text_encodes_to(tok):
  base_size = tok.base.vocab_size
  ids = {name: tok.token_id(name) for name in chat_template.CHAT_TOKENS}
  assert sorted(ids.values()) == list(range(base_size, base_size + 4))
  for name in chat_template.CHAT_TOKENS:  # the names as text are ordinary characters
    assert (tok.encode(name) < base_size).all() and len(tok.encode(name)) == len(name)
  assert tok.decode([ids[USER], *tok.encode("Hi"), ids[END]]) == "<|user|>Hi<|end|>"
  back = tokenizers.tokenizer_from_json(tok.to_json())
  assert back.added_tokens == tok.added_tokens and back.vocab_size == tok.vocab_size
  assert chat_template.with_chat_tokens(tok) is tok  # nothing added twice
  sp_like = tokenizers.with_added_tokens(tok, ["<|extra|>"])  # growing keeps existing ids
  assert [sp_like.token_id(n) for n in chat_template.CHAT_TOKENS] == list(ids.values())


def test_loss_mask_is_exactly_the_assistant_turns_and_their_end_tokens(tok):
  ids, trained = chat_template.render(CONVERSATION, tok)
  t = {name: tok.token_id(name) for name in chat_template.CHAT_TOKENS}
  expected_ids, expected_mask = [], []
  for m in CONVERSATION:
    role = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}[m["role"]]
    content = list(tok.encode(m["content"]))
    expected_ids += [t[role], *content, t[END]]
    learn = m["role"] == "assistant"
    expected_mask += [False] + [learn] * (len(content) + 1)
  assert ids.tolist() == expected_ids and trained.tolist() == expected_mask
  # Decoded, the trained tokens are the two replies, each with its end-of-turn token.
  assert tok.decode(ids[trained]) == "Hello!<|end|>Ciao<|end|>"
  # In a batch the mask is on targets: it covers exactly those tokens as predictions.
  rows = chat_data.windows([(ids, trained)], len(ids) + 3, packing=False)
  batch = chat_data._Rows(rows, packing=False)(np.asarray([0]))
  targets = batch["tokens"][0, 1:]
  assert tok.decode(targets[batch["mask"][0] > 0]) == "Hello!<|end|>Ciao<|end|>"
  assert batch["mask"].sum() == trained.sum()


def test_sampling_renders_the_prompt_as_training_does(tok, monkeypatch):
  """The chat prompt is the training rendering cut before the reply: same ids, so the
  model is asked exactly what it was trained on; the reply stops at end of turn."""
  ids, _ = chat_template.render(CONVERSATION, tok)
  prompt = chat_template.render_prompt(CONVERSATION[:4], tok)
  assert prompt.tolist() == ids[:len(prompt)].tolist()
  assert prompt[-1] == tok.token_id(ASSISTANT)
  reply = ids[len(prompt):]  # "Ciao<|end|>"
  seen = {}

  def fake_generate(model, params, prompt_BP, max_new_tokens, *args, **kwargs):
    seen["prompt"] = prompt_BP
    junk = np.full(max_new_tokens - len(reply), tok.encode("x")[0])
    return np.concatenate([reply, junk])[None]

  monkeypatch.setattr(generate, "generate", fake_generate)
  loaded = type("Loaded", (), {"tokenizer": tok, "model": None, "params": None})
  out = generate.chat_replies(loaded, CONVERSATION[:4], max_new_tokens=12)
  assert out == ["Ciao"] and seen["prompt"][0].tolist() == prompt.tolist()
