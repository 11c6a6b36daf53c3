"""A Hugging Face checkpoint folder's safetensors, read and written one tensor at a time.

Reading: `model.safetensors`, or shards named by `model.safetensors.index.json`; each
tensor is read from its file only when asked for, and the file is unmapped again after it
(a mapping kept open would keep every page read so far resident), so a conversion never
holds the source checkpoint whole. Writing: tensors are added one by one
and a shard is written and dropped as soon as it reaches `max_shard_bytes`, with the index
Hugging Face writes when there is more than one shard.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from gptjax.errors import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class Reader:
  """name -> numpy array, from a folder's safetensors files (bfloat16 via ml_dtypes).

  Every file's header is read and checked when the folder is opened, so each tensor's shape
  is known (`shape`) before any data is read; a file that is not safetensors, or an index
  that names what is not there, is one UserError. Symlinks are followed wherever they point
  (a Hugging Face cache's snapshot folder is symlinks into its blobs folder)."""

  def __init__(self, folder: str):
    self.folder = folder
    index = os.path.join(folder, INDEX)
    if os.path.exists(index):
      self.file_of = _weight_map(index)
    elif os.path.exists(os.path.join(folder, SINGLE)):
      self.file_of = None
    else:
      found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
      hint = (" (it holds PyTorch .bin weights: save them as safetensors first, e.g. "
              "model.save_pretrained(dir, safe_serialization=True))"
              if any(n.endswith(".bin") for n in found) else "")
      raise UserError(f"--from_hf={folder} has neither {SINGLE} nor {INDEX}{hint}")
    files = sorted(set(self.file_of.values())) if self.file_of else [SINGLE]
    self._shapes = {file: read_shapes(os.path.join(folder, file)) for file in files}
    if self.file_of is None:
      self.file_of = {name: SINGLE for name in self._shapes[SINGLE]}
    for name, file in self.file_of.items():
      if name not in self._shapes[file]:
        raise UserError(f"{INDEX} in {folder} puts tensor {name} in {file}, but "
                        f"{file} lacks tensor {name}: download the checkpoint again")

  def names(self) -> list[str]:
    return list(self.file_of)

  def shape(self, name: str) -> tuple[int, ...]:
    """From the header: no data is read."""
    return self._shapes[self.file_of[name]][name]

  def get(self, name: str) -> np.ndarray:
    with safe_open(os.path.join(self.folder, self.file_of[name]), "numpy") as f:
      return f.get_tensor(name)


def _weight_map(index: str) -> dict[str, str]:
  """An index's tensor -> file map; each file a name beside the index."""
  if not os.path.isfile(index):
    raise UserError(f"{index} is not a regular file: download the checkpoint again")
  try:
    with open(index, "rb") as f:
      content = json.load(f)
  except ValueError as e:  # not JSON, or not UTF-8
    raise UserError(f"{index} is not valid JSON ({str(e)[:100]}): download the checkpoint "
                    "again") from None
  weight_map = content.get("weight_map") if isinstance(content, dict) else None
  if not isinstance(weight_map, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
    raise UserError(f"{index} has no weight_map of tensor names to file names: download the "
                    "checkpoint again")
  for file in set(weight_map.values()):
    if os.path.isabs(file) or ".." in file.replace("\\", "/").split("/"):
      raise UserError(f"{index} names {file}, a path outside {os.path.dirname(index)}: an "
                      "index names the files beside it")
    if not os.path.exists(os.path.join(os.path.dirname(index), file)):
      raise UserError(f"{INDEX} in {os.path.dirname(index)} names {file}, which is missing")
  return weight_map


_PICKLE_STARTS = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch.save's zip archive
_RESAVE = "download it again, or save the model with safe_serialization=True"


def read_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """Tensor name -> shape from a safetensors file's header. The 8-byte header length is
  checked against the file's size here, before the safetensors library reads (and would
  allocate) that many bytes; the library then checks the header itself (its JSON, and that
  every tensor's offsets match its shape and lie inside the file)."""
  if not os.path.isfile(path):  # a FIFO or a device would block or never end
    raise UserError(f"{path} is not a regular file: {_RESAVE}")
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    start = f.read(8)
  length = int.from_bytes(start, "little") if len(start) == 8 else None
  if length is None or length > size - 8:
    what = (f"header length {length:,} exceeds the file's {size:,} bytes" if length is not None
            else f"{size} bytes, too short for a header")
    if start.startswith(_PICKLE_STARTS):
      raise UserError(f"{path} holds a pickle (PyTorch's .bin format), not safetensors "
                      f"({what}): {_RESAVE}")
    raise UserError(f"{path} is not a readable safetensors file ({what}): {_RESAVE}")
  try:
    with safe_open(path, "numpy") as f:
      return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
  except Exception as e:  # noqa: BLE001: SafetensorError, whatever the header holds
    reason = str(e).removeprefix("Error while deserializing header: ").splitlines()
    raise UserError(f"{path} is not a readable safetensors file ({(reason or [''])[0][:200]}): "
                    f"{_RESAVE}") from None


class ShardedWriter:
  """Adds tensors in order; writes model-0000k-of-0000n.safetensors shards of at most
  `max_shard_bytes` (one tensor larger than that gets a shard of its own)."""

  def __init__(self, folder: str, max_shard_bytes: int):
    self.folder, self.max_shard_bytes = folder, max_shard_bytes
    self._pending: dict[str, np.ndarray] = {}
    self._pending_bytes = 0
    self._written: list[list[str]] = []  # tensor names per shard written so far
    self.total_bytes = 0
    os.makedirs(folder, exist_ok=True)

  def add(self, name: str, array: np.ndarray) -> None:
    if self._pending and self._pending_bytes + array.nbytes > self.max_shard_bytes:
      self._flush()
    self._pending[name] = np.ascontiguousarray(array)
    self._pending_bytes += array.nbytes
    self.total_bytes += array.nbytes

  def _flush(self) -> None:
    n = len(self._written)
    save_file(self._pending, os.path.join(self.folder, f".shard-{n}.safetensors"),
              metadata={"format": "pt"})
    self._written.append(list(self._pending))
    self._pending, self._pending_bytes = {}, 0

  def close(self) -> list[str]:
    """Writes the last shard, names the shards as Hugging Face does, returns the files."""
    if self._pending or not self._written:
      self._flush()
    count = len(self._written)
    names = ([SINGLE] if count == 1 else
             [f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)])
    for k, name in enumerate(names):
      os.replace(os.path.join(self.folder, f".shard-{k}.safetensors"),
                 os.path.join(self.folder, name))
    if count > 1:
      weight_map = {t: names[k] for k, tensors in enumerate(self._written) for t in tensors}
      with open(os.path.join(self.folder, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}, f,
                  indent=2)
    return names
