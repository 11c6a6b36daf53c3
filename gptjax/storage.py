"""Paths that are local files or objects in cloud storage (gs://bucket/...), behind one API.

A TPU VM's disk goes with the VM, so a run's folder (--workdir) and its corpus live in a
bucket. Orbax reads and writes checkpoints there itself (tensorstore); everything else a run
reads or writes (metrics.jsonl, TensorBoard, init.json, plots, eval results, the corpus, a
tokenizer file) goes through here. A URL goes through fsspec (gcsfs for gs://); a local path
goes through os as before, so local runs behave exactly as they did.

Object stores differ from a disk in two ways that shape the callers: an object is written
whole (it appears complete or not at all, so no temporary name is needed) and cannot be
appended to, and one object takes about one update a second. Appending is therefore
read + rewrite, and a caller that appends often (MetricsWriter) batches its rows.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid

from gptjax.errors import UserError


def is_url(path: str) -> bool:
  """gs://bucket/a, s3://..., memory://...: anything fsspec names by a protocol."""
  return "://" in str(path)


def absolute(path: str) -> str:
  """A URL as given (no trailing slash); a local path made absolute (~ expanded)."""
  path = str(path)
  return path.rstrip("/") if is_url(path) else os.path.abspath(os.path.expanduser(path))


def join(path: str, *parts: str) -> str:
  return posixpath.join(str(path), *parts) if is_url(path) else os.path.join(path, *parts)


def _fs(url: str):
  """(fsspec filesystem, path within it) of a URL; a missing backend is one line."""
  import fsspec
  scheme = url.split("://", 1)[0]
  try:
    return fsspec.core.url_to_fs(url)
  except ImportError as e:
    extra = " (pip install 'gptjax[gcs]')" if scheme in ("gs", "gcs") else ""
    raise UserError(f"{url}: reading and writing {scheme}:// paths needs a package that is not "
                    f"installed ({e}){extra}, or use a local path") from None
  except ValueError as e:  # fsspec: "Protocol not known"
    raise UserError(f"{url}: {scheme}:// is not a storage fsspec knows ({e}): use gs://, "
                    "another fsspec protocol, or a local path") from None


def _ask(path: str, local, method: str):
  """A question about a path: os.path's `local` for a file, fsspec's `method` for a URL."""
  if not is_url(path):
    return local(os.path.expanduser(path))
  fs, p = _fs(path)
  return getattr(fs, method)(p)


def exists(path: str) -> bool:
  return _ask(path, os.path.exists, "exists")


def is_dir(path: str) -> bool:
  return _ask(path, os.path.isdir, "isdir")


def is_file(path: str) -> bool:
  return _ask(path, os.path.isfile, "isfile")


_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def read_regular_text(path: str, max_bytes: int | None = None) -> str:
  """A local file's UTF-8 text, for files that came from elsewhere (a downloaded checkpoint):
  a FIFO or a device would block or never end, and a huge file is not what it claims to be."""
  fix = "download the checkpoint again"
  if not os.path.isfile(path):
    raise UserError(f"{path} is not a regular file: {fix}")
  size = os.path.getsize(path)
  if max_bytes is not None and size > max_bytes:
    raise UserError(f"{path} is {size:,} bytes, more than such a file holds: {fix}")
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except UnicodeDecodeError:
    raise UserError(f"{path} is not UTF-8 text: {fix}") from None


def read_json_object(path: str, max_bytes: int | None = None, holds: str = "") -> dict:
  """A downloaded JSON file that must hold an object (`holds`: what, for the message)."""
  try:
    content = json.loads(read_regular_text(path, max_bytes))
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                    "fix it or download the checkpoint again") from None
  except RecursionError:
    raise UserError(f"{path} is not valid JSON (nested too deeply): download the checkpoint "
                    "again") from None
  if not isinstance(content, dict):
    raise UserError(f"{path} holds a JSON {_JSON_TYPES.get(type(content), 'value')}, not an "
                    f"object{' of ' + holds if holds else ''}: download the checkpoint again")
  return content


def remove(path: str) -> None:
  """Delete one file or object."""
  _ask(path, os.remove, "rm_file")


def makedirs(path: str) -> None:
  """A folder (a no-op in a bucket, where folders are name prefixes)."""
  if not is_url(path):
    os.makedirs(os.path.expanduser(path), exist_ok=True)
    return
  fs, p = _fs(path)
  fs.makedirs(p, exist_ok=True)


def open_file(path: str, mode: str = "r", **kwargs):
  """A file object: builtins.open locally, fsspec's for a URL (modes r, rb, w, wb)."""
  if not is_url(path):
    return open(os.path.expanduser(path), mode, **kwargs)  # pylint: disable=unspecified-encoding
  fs, p = _fs(path)
  return fs.open(p, mode, **kwargs)


def open_text(path: str, encoding: str = "utf-8"):
  """A text file to read, decompressed when its name ends in .gz."""
  gz = str(path).endswith(".gz")
  if not is_url(path):
    import gzip
    return (gzip.open if gz else open)(os.path.expanduser(path), "rt", encoding=encoding)
  fs, p = _fs(path)
  return fs.open(p, "rt", encoding=encoding, compression="gzip" if gz else None)


def read_text(path: str) -> str:
  with open_file(path, "r", encoding="utf-8") as f:
    return f.read()


def read_bytes(path: str) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def write_text(path: str, text: str) -> None:
  """Replace a file whole, so a reader sees the old or the new one, never a part. Locally a
  temporary name and a rename; an object is atomic by itself."""
  if is_url(path):
    with open_file(path, "w", encoding="utf-8") as f:
      f.write(text)
    return
  write_atomically(os.path.expanduser(path), lambda f: f.write(text.encode("utf-8")))


def write_atomically(path: str, write) -> None:
  """A local file written by `write(binary file)` under a temporary name, then renamed:
  re-runs and racing processes only ever see complete files."""
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    with open(tmp, "wb") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def append_text(path: str, text: str) -> None:
  """Append locally; rewrite an object (objects have no append), which callers do rarely."""
  if not is_url(path):
    with open(os.path.expanduser(path), "a", encoding="utf-8") as f:
      f.write(text)
    return
  write_text(path, (read_text(path) if exists(path) else "") + text)


def glob(pattern: str) -> list[str]:
  """Paths matching a pattern (`**` recursive), as URLs for a URL pattern; sorted."""
  if not is_url(pattern):
    import glob as glob_lib
    return sorted(glob_lib.glob(os.path.expanduser(pattern), recursive=True))
  fs, p = _fs(pattern)
  return sorted(fs.unstrip_protocol(m) for m in fs.glob(p))


def has_magic(pattern: str) -> bool:
  return any(c in str(pattern) for c in "*?[")


def version(path: str) -> tuple:
  """What changes when a file's contents do: (size, mtime) locally, (size, generation or
  update time) for an object. Keys caches of prepared data."""
  if not is_url(path):
    st = os.stat(os.path.expanduser(path))
    return st.st_size, st.st_mtime_ns
  fs, p = _fs(path)
  info = fs.info(p)
  return info.get("size"), str(info.get("generation") or info.get("mtime") or info.get("ETag"))


def upload_tree(local_dir: str, url: str) -> None:
  """Copy a local folder's files under a URL (a profile trace written on this host's disk)."""
  fs, p = _fs(url)
  fs.put(local_dir.rstrip("/") + "/", p, recursive=True)
