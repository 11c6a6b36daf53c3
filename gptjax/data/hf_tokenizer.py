"""Hugging Face fast tokenizers (tokenizer.json) as a gptjax tokenizer kind, "hf".

An imported model keeps its own tokenizer: the `tokenizers` library runs tokenizer.json as
transformers does. As for the other kinds, `encode` adds no special tokens and never turns
text into one (text spelling "<|im_end|>" stays text), so no document or user message can
forge a control token; `decode` writes special tokens by name. `bos_id` is the token the
Hugging Face tokenizer puts first by default (Llama's <s>, Llama 3's <|begin_of_text|>), or
None (GPT-2, Qwen2); plain prompts for sampling start with it. The model's Jinja chat
template travels in `settings` and becomes its chat format (gptjax.data.chat_template).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from gptjax import storage
from gptjax.errors import UserError

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
KEEP_TEMPLATE, GPTJAX_TEMPLATE = None, "gptjax"  # values of load_hf_folder's chat_template


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
    # bos/eos/unk/pad_token names, add_bos_token, chat_template (Jinja)
    self.settings = dict(settings or {})
    self._tok = Tokenizer.from_str(tokenizer_json)
    self._tok.encode_special_tokens = True  # special tokens spelt in text stay text
    self._tok.no_padding()
    self._tok.no_truncation()
    vocab = self._tok.get_vocab(with_added_tokens=True)
    self.vocab_size = max(vocab.values()) + 1 if vocab else 0  # ids may leave holes
    self.eos_id = self._id(self.settings.get("eos_token"))
    self.pad_id = self._id(self.settings.get("pad_token"))
    self.bos_id = self._default_bos()

  def _id(self, name) -> int | None:
    return None if name is None else self._tok.token_to_id(name)

  def _default_bos(self) -> int | None:
    """The id transformers' encode puts first: the post-processor's, unless
    tokenizer_config.json sets add_bos_token (transformers then rebuilds the post-processor)."""
    add = self.settings.get("add_bos_token")
    if add is not None:
      return self._id(self.settings.get("bos_token")) if add else None
    self._tok.encode_special_tokens = False  # called from __init__: no other thread yet
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

  # ---- what the chat format needs (gptjax.data.jinja_chat)

  @property
  def chat_template(self) -> str | None:
    return self.settings.get("chat_template") or None

  def special_token_names(self) -> dict[str, str]:
    """bos_token, eos_token, ... as a chat template sees them (transformers passes these)."""
    return {k: self.settings[k] for k in SPECIAL_KEYS if self.settings.get(k)}

  def special_tokens(self) -> set[str]:
    """The texts of every special added token (control tokens of templates)."""
    return {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}

  def encode_template(self, texts: Sequence[str]) -> list[list[int]]:
    """Template text as transformers' apply_chat_template tokenizes it: special tokens
    recognised. A fresh backend, so no thread ever sees `encode` recognise them."""
    from tokenizers import Tokenizer
    backend = Tokenizer.from_str(self.tokenizer_json)
    backend.no_padding()
    backend.no_truncation()
    return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]

  @property
  def backend(self):
    """The `tokenizers.Tokenizer` itself (for export)."""
    return self._tok


def _read_template(value: str) -> str | None:
  if value == GPTJAX_TEMPLATE:
    return None
  try:
    with open(os.path.expanduser(value)) as f:
      return f.read()
  except OSError as e:
    raise UserError(f"--chat_template={value}: {e.strerror} (give a Jinja file, or "
                    f"{GPTJAX_TEMPLATE} for gptjax's own chat tokens)") from None


def load_hf_folder(folder: str, chat_template: str | None = KEEP_TEMPLATE) -> HFTokenizer:
  """The tokenizer of a Hugging Face checkpoint folder (tokenizer.json, with the special
  tokens and the chat template of tokenizer_config.json / chat_template.jinja).
  `chat_template`: None keeps the folder's; a Jinja file replaces it; "gptjax" drops it, so
  a chat task gives the tokenizer gptjax's chat tokens."""
  path = os.path.join(folder, "tokenizer.json")
  if not os.path.exists(path):
    found = [n for n in ("tokenizer.model", "vocab.json")
             if os.path.exists(os.path.join(folder, n))]
    hint = (f" (it has {found[0]}: save the fast tokenizer with transformers' "
            "AutoTokenizer.from_pretrained(dir).save_pretrained(dir))" if found else "")
    raise UserError(f"{folder} has no tokenizer.json{hint}, or pass --tokenizer=FILE")
  tokenizer_json = storage.read_regular_text(path)
  config = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
    if os.path.exists(os.path.join(folder, name)):
      config.update(storage.read_json_object(os.path.join(folder, name)))
  settings = {key: _token_name(config.get(key)) for key in SPECIAL_KEYS}
  if isinstance(config.get("add_bos_token"), bool):
    settings["add_bos_token"] = config["add_bos_token"]
  template = config.get("chat_template")
  jinja = os.path.join(folder, "chat_template.jinja")
  if os.path.exists(jinja):
    template = storage.read_regular_text(jinja)
  if isinstance(template, list):  # named templates: the default one
    template = next((t.get("template") for t in template if t.get("name") == "default"), None)
  if chat_template is not KEEP_TEMPLATE:
    template = _read_template(chat_template)
  if template:
    settings["chat_template"] = template
  try:
    return HFTokenizer(tokenizer_json, {k: v for k, v in settings.items() if v is not None})
  except Exception as e:  # noqa: BLE001: the tokenizers library's parse errors
    raise UserError(f"{path} is not a tokenizer the tokenizers library reads: "
                    f"{str(e).splitlines()[0][:200]}") from None
