"""Corpus -> stored splits -> tokenizer -> cached token streams; and the gptjax-prepare CLI.

Layout under data.data_dir ("" = ~/.cache/gptjax):
  local_text/KEY/1.0.0/          the cleaned corpus as array_record (TFDS), KEY = prepared_key
  cache/KEY/tokenizer-S.json     tokenizer trained on that corpus, S = tokenizer settings
  cache/KEY/tokens-T-SPLIT.npy   token stream of a split, T = fingerprint of the tokenizer
Every file is written under a temporary name and renamed, so re-runs and racing processes
only ever see complete files. A warm cache skips TFDS entirely.
"""

import dataclasses
import functools
import json
import os
import time

import numpy as np

from gptjax import storage
from gptjax.data import sources, tokenizers
from gptjax.errors import UserError

SPLITS = ("train", "validation")


@dataclasses.dataclass
class PreparedData:
  tokenizer: tokenizers.Tokenizer
  tokens: dict[str, np.ndarray]  # split -> token stream (uint16 or int32, maybe memory-mapped)
  folder: str  # the cache folder of this corpus + settings


def data_dir(data) -> str:
  """This host's cache of prepared data. It stays on local disk, in a run whose corpus and
  workdir are in a bucket too: token streams are memory-mapped, and each host rebuilds the
  same cache from the same corpus (its key fingerprints the corpus's objects)."""
  if storage.is_url(data.data_dir):
    raise UserError(f"--config.data.data_dir={data.data_dir}: the prepared-data cache is "
                    "memory-mapped, so it must be a local folder (the default ~/.cache/gptjax "
                    "is); a corpus in a bucket goes in --config.data.path=gs://...")
  return os.path.expanduser(data.data_dir or "~/.cache/gptjax")


def _tokenizer_settings(tok) -> tuple:
  chat = ("chat",) if tok.get("chat_tokens") else ()
  if tok.kind == "char":
    return ("char",)
  if tok.kind == "sentencepiece":
    return ("sentencepiece", tok.vocab_size, tok.model_type, tok.byte_fallback, tok.max_sentences,
            *chat)
  raise UserError(f"--config.data.tokenizer.kind={tok.kind!r}: use sentencepiece or char")


def _train_tokenizer(tok, records) -> tokenizers.Tokenizer:
  """A new tokenizer. A sentencepiece one reserves the chat template's control tokens with
  data.tokenizer.chat_tokens (keeping its configured total size); a char one stays exactly
  the corpus's characters, as nanoGPT's (a chat task appends the tokens when it needs them)."""
  if tok.kind == "char":  # the whole corpus, as nanoGPT; "\n" too when it separates documents
    pieces = records["train"] + records["validation"]
    separator = ["\n"] if sum(start for _, start in pieces) > 1 else []
    return tokenizers.CharTokenizer.from_texts([text for text, _ in pieces] + separator)
  return sentencepiece_from_config(tok, (text for text, _ in records["train"]))


def sentencepiece_from_config(tok, texts) -> tokenizers.Tokenizer:
  """A sentencepiece tokenizer trained on `texts` with data.tokenizer's settings; with
  chat_tokens the control tokens take 4 of its vocab_size ids (the total stays as set)."""
  from gptjax.data.chat_template import CHAT_TOKENS, with_chat_tokens
  trained = tokenizers.train_sentencepiece(
      texts, vocab_size=tok.vocab_size - (len(CHAT_TOKENS) if tok.chat_tokens else 0),
      model_type=tok.model_type, byte_fallback=tok.byte_fallback, max_sentences=tok.max_sentences)
  return with_chat_tokens(trained) if tok.chat_tokens else trained


def _tokenizer(tok, folder: str, records) -> tokenizers.Tokenizer:
  """The configured file, else the one cached for these settings, else a newly trained one."""
  if tok.path:
    return tokenizers.load_tokenizer(tok.path)
  path = os.path.join(folder, f"tokenizer-{sources.fingerprint(*_tokenizer_settings(tok))}.json")
  if os.path.exists(path):
    return tokenizers.load_tokenizer(path)
  tokenizer = _train_tokenizer(tok, records())
  blob = json.dumps(tokenizer.to_json()).encode()
  storage.write_atomically(path, lambda f: f.write(blob))
  return tokenizer


def _tokens(tokenizer, path: str, pieces) -> np.ndarray:
  if not os.path.exists(path):
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32  # half the disk and RAM
    ids = tokenizers.encode_documents(tokenizer, pieces()).astype(dtype)
    storage.write_atomically(path, lambda f: np.save(f, ids))
  return np.load(path, mmap_mode="r")


def prepare_data(config, tokenizer: tokenizers.Tokenizer | None = None) -> PreparedData:
  """`tokenizer`: use this one (a resumed run's or a checkpoint's) instead of loading/training."""
  data = config.data
  root = data_dir(data)
  corpus = sources.corpus_from_config(data, root)
  folder = os.path.join(root, "cache", sources.prepared_key(corpus, data))
  os.makedirs(folder, exist_ok=True)

  @functools.cache
  def records():  # read (and if needed build) the stored splits only on a cache miss
    from gptjax.data import local_text  # pylint: disable=g-import-not-at-top  (slow: TFDS)

    builder = local_text.prepared_builder(corpus, data, root)
    return {split: local_text.read_split(builder, split) for split in SPLITS}

  tokenizer = tokenizer or _tokenizer(data.tokenizer, folder, records)
  key = sources.fingerprint(tokenizer.to_json())
  tokens = {
      split: _tokens(tokenizer, os.path.join(folder, f"tokens-{key}-{split}.npy"),
                     lambda split=split: records()[split])
      for split in SPLITS
  }
  return PreparedData(tokenizer, tokens, folder)


def _main(argv, config_flag) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  config = config_flag.value
  start = time.time()
  prepared = prepare_data(config)
  tok = prepared.tokenizer
  print(f"data: {config.data.path or config.data.tfds_name}")
  print(f"prepared in {prepared.folder} ({time.time() - start:.1f}s)")
  print(f"tokenizer: {tok.to_json()['kind']}, vocab_size {tok.vocab_size}")
  for split, ids in prepared.tokens.items():
    print(f"{split}: {len(ids):,} tokens")


def main() -> None:
  """gptjax-prepare --config=configs/NAME.py[:ARG] [--config.data.path=...]."""


  # Defined here, not at import: the trainer defines its own --config flag.
  from gptjax import config as config_module  # pylint: disable=g-import-not-at-top
  from gptjax.errors import define_config_flag, run_app, run_cli  # pylint: disable=g-import-not-at-top

  config_flag = define_config_flag(
      config_module.__file__, "config file, configs/NAME.py[:ARG] (default: embedded)")
  run_app(lambda argv: run_cli(lambda: _main(argv, config_flag)))


if __name__ == "__main__":
  main()
