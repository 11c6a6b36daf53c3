"""Conversations -> rendered, packed, batched windows for chat fine-tuning (task.name=sft).

Conversations are read (gptjax.data.conversations), split into train and held-out by
conversation (seeded by data.split_seed), rendered in the tokenizer's chat format, and cut to
seq_len + 1 tokens. With data.packing several conversations share a window (first-fit
decreasing) and carry segment ids, so attention stays inside each conversation and
positions restart; without it each window holds one conversation and padding.

A batch: {"tokens": int32[B, T+1], "mask": float32[B, T] (1 where the target is a trained
token: assistant contents and their end-of-turn tokens), "segment_ids": int32[B, T] of the
inputs (packing only; 0 = padding)}. The train iterator reshuffles windows every epoch and
resumes from its position; the held-out iterator is the whole split, in order, once.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from gptjax.data import chat_template, conversations as convs, tokenizers
from gptjax.data.pipeline import Datasets, shuffled_batches
from gptjax.errors import UserError, warn


def encode(conversations: list, tokenizer, window: int) -> tuple[list, int]:
  """Rendered (ids, trained) pairs cut to `window` tokens, and how many were cut. A
  conversation whose cut leaves no trained token is dropped (counted as cut too)."""
  examples, cut = [], 0
  for conversation in conversations:
    ids, trained = chat_template.render(conversation, tokenizer)
    if len(ids) > window:
      cut += 1
      ids, trained = ids[:window], trained[:window]
      if not trained[1:].any():
        continue
    examples.append((ids, trained))
  return examples, cut


def pack(lengths: list[int], window: int) -> list[list[int]]:
  """First-fit decreasing: groups of example indices whose lengths fit one window each."""
  order = np.argsort(-np.asarray(lengths), kind="stable")
  room = np.zeros(len(lengths), np.int64)
  bins: list[list[int]] = []
  for i in order:
    fits = np.flatnonzero(room[:len(bins)] >= lengths[i])
    if fits.size:
      bins[fits[0]].append(int(i))
      room[fits[0]] -= lengths[i]
    else:
      room[len(bins)] = window - lengths[i]
      bins.append([int(i)])
  return bins


def windows(examples: list, window: int, packing: bool) -> dict[str, np.ndarray]:
  """Rows of `window` tokens: tokens, trained (bool) and segment ids (1, 2, ...; 0 = pad)."""
  groups = pack([len(ids) for ids, _ in examples], window) if packing else [
      [i] for i in range(len(examples))]
  tokens = np.zeros((len(groups), window), np.int32)
  trained = np.zeros((len(groups), window), bool)
  segments = np.zeros((len(groups), window), np.int32)
  for row, group in enumerate(groups):
    at = 0
    for segment, i in enumerate(group, start=1):
      ids, learn = examples[i]
      tokens[row, at:at + len(ids)] = ids
      trained[row, at:at + len(ids)] = learn
      segments[row, at:at + len(ids)] = segment
      at += len(ids)
  return {"tokens": tokens, "trained": trained, "segments": segments}


class _Rows:
  """Batch function: window indices -> a batch (see the module docstring)."""

  def __init__(self, rows: dict[str, np.ndarray], packing: bool):
    self.rows, self.packing = rows, packing

  def __call__(self, index) -> dict:
    index = np.asarray(index)
    tokens, trained, seg = (self.rows[k][index] for k in ("tokens", "trained", "segments"))
    # A target counts when it is trained and in the same conversation as its input.
    mask = trained[:, 1:] & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    batch = {"tokens": tokens, "mask": mask.astype(np.float32)}
    if self.packing:
      batch["segment_ids"] = seg[:, :-1]
    return batch


def eval_iterator(rows: dict, batch_size: int, packing: bool, process_index: int,
                  process_count: int) -> Iterator[dict]:
  """Every held-out window once, in order; rows past the end are padding (mask 0)."""
  gather = _Rows(rows, packing)
  n = len(rows["tokens"])
  for first in range(0, n, batch_size):
    index = np.arange(first, first + batch_size)[process_index::process_count]
    batch = gather(np.minimum(index, n - 1))
    batch["mask"] *= (index < n)[:, None]
    yield batch


def chat_tokenizer(config, conversations: list):
  """data.tokenizer.path if set, else one trained on the training conversations' text."""
  tok = config.data.tokenizer
  if tok.path:
    return tokenizers.load_tokenizer(tok.path)
  texts = [m["content"] for c in conversations for m in c]
  if tok.kind == "char":
    return tokenizers.CharTokenizer.from_texts(texts)
  from gptjax.data.prepare import sentencepiece_from_config
  return sentencepiece_from_config(tok, texts)


def make_chat_datasets(config, process_index: int | None = None,
                       process_count: int | None = None, tokenizer=None) -> Datasets:
  """Chat data for `config`; `tokenizer` (a checkpoint's) gets the chat tokens it lacks."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index, process_count = jax.process_index(), jax.process_count()
  data, window = config.data, config.data.seq_len + 1
  if not data.path:
    raise UserError("task.name=sft reads conversations from --config.data.path (alpaca JSON, "
                    "HH JSONL or OpenAI-messages JSONL)")
  read = lambda path: convs.read_conversations(path, data.format, data.skip_bad_records,
                                               data.file_pattern, data.languages)
  train = read(data.path)
  if train.skipped:
    warn(f"skipped {train.skipped} malformed records of {data.path} "
         "(--config.data.skip_bad_records=True)")
  if data.eval_path:  # a held-out set of its own (a benchmark's validation split)
    train, heldout = train.conversations, read(data.eval_path).conversations
  else:
    train, heldout = convs.split_heldout(train.conversations, data.eval_fraction,
                                         data.split_seed)
  tokenizer = chat_template.with_chat_tokens(tokenizer or chat_tokenizer(config, train))
  splits = {}
  for name, part in (("train", train), ("validation", heldout)):
    examples, cut = encode(part, tokenizer, window)
    if cut:
      warn(f"{cut} of {len(part)} {name} conversations are longer than data.seq_len+1="
           f"{window} tokens and were cut (raise --config.data.seq_len to keep them whole)")
    if not examples:
      raise UserError(f"no {name} conversation has a trained token within data.seq_len="
                      f"{data.seq_len}: raise it")
    splits[name] = windows(examples, window, data.packing)
  rows = splits["train"]
  if len(rows["tokens"]) < config.train.batch_size:
    warn(f"{len(rows['tokens'])} train windows, fewer than train.batch_size="
         f"{config.train.batch_size}: every batch repeats some")
  train_it = shuffled_batches(
      len(rows["tokens"]), _Rows(rows, data.packing),
      batch_size=config.train.batch_size // process_count, seed=config.seed,
      process_index=process_index, process_count=process_count, worker_count=data.worker_count)
  evaluation = functools.partial(eval_iterator, splits["validation"], data.eval_batch_size,
                                 data.packing, process_index, process_count)
  count = lambda r: int((r["segments"] > 0).sum())
  return Datasets(tokenizer, train_it, {"validation": evaluation}, count(rows),
                  count(splits["validation"]))
