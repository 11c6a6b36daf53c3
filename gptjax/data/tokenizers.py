"""Tokenizers: character-level (nanoGPT), sentencepiece (BPE / unigram) and Hugging Face
tokenizer.json ("hf", gptjax.data.hf_tokenizer), JSON-serialisable.

Special tokens (gptjax's chat tokens) are appended after a tokenizer's own vocabulary
(`with_added_tokens`): one id each, never produced by `encode`, so no text can forge them.

Both keep `decode(encode(text)) == text` (sentencepiece: with byte_fallback), including code
indentation and newlines, so samples and round trips are exact. Nothing is pickled: `to_json`
gives a plain dict (a sentencepiece model as base64 of its proto) that `tokenizer_from_json`
turns back into the same tokenizer.
"""

import base64
import io
import json
import os
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np
import sentencepiece as spm

from gptjax import storage
from gptjax.errors import UserError

PATH_FLAG = "--config.data.tokenizer.path"
MAX_SENTENCE_CHARS = 1000  # sentencepiece skips training sentences over 4192 bytes; split them


class Tokenizer(Protocol):
  vocab_size: int
  eos_id: int | None  # document separator; None = join documents with "\n" instead
  bos_id: int | None  # put before a prompt (Hugging Face tokenizers that expect one)
  added_tokens: tuple[str, ...]  # special tokens after the base vocabulary, in id order

  def encode(self, text: str) -> np.ndarray: ...
  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...
  def decode(self, ids) -> str: ...
  def to_json(self) -> dict: ...


class CharTokenizer:
  """One id per distinct character, ids in sorted character order (as nanoGPT)."""

  eos_id = bos_id = None
  added_tokens = ()

  def __init__(self, chars: str):
    self.chars = "".join(sorted(set(chars)))
    self.vocab_size = len(self.chars)
    self._codes = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)  # sorted

  @classmethod
  def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
    return cls("".join(set().union(*map(set, texts))))

  def encode(self, text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    ids = np.searchsorted(self._codes, codes).clip(max=self.vocab_size - 1)
    unknown = self._codes[ids] != codes
    if unknown.any():
      char = chr(codes[unknown.argmax()])
      raise UserError(f"character {char!r} is not in the char tokenizer's vocabulary")
    return ids.astype(np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    return self._codes[np.asarray(ids, np.int64)].tobytes().decode("utf-32-le", "surrogatepass")

  def to_json(self) -> dict:
    return {"kind": "char", "chars": self.chars}


class SentencePieceTokenizer:
  """A sentencepiece model; eos separates documents, "\\n" is a piece of its own."""

  added_tokens = ()
  bos_id = None  # gptjax's own models are trained without one

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.vocab_size()
    self.eos_id = self._sp.eos_id()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    ids = self._sp.encode(list(texts), num_threads=os.cpu_count() or 1)
    return [np.asarray(x, np.int32) for x in ids]

  def decode(self, ids) -> str:
    return self._sp.decode(np.asarray(ids).tolist())

  def to_json(self) -> dict:
    return {"kind": "sentencepiece", "model": base64.b64encode(self.model_proto).decode("ascii")}


class WithAddedTokens:
  """A base tokenizer plus special tokens at ids base.vocab_size, base.vocab_size + 1, ...

  `encode` is the base's, so it never yields them; `decode` writes them by name."""

  def __init__(self, base: Tokenizer, added: Sequence[str]):
    if len(set(added)) != len(added):
      raise ValueError(f"repeated added tokens: {list(added)}")
    self.base, self.added_tokens = base, tuple(added)
    self.vocab_size = base.vocab_size + len(self.added_tokens)
    self.eos_id, self.bos_id = base.eos_id, base.bos_id
    self._ids = {name: base.vocab_size + i for i, name in enumerate(self.added_tokens)}

  def token_id(self, name: str) -> int:
    return self._ids[name]

  def encode(self, text: str) -> np.ndarray:
    return self.base.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return self.base.encode_batch(texts)

  def decode(self, ids) -> str:
    ids = np.asarray(ids).reshape(-1)
    special = ids >= self.base.vocab_size
    if not special.any():
      return self.base.decode(ids)
    parts, start = [], 0
    for i in np.flatnonzero(special):
      parts.append(self.base.decode(ids[start:i]))
      index = int(ids[i]) - self.base.vocab_size
      parts.append(self.added_tokens[index] if index < len(self.added_tokens) else "")
      start = i + 1
    parts.append(self.base.decode(ids[start:]))
    return "".join(parts)

  def to_json(self) -> dict:
    return {**self.base.to_json(), "added_tokens": list(self.added_tokens)}


def with_added_tokens(tokenizer: Tokenizer, names: Sequence[str]) -> Tokenizer:
  """`tokenizer` with those of `names` it lacks appended (existing ids never move)."""
  missing = [n for n in names if n not in tokenizer.added_tokens]
  if not missing:
    return tokenizer
  base = getattr(tokenizer, "base", tokenizer)
  return WithAddedTokens(base, (*tokenizer.added_tokens, *missing))


def special_token_id(tokenizer: Tokenizer, name: str) -> int | None:
  return tokenizer.token_id(name) if name in tokenizer.added_tokens else None


def tokenizer_from_json(d: dict) -> Tokenizer:
  if d.get("added_tokens"):
    base = tokenizer_from_json({k: v for k, v in d.items() if k != "added_tokens"})
    return WithAddedTokens(base, d["added_tokens"])
  if d.get("kind") == "char":
    return CharTokenizer(d["chars"])
  if d.get("kind") == "sentencepiece":
    return SentencePieceTokenizer(base64.b64decode(d["model"]))
  if d.get("kind") == "hf":
    from gptjax.data.hf_tokenizer import HFTokenizer
    return HFTokenizer(d["tokenizer_json"], d.get("settings"))
  raise UserError(f"unknown tokenizer kind {d.get('kind')!r} (expected char, sentencepiece "
                  "or hf)")


def load_tokenizer(path: str) -> Tokenizer:
  """A tokenizer file: JSON from `to_json`, a sentencepiece .model proto, or a Hugging Face
  tokenizer (its folder, or its tokenizer.json)."""
  path = os.path.expanduser(path)
  if os.path.isdir(path) or os.path.basename(path) == "tokenizer.json":
    from gptjax.data.hf_tokenizer import load_hf_folder
    return load_hf_folder(path if os.path.isdir(path) else os.path.dirname(path) or ".")
  try:
    blob = storage.read_bytes(path)  # a local file or an object (gs://...)
  except OSError as e:
    raise UserError(f"cannot read {PATH_FLAG}={path}: {e.strerror or e}") from None
  try:
    if blob.lstrip().startswith(b"{"):
      return tokenizer_from_json(json.loads(blob))
    return SentencePieceTokenizer(blob)
  except (ValueError, KeyError, RuntimeError):
    raise UserError(f"{PATH_FLAG}={path} is neither a tokenizer JSON (from to_json) nor a "
                    "sentencepiece .model") from None


def training_sentences(texts: Iterable[str]) -> Iterator[str]:
  """Non-empty lines, long ones split: sentencepiece trains on sentences, not documents."""
  for text in texts:
    for line in text.split("\n"):
      for i in range(0, len(line), MAX_SENTENCE_CHARS):
        yield line[i:i + MAX_SENTENCE_CHARS]


def train_sentencepiece(texts: Iterable[str], *, vocab_size: int, model_type: str,
                        byte_fallback: bool, max_sentences: int) -> SentencePieceTokenizer:
  """Trains in-process on the lines of `texts`; settings chosen so text round-trips exactly."""
  if model_type not in ("bpe", "unigram"):
    raise UserError(f"--config.data.tokenizer.model_type={model_type!r}: use bpe or unigram")
  spm.set_random_generator_seed(0)  # every host samples the same sentences: same vocabulary
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=training_sentences(texts),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        byte_fallback=byte_fallback,
        # Without bytes to fall back on, every training character must get a piece.
        character_coverage=0.9995 if byte_fallback else 1.0,
        user_defined_symbols=["\n"],  # lines are trained apart; "\n" must still be a token
        # Keep every character as written (code indentation, runs of spaces, tabs).
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_by_whitespace=True,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
  except RuntimeError as e:  # vocab_size too large for the corpus, or too small for its chars
    why = str(e).strip().splitlines()[0].rpartition("] ")[2]  # drop the C++ source location
    raise UserError(f"sentencepiece training failed: {why} "
                    "(adjust --config.data.tokenizer.vocab_size)") from None
  return SentencePieceTokenizer(model.getvalue())


def encode_documents(tokenizer: Tokenizer, pieces: Sequence[tuple[str, bool]]) -> np.ndarray:
  """One token stream from (text, starts_document) pieces, a separator between documents."""
  separator = (np.asarray([tokenizer.eos_id], np.int32) if tokenizer.eos_id is not None
               else tokenizer.encode("\n"))
  parts = []
  for i, ((_, doc_start), ids) in enumerate(
      zip(pieces, tokenizer.encode_batch([text for text, _ in pieces]))):
    if doc_start and i:
      parts.append(separator)
    parts.append(ids)
  return np.concatenate(parts) if parts else np.zeros([0], np.int32)
