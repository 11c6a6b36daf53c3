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
  """name -> numpy array, from a folder's safetensors files (bfloat16 via ml_dtypes)."""

  def __init__(self, folder: str):
    self.folder = folder
    index = os.path.join(folder, INDEX)
    if os.path.exists(index):
      with open(index) as f:
        self.file_of = dict(json.load(f)["weight_map"])
    elif os.path.exists(os.path.join(folder, SINGLE)):
      with safe_open(os.path.join(folder, SINGLE), "numpy") as f:
        self.file_of = {name: SINGLE for name in f.keys()}
    else:
      found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
      hint = (" (it holds PyTorch .bin weights: save them as safetensors first, e.g. "
              "model.save_pretrained(dir, safe_serialization=True))"
              if any(n.endswith(".bin") for n in found) else "")
      raise UserError(f"--from_hf={folder} has neither {SINGLE} nor {INDEX}{hint}")

  def names(self) -> list[str]:
    return list(self.file_of)

  def get(self, name: str) -> np.ndarray:
    path = os.path.join(self.folder, self.file_of[name])
    if not os.path.exists(path):
      raise UserError(f"{INDEX} in {self.folder} names {self.file_of[name]}, which is missing")
    with safe_open(path, "numpy") as f:
      return f.get_tensor(name)


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
