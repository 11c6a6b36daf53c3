"""Token streams -> batches: packed windows, grain-shuffled train iterator, whole-split eval.

A window is seq_len + 1 consecutive tokens starting at a multiple of seq_len (plus a per-epoch
offset with data.random_offset), so every token of the stream is a target exactly once per
epoch. The train order is a pure function of (seed, step): the iterator's state is just a
position, and every process reads its own slice of each global batch.
"""

import atexit
import dataclasses
import functools
from typing import Callable, Iterator

import numpy as np

from gptjax.data.prepare import prepare_data
from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError


@dataclasses.dataclass
class Datasets:
  tokenizer: Tokenizer
  train: Iterator[dict]  # infinite; get_state() -> JSON-able dict, set_state(state) resumes
  eval_splits: dict[str, Callable[[], Iterator[dict]]]  # name -> fresh pass over the split
  train_tokens: int
  eval_tokens: int


def num_windows(num_tokens: int, seq_len: int, random_offset: bool) -> int:
  """Windows per epoch; with random_offset the grid may shift by up to seq_len - 1."""
  return max(0, num_tokens - 1 - (seq_len - 1 if random_offset else 0)) // seq_len


@functools.lru_cache(maxsize=4)
def _epoch_offset(seed: int, epoch: int, seq_len: int) -> int:
  return int(np.random.default_rng([seed, epoch]).integers(seq_len))


class _WindowStart:
  """(global index, window number) -> first token of that window in its epoch."""

  def __init__(self, seq_len: int, windows: int, offset_seed: int | None):
    self.seq_len, self.windows, self.offset_seed = seq_len, windows, offset_seed

  def __call__(self, index: int, window: int) -> int:
    start = window * self.seq_len
    if self.offset_seed is not None:
      start += _epoch_offset(self.offset_seed, index // self.windows, self.seq_len)
    return start


class _Gather:
  """Batch function: window starts -> {"tokens": int32[B, seq_len + 1]} in one numpy gather
  (plus "segment_ids" int32[B, seq_len] of the inputs with document masking)."""

  def __init__(self, tokens: np.ndarray, seq_len: int, eos_id: int | None = None):
    self.tokens, self.span, self.eos_id = tokens, np.arange(seq_len + 1), eos_id

  def __call__(self, starts) -> dict:
    batch = {"tokens": np.asarray(self.tokens[np.asarray(starts)[:, None] + self.span], np.int32)}
    if self.eos_id is not None:
      batch["segment_ids"] = document_segments(batch["tokens"][:, :-1], self.eos_id)
    return batch


def train_iterator(tokens: np.ndarray, *, seq_len: int, batch_size: int, seed: int,
                   random_offset: bool, process_index: int, process_count: int,
                   worker_count: int, eos_id: int | None = None):
  """Infinite grain iterator of this process's `batch_size` rows of each global batch;
  with `eos_id` (data.document_mask) each row also carries its documents' segment ids."""
  windows = num_windows(len(tokens), seq_len, random_offset)
  return shuffled_batches(
      windows, _Gather(tokens, seq_len, eos_id), batch_size=batch_size, seed=seed,
      process_index=process_index, process_count=process_count, worker_count=worker_count,
      index_fn=_WindowStart(seq_len, windows, seed if random_offset else None))


def shuffled_batches(num_items: int, batch_fn, *, batch_size: int, seed: int,
                     process_index: int, process_count: int, worker_count: int,
                     index_fn=None):
  """Items 0..num_items-1 reshuffled every epoch (a pure function of seed and position, so
  the iterator's state is a position), this process's `batch_size` of each global batch,
  handed to `batch_fn` (optionally through `index_fn(global index, item)` first)."""
  import grain  # pylint: disable=g-import-not-at-top  (slow import; only training needs it)

  # Hashing the seed keeps seeds s and s+1 apart: grain reshuffles epoch e with seed + e.
  shuffle_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
  ds = grain.MapDataset.range(num_items).shuffle(seed=shuffle_seed).repeat()
  if index_fn is not None:
    ds = ds.map_with_index(index_fn)
  ds = ds[process_index::process_count]
  ds = ds.batch(batch_size, drop_remainder=True, batch_fn=batch_fn)
  # In-memory data: reader threads would only fight over the GIL (measured slower).
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if worker_count:
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():  # grain workers read absl flags; defaults outside a CLI
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  iterator = iter(iter_ds)
  if worker_count:  # stop workers and free their shared memory before interpreter teardown
    atexit.register(iterator.close)
  return iterator


def document_segments(inputs_BT: np.ndarray, eos_id: int) -> np.ndarray:
  """Segment ids of packed documents: each end-of-document token starts a new segment (it
  is the next document's first input), so no position attends across a document start."""
  return np.cumsum(inputs_BT == eos_id, axis=1, dtype=np.int32)


def eval_iterator(tokens: np.ndarray, *, seq_len: int, batch_size: int, process_index: int,
                  process_count: int, eos_id: int | None = None) -> Iterator[dict]:
  """The whole split in order: this process's rows of each global batch of `batch_size`.

  Windows start at multiples of seq_len; rows past the end are padding. "mask" is 1 exactly
  where the target token exists, so each target of the split counts once across processes.
  """
  n = len(tokens)
  windows = -(-(n - 1) // seq_len)
  span = np.arange(seq_len + 1)
  for first in range(0, windows, batch_size):
    rows = np.arange(first, first + batch_size)[process_index::process_count]
    pos = rows[:, None] * seq_len + span
    valid = pos < n
    ids = np.where(valid, np.asarray(tokens[np.minimum(pos, n - 1)]), 0).astype(np.int32)
    batch = {"tokens": ids, "mask": valid[:, 1:].astype(np.float32)}
    if eos_id is not None:
      batch["segment_ids"] = document_segments(ids[:, :-1], eos_id)
    yield batch


def _per_process(global_size: int, process_count: int, flag: str) -> int:
  if global_size <= 0 or global_size % process_count:
    raise UserError(f"{flag}={global_size} must be a positive multiple of the "
                    f"{process_count} processes")
  return global_size // process_count


def make_lm_datasets(config, process_index: int | None = None,
                     process_count: int | None = None, tokenizer=None) -> Datasets:
  """Next-token data for `config`: prepares (or reuses) the corpus, tokenizer and tokens."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index, process_count = jax.process_index(), jax.process_count()
  data = config.data
  seq_len = data.seq_len
  if seq_len < 1:
    raise UserError(f"--config.data.seq_len={seq_len} must be positive")
  batch_size = _per_process(config.train.batch_size, process_count, "--config.train.batch_size")
  _per_process(data.eval_batch_size, process_count, "--config.data.eval_batch_size")

  prepared = prepare_data(config, tokenizer)
  train, validation = prepared.tokens["train"], prepared.tokens["validation"]
  eos_id = None
  if data.document_mask:
    eos_id = prepared.tokenizer.eos_id
    if eos_id is None:
      raise UserError("--config.data.document_mask=True needs a tokenizer with an "
                      "end-of-document token: use --config.data.tokenizer.kind=sentencepiece")
  if num_windows(len(train), seq_len, data.random_offset) < 1:
    raise UserError(f"the train split has only {len(train)} tokens, too few for one window of "
                    f"--config.data.seq_len={seq_len} (+1; twice that with random_offset)")
  train_it = train_iterator(
      train, seq_len=seq_len, batch_size=batch_size, seed=config.seed,
      random_offset=data.random_offset, process_index=process_index,
      process_count=process_count, worker_count=data.worker_count, eos_id=eos_id)
  eval_splits = {}
  if len(validation) > 1:  # at least one target
    eval_splits["validation"] = functools.partial(
        eval_iterator, validation, seq_len=seq_len, batch_size=data.eval_batch_size,
        process_index=process_index, process_count=process_count, eos_id=eos_id)
  return Datasets(prepared.tokenizer, train_it, eval_splits, len(train), len(validation))
