"""Where raw documents come from: local text files, or a TFDS catalogue corpus.

A `Corpus` is cheap to build (no text is read): its `key` fingerprints the raw input so that
prepared data is rebuilt whenever a file, its size or its modification time changes.
"""

import dataclasses
import hashlib
import json
import os
from typing import Callable, Iterator

from gptjax import storage
from gptjax.errors import UserError

PATH_FLAG = "--config.data.path"
TFDS_FLAG = "--config.data.tfds_name"


@dataclasses.dataclass(frozen=True)
class Corpus:
  key: str  # fingerprint of the raw input
  setting: str  # the setting that chose it, as `--config.data.path=VALUE`, for messages
  documents: Callable[[], Iterator[str]]  # raw documents, in order, one per call a new pass


def fingerprint(*parts) -> str:
  """Short stable hash of JSON-able values (cache keys, TFDS config names)."""
  blob = json.dumps(parts, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def prepared_key(corpus: Corpus, data) -> str:
  """Names the prepared data: the raw corpus plus every setting that changes the stored text."""
  parts = [corpus.key, data.normalize, data.dedup, data.max_chars, data.eval_fraction]
  if data.get("counterfactual_swaps"):  # only when set: other runs keep their prepared data
    try:
      with open(data.counterfactual_swaps, "rb") as f:
        parts.append(("counterfactual", hashlib.sha256(f.read()).hexdigest()))
    except FileNotFoundError:
      raise UserError(f"data.counterfactual_swaps={data.counterfactual_swaps!r}: no such "
                      "file (a swap list, one word pair a line)") from None
  return fingerprint(*parts)


def corpus_from_config(data, data_dir: str) -> Corpus:
  if data.path:
    return local_corpus(data.path, data.file_pattern)
  if data.tfds_name:
    return catalogue_corpus(data.tfds_name, data.text_key, os.path.join(data_dir, "tfds"))
  raise UserError(f"no corpus configured: set {PATH_FLAG} (a text file or folder) or {TFDS_FLAG}")


def resolve_files(path: str, pattern: str) -> list[str]:
  """A file, the files under a folder matching `pattern` (** recursive), or a glob; sorted.
  Local, or in a bucket (gs://...; then every name returned is a URL)."""
  path = storage.absolute(path) if storage.is_url(path) else os.path.expanduser(path)
  if storage.is_file(path):
    return [path]
  if storage.is_dir(path):
    matches = storage.glob(storage.join(path, pattern))
    what = f"no files matching --config.data.file_pattern={pattern!r} in {PATH_FLAG}={path}"
  elif storage.has_magic(path):
    matches = storage.glob(path)
    what = f"no files match {PATH_FLAG}={path}"
  else:
    raise UserError(f"{PATH_FLAG}={path} does not exist (give a text file, a folder or a glob)")
  files = sorted(f for f in matches if storage.is_file(f))
  if not files:
    raise UserError(what)
  return files


def local_corpus(path: str, pattern: str) -> Corpus:
  files = resolve_files(path, pattern)
  stats = []
  for f in files:
    try:
      stats.append((storage.absolute(f), *storage.version(f)))
    except OSError as e:
      raise UserError(f"cannot read {f} from {PATH_FLAG}: {e.strerror or e}") from None
  return Corpus(fingerprint("files", stats), f"{PATH_FLAG}={path}", lambda: _read_files(files))


def _read_files(files: list[str]) -> Iterator[str]:
  for f in files:
    try:
      yield storage.read_text(f)
    except (OSError, UnicodeDecodeError) as e:
      why = (e.strerror or str(e)) if isinstance(e, OSError) else "not UTF-8 text"
      raise UserError(
          f"cannot read {f} ({why}): fix or exclude it via {PATH_FLAG} / --config.data.file_pattern"
      ) from None


def catalogue_corpus(name: str, text_key: str, tfds_dir: str) -> Corpus:
  """Every split of a TFDS catalogue corpus, in the catalogue's split order, as documents."""

  def documents() -> Iterator[str]:
    import tensorflow_datasets as tfds  # only this source needs it (and, once, the internet)

    try:
      builder = tfds.builder(name, data_dir=tfds_dir, file_format="array_record")
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False)
      )
    except Exception as e:  # offline, unknown name, missing optional deps: all user-fixable
      why = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise UserError(
          f"cannot load TFDS corpus {TFDS_FLAG}={name} ({why}); it needs the internet once, "
          f"or set {PATH_FLAG} to a local text file or folder"
      ) from None
    for split in builder.info.splits:
      for record in builder.as_data_source(split=split):
        if text_key not in record:
          raise UserError(
              f"{TFDS_FLAG}={name} has no feature --config.data.text_key={text_key!r} "
              f"(it has {sorted(record)})"
          )
        text = record[text_key]
        yield text.decode("utf-8") if isinstance(text, bytes) else text

  return Corpus(fingerprint("tfds", name, text_key), f"{TFDS_FLAG}={name}", documents)
