"""Metrics out: DIR/metrics.jsonl (one JSON object a line, each with "step") and TensorBoard.

DIR may be a bucket (gs://...): see MetricsWriter. Also the model-FLOPs arithmetic for
throughput and MFU.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax

from gptjax import chips, storage


def peak_flops_per_device(device=None) -> float | None:
  """Peak dense bf16 FLOP/s of a device, from gptjax.chips (None for CPUs and unknown chips)."""
  chip = chips.chip_for_device_kind((device or jax.devices()[0]).device_kind)
  return chip.peak_flops if chip else None


def flops_per_token(num_params: int, num_layers: int, seq_len: int, embed_dim: int,
                    causal: bool = False) -> float:
  """Training FLOPs per token, PaLM appendix B: 6N + 12*L*T*d (attention scores and values).

  `causal=True` halves the attention term (only the lower triangle is needed). N counts the
  parameters used in matrix multiplies (the output head included, lookup tables not).
  """
  attention = 12 * num_layers * seq_len * embed_dim
  return 6 * num_params + (attention / 2 if causal else attention)


def model_flops_per_token(params, model_cfg, seq_len: int, causal: bool = False) -> float:
  """flops_per_token for a GPT's params: lookup tables (positions, untied input embedding)
  do no matrix multiply, so they are left out of N."""
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  lookups = (params["wpe"].size if "wpe" in params else 0) + (
      0 if model_cfg.tie_embeddings else params["wte"].size)
  return flops_per_token(n - lookups, model_cfg.num_layers, seq_len, model_cfg.embed_dim, causal)


class MetricsWriter:
  """Writes from process 0 only; `truncate_after(step)` drops rows a resumed run will redo.

  Locally each row is appended as it comes. In a bucket, where an object is rewritten whole
  and takes about one update a second, rows are uploaded at most every `upload_secs`, and at
  every `flush()`: the trainer flushes before each checkpoint, so a run resumed from any
  checkpoint finds every row up to it. TensorBoard's events go the same way: written to a
  local folder, uploaded with the rows (each run session writes an event file of its own).
  """

  def __init__(self, workdir: str, upload_secs: float = 30.0):
    self.enabled = jax.process_index() == 0
    self.path = storage.join(workdir, "metrics.jsonl")
    self.remote = storage.is_url(workdir)
    self.upload_secs = upload_secs
    self._lines: list[str] = []  # in a bucket: the whole file, as it will be uploaded
    self._unsent, self._sent_at = False, time.monotonic()
    self._tb = None
    if self.enabled:
      storage.makedirs(workdir)
      if self.remote and storage.exists(self.path):
        self._lines = read_lines(self.path)
      from tensorboardX import SummaryWriter  # imported late: only process 0 writes
      self._tb_dir = storage.join(workdir, "tensorboard")
      if self.remote:
        import tempfile
        self._tb_local = tempfile.mkdtemp(prefix="gptjax-tensorboard-")
      self._tb = SummaryWriter(self._tb_local if self.remote else self._tb_dir)

  def truncate_after(self, step: int) -> None:
    if not (self.enabled and storage.exists(self.path)):
      return
    kept = [line for line in read_lines(self.path) if json.loads(line)["step"] <= step]
    storage.write_text(self.path, "".join(kept))
    self._lines = kept if self.remote else []

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _to_python(v) for k, v in metrics.items()})
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    line = json.dumps(row) + "\n"
    if self.remote:
      self._lines.append(line)
      self._unsent = True
      if time.monotonic() - self._sent_at >= self.upload_secs:
        self.flush()
    else:
      storage.append_text(self.path, line)

  def flush(self) -> None:
    """Everything written so far is in DIR (a no-op locally, where each row already is)."""
    if self.enabled and self.remote:
      if self._unsent:
        storage.write_text(self.path, "".join(self._lines))
        self._tb.flush()
        storage.upload_tree(self._tb_local, self._tb_dir)
        self._unsent, self._sent_at = False, time.monotonic()

  def close(self) -> None:
    if self._tb is not None:
      try:
        self.flush()
        self._tb.close()
        if self.remote:  # uploaded: the local copy of the events is not needed any more
          import shutil
          shutil.rmtree(self._tb_local, ignore_errors=True)
      except OSError as e:  # metrics.jsonl is written row by row; only TensorBoard's tail is lost
        from gptjax.errors import warn
        warn(f"TensorBoard events in {os.path.dirname(self.path)} not flushed: {e}")
        _abandon(self._tb)
      self._tb = None


def _abandon(summary_writer) -> None:
  """Shut a tensorboardX writer whose final flush failed (disk full): its worker thread and
  its atexit hook would otherwise retry the flush and print tracebacks after the run's error."""
  for file_writer in (summary_writer.all_writers or {}).values():
    events = file_writer.event_writer
    if getattr(events, "_closed", True):
      continue
    events._closed = True  # pylint: disable=protected-access  (atexit's close() is now a no-op)
    try:
      events._worker.stop()  # pylint: disable=protected-access
      events._ev_writer.close()  # pylint: disable=protected-access
    except OSError:
      pass


def read_lines(path: str) -> list[str]:
  return [line for line in storage.read_text(path).splitlines(keepends=True) if line.strip()]


def read_metrics(workdir: str) -> list[dict]:
  return [json.loads(line) for line in read_lines(storage.join(workdir, "metrics.jsonl"))]


def last_eval(workdir: str) -> dict:
  """The newest eval row of a run (without its step), or {} if it has none yet."""
  path = storage.join(workdir, "metrics.jsonl")
  rows = [r for r in read_metrics(workdir) if "eval/loss" in r] if storage.exists(path) else []
  return {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}


def _to_python(v):
  if hasattr(v, "item"):
    v = v.item()
  return float(v) if isinstance(v, float) else v
