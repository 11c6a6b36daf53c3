"""Hugging Face fast tokenizers (tokenizer.json) as a gptjax tokenizer kind, "hf".

An imported model keeps its own tokenizer: the `tokenizers` library runs tokenizer.json as
transformers does. As for the other kinds, `encode` adds no special tokens and never turns
text into one (text spelling "<|im_end|>" stays text), so no document or user message can
forge a control token; `decode` writes special tokens by name. `bos_id` is the token the
Hugging Face tokenizer puts first by default (Llama's <s>, Llama 3's <|begin_of_text|>), or
None (GPT-2, Qwen2); prompts for sampling start with it.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from gptjax.errors import UserError

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _token_name(value) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


class HFTokenizer:

  added_tokens = ()

  def __init__(self, tokenizer_json: str, settings: dict | None = None):
    from tokenizers import Tokenizer
    self.tokenizer_json = tokenizer_json
    self.settings = dict(settings or {})  # bos_token, eos_token, pad_token, chat_template
    self._tok = Tokenizer.from_str(tokenizer_json)
    self._tok.encode_special_tokens = True  # special tokens spelt in text stay text
    self._tok.no_padding()
    self._tok.no_truncation()
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    self.eos_id = self._id(self.settings.get("eos_token"))
    self.pad_id = self._id(self.settings.get("pad_token"))
    self.bos_id = self._default_bos()

  def _id(self, name) -> int | None:
    return None if name is None else self._tok.token_to_id(name)

  def _default_bos(self) -> int | None:
    """The id the tokenizer's post-processor prepends, if any (transformers' default)."""
    self._tok.encode_special_tokens = False
    try:
      with_special = self._tok.encode("a", add_special_tokens=True).ids
      plain = self._tok.encode("a", add_special_tokens=False).ids
    finally:
      self._tok.encode_special_tokens = True
    if len(with_special) > len(plain) and with_special[1:len(plain) + 1] == plain:
      return with_special[0]
    return None

  def token_id(self, name: str) -> int:
    token = self._tok.token_to_id(name)
    if token is None:
      raise KeyError(name)
    return token

  def has_token(self, name: str) -> bool:
    return self._tok.token_to_id(name) is not None

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def decode(self, ids) -> str:
    return self._tok.decode(np.asarray(ids).reshape(-1).tolist(), skip_special_tokens=False)

  def to_json(self) -> dict:
    return {"kind": "hf", "tokenizer_json": self.tokenizer_json, "settings": self.settings}

  @property
  def backend(self):
    """The `tokenizers.Tokenizer` itself (for export)."""
    return self._tok


def load_hf_folder(folder: str) -> HFTokenizer:
  """The tokenizer of a Hugging Face checkpoint folder (tokenizer.json, with the special
  tokens and the chat template of tokenizer_config.json / chat_template.jinja)."""
  path = os.path.join(folder, "tokenizer.json")
  if not os.path.exists(path):
    found = [n for n in ("tokenizer.model", "vocab.json") if os.path.exists(os.path.join(folder, n))]
    hint = (f" (it has {found[0]}: save the fast tokenizer with transformers' "
            "AutoTokenizer.from_pretrained(dir).save_pretrained(dir))" if found else "")
    raise UserError(f"{folder} has no tokenizer.json{hint}, or pass --tokenizer=FILE")
  with open(path) as f:
    tokenizer_json = f.read()
  config = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
    if os.path.exists(os.path.join(folder, name)):
      with open(os.path.join(folder, name)) as f:
        config.update(json.load(f))
  settings = {key: _token_name(config.get(key)) for key in ("bos_token", "eos_token",
                                                            "pad_token")}
  template = config.get("chat_template")
  jinja = os.path.join(folder, "chat_template.jinja")
  if os.path.exists(jinja):
    with open(jinja) as f:
      template = f.read()
  if isinstance(template, list):  # named templates: the default one
    template = next((t.get("template") for t in template if t.get("name") == "default"), None)
  if template:
    settings["chat_template"] = template
  try:
    return HFTokenizer(tokenizer_json, {k: v for k, v in settings.items() if v is not None})
  except Exception as e:  # noqa: BLE001: the tokenizers library's parse errors
    raise UserError(f"{path} is not a tokenizer the tokenizers library reads: "
                    f"{str(e).splitlines()[0][:200]}") from None
