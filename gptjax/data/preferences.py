"""Preference pairs for a reward model and DPO (task.name=reward, dpo): a prompt, and two
replies to it of which the first was preferred.

A record (JSON list or JSON lines, `.gz` too) is one pair; its keys tell its format:
  {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}   Anthropic HH-RLHF:
                                      two whole dialogues that share their prompt
  {"chosen": [messages], "rejected": [messages]}   TRL's implicit-prompt conversational format
  {"prompt": "text" | [messages], "chosen": R, "rejected": R}   TRL's standard and
                                      conversational formats (text is one user message)
  {"messages": [messages], "chosen": R, "rejected": R}   messages are the prompt
where a reply R is text, one assistant message, or a list of one assistant message. The
prompt must be a valid conversation (conversations.validate) ending with a user message; a
malformed record is one `file:line:` error (skipped and counted with skip_bad_records).
chosen == rejected is legal and kept (such a pair only adds a constant to the losses).

Two whole dialogues: the prompt is their shared messages up to the last user message before
they differ, and each reply is the rest of its dialogue. That rest is usually one final
assistant turn. In 5 of harmless-base-test's 2,312 pairs (lines 1255, 1689, 1951, 1953,
2037) one side runs on past the other's end: its reply wrote further "Human:"/"Assistant:"
turns itself. That text is what the labeller compared, so the reply keeps it, as written
(TRL's HH script keeps it too); dropping the pair would lose a real preference. Message
lists have no such text: the rest must be one assistant message on each side.

Each side renders with the tokenizer's chat format as `render_prompt(prompt)` (ending with
the generation prompt) + the reply's tokens + its end-of-turn token(s) (`reply_ids`):
exactly the trained tokens of `render(prompt + [assistant reply])` and all before them. A
pair is kept only if both sides fit in seq_len tokens, so the inputs hold every token and a
reward head can read the hidden state of the final end-of-turn token; longer pairs are
dropped and counted.

A batch of B pairs (T = data.seq_len):
  "chosen", "rejected":           int32[B, T+1]  a side's tokens, zero padded after its end
  "chosen_mask", "rejected_mask": float32[B, T]  over the targets tokens[:, 1:]: 1 where the
                                  target is a reply token (its content or its end-of-turn
                                  token), so each row sums to the reply's length
  "index":                        int32[B]  the pair's row in its split (0..N-1 over the
                                  pairs kept), -1 on held-out padding rows
The last 1 of a mask is at target t = L - 2 for a side of L tokens: the final end-of-turn
token is input L - 1. The train iterator reshuffles pairs every epoch and resumes from its
position (get_state / set_state); the held-out iterator is the whole split, in order, once:
its padding rows repeat the last pair with both masks all zero.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import numpy as np

from gptjax.data import chat_template, conversations as convs
from gptjax.data.chat_data import chat_tokenizer
from gptjax.data.pipeline import Datasets, _per_process, shuffled_batches
from gptjax.errors import UserError, warn

SIDES = ("chosen", "rejected")


@dataclasses.dataclass
class Pair:
  prompt: list[dict]  # the conversation so far, ending with a user message
  chosen: str  # the preferred reply
  rejected: str


@dataclasses.dataclass
class Preferences:
  pairs: list[Pair]  # in file order, files in sorted order
  skipped: int  # malformed records skipped (only with skip_bad)


def read_preferences(path: str, skip_bad: bool = False, file_pattern: str = "*") -> Preferences:
  """Every preference pair in the file, folder or glob `path`, validated, in order."""
  items, skipped = convs.read_records(path, file_pattern, skip_bad, parse_pair,
                                      "preference pairs")
  return Preferences([pair for pair, _ in items], skipped)


def parse_pair(record) -> Pair:
  """The pair a record holds, in any of the module's formats; ValueError saying what is wrong."""
  if not isinstance(record, dict):
    raise ValueError("a preference record must be a JSON object")
  missing = [k for k in SIDES if k not in record]
  if missing:
    raise ValueError(f"no {' or '.join(map(repr, missing))}: a pair needs 'chosen' and "
                     "'rejected' (with 'prompt' or 'messages' unless they are whole dialogues)")
  chosen, rejected = record["chosen"], record["rejected"]
  key = "prompt" if "prompt" in record else "messages" if "messages" in record else None
  if key:
    prompt = record[key]
    if key == "prompt" and isinstance(prompt, str):
      prompt = [{"role": "user", "content": prompt}]
    return Pair(_checked_prompt(_message_list(prompt, key)), _reply(chosen, "chosen"),
                _reply(rejected, "rejected"))
  if isinstance(chosen, str) and isinstance(rejected, str):
    return _hh_pair(chosen, rejected)
  if isinstance(chosen, list) and isinstance(rejected, list):
    return _conversation_pair(chosen, rejected)
  raise ValueError("without 'prompt' or 'messages', 'chosen' and 'rejected' must both be HH "
                   "dialogue text or both lists of messages")


def _message_list(value, key: str) -> list[dict]:
  if not isinstance(value, list):
    raise ValueError(f"{key!r} must be a list of messages")
  return [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
          for m in value]  # extra keys dropped; validate() reports a non-object


def _checked_prompt(prompt: list) -> list[dict]:
  if not prompt:
    raise ValueError("the prompt has no messages")
  convs.validate(prompt + [{"role": "assistant", "content": ""}])  # roles, contents, system
  if prompt[-1]["role"] != "user":
    raise ValueError("the prompt's last message must be a user message")
  return prompt


def _reply(value, key: str) -> str:
  if isinstance(value, list) and len(value) == 1:
    value = value[0]
  if isinstance(value, dict) and value.get("role") == "assistant":
    value = value.get("content")
  if not isinstance(value, str):
    raise ValueError(f"{key!r} must be text, or one assistant message with text content")
  return value


def _shared_prompt(chosen: list[dict], rejected: list[dict]) -> int:
  """How many leading messages two whole dialogues share as their prompt: those before they
  differ (each side keeps at least its last message), back to the last user message."""
  for side, dialogue in zip(SIDES, (chosen, rejected)):
    try:
      convs.validate(dialogue)
    except ValueError as e:
      raise ValueError(f"the {side} dialogue: {e}") from None
    if dialogue[-1]["role"] != "assistant":
      raise ValueError(f"the {side} dialogue does not end with an assistant reply")
  n = 0
  while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
    n += 1
  while n and chosen[n - 1]["role"] != "user":
    n -= 1
  if not n:
    raise ValueError("the dialogues share no user message before their replies")
  if chosen[n]["role"] != "assistant" or rejected[n]["role"] != "assistant":
    raise ValueError(f"after the shared prompt (message {n}) a reply starts with a user turn")
  return n


def _hh_pair(chosen: str, rejected: str) -> Pair:
  dialogues = [convs.parse_hh_dialogue(text) for text in (chosen, rejected)]
  n = _shared_prompt(*dialogues)

  def rest(text: str) -> str:  # the dialogue from turn n on, as written (parse's markers)
    text = "\n\n" + text.lstrip()
    marks = list(convs._HH_MARKER.finditer(text))  # pylint: disable=protected-access
    return text[marks[n].end():].strip()

  return Pair(_checked_prompt(dialogues[0][:n]), rest(chosen), rest(rejected))


def _conversation_pair(chosen: list, rejected: list) -> Pair:
  dialogues = [_message_list(d, side) for side, d in zip(SIDES, (chosen, rejected))]
  n = _shared_prompt(*dialogues)
  if len(dialogues[0]) != n + 1 or len(dialogues[1]) != n + 1:
    raise ValueError("the two conversations differ before their final assistant messages")
  return Pair(_checked_prompt(dialogues[0][:n]), dialogues[0][n]["content"],
              dialogues[1][n]["content"])


def conversations_of(pairs: list[Pair]) -> list[list[dict]]:
  """Each pair as one conversation holding every text once (for training a tokenizer)."""
  return [p.prompt + [{"role": "assistant", "content": p.chosen},
                      {"role": "assistant", "content": p.rejected}] for p in pairs]


# ---------------------------------------------------------------------------------------------
# Tokens


def encode_pairs(pairs: list[Pair], tokenizer, seq_len: int) -> tuple[dict[str, np.ndarray], int]:
  """(rows, dropped): rows hold the pairs whose both sides fit in `seq_len` tokens, keyed as
  a batch (module docstring) with "index" = 0..N-1; dropped counts the others."""
  kept = []  # per kept pair: (prompt ids, chosen reply ids, rejected reply ids)
  for pair in pairs:
    prompt_ids = chat_template.render_prompt(pair.prompt, tokenizer)
    replies = chat_template.reply_ids(tokenizer, [pair.chosen, pair.rejected])
    if len(prompt_ids) + max(map(len, replies)) <= seq_len:
      kept.append((prompt_ids, *replies))
  n = len(kept)
  rows = {}
  for s, side in enumerate(SIDES, start=1):
    tokens_NT = np.zeros((n, seq_len + 1), np.int32)
    mask_NT = np.zeros((n, seq_len), np.float32)
    for i, (prompt_ids, *replies) in enumerate(kept):
      P, R = len(prompt_ids), len(replies[s - 1])
      tokens_NT[i, :P] = prompt_ids
      tokens_NT[i, P:P + R] = replies[s - 1]
      mask_NT[i, P - 1:P + R - 1] = 1  # targets t whose token t + 1 is a reply token
    rows[side], rows[f"{side}_mask"] = tokens_NT, mask_NT
  rows["index"] = np.arange(n, dtype=np.int32)
  return rows, len(pairs) - n


def num_tokens(rows: dict[str, np.ndarray]) -> int:
  """Tokens of every rendered side (padding excluded): each side ends one token after its
  mask's last 1 (pad ids may be real ids, so lengths come from the masks)."""
  total = 0
  for side in SIDES:
    mask_NT = rows[f"{side}_mask"] > 0
    T = mask_NT.shape[1]
    total += int((T + 1 - np.argmax(mask_NT[:, ::-1], axis=1)).sum())
  return total


class PairRows:
  """Batch function: row indices -> those rows of every key of `rows` (module docstring)."""

  def __init__(self, rows: dict[str, np.ndarray]):
    self.rows = rows

  def __call__(self, index) -> dict:
    index = np.asarray(index)
    return {k: v[index] for k, v in self.rows.items()}


def eval_batches(rows: dict, batch_size: int, process_index: int,
                 process_count: int) -> Iterator[dict]:
  """Every held-out pair once, in order: this process's share of each global batch of
  `batch_size`; rows past the end repeat the last pair with masks 0 and index -1."""
  gather = PairRows(rows)
  n = len(rows["index"])
  for first in range(0, n, batch_size):
    index = np.arange(first, first + batch_size)[process_index::process_count]
    batch = gather(np.minimum(index, n - 1))  # fancy indexing: copies, safe to edit
    pad = index >= n
    for side in SIDES:
      batch[f"{side}_mask"][pad] = 0
    batch["index"][pad] = -1
    yield batch


def make_preference_datasets(config, process_index: int | None = None,
                             process_count: int | None = None, tokenizer=None) -> Datasets:
  """Preference pairs for `config`; `tokenizer` (a checkpoint's) gets the chat tokens it
  lacks; else data.tokenizer makes one (chat_data.chat_tokenizer) from the training pairs'
  text (a char vocabulary: every pair's)."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index, process_count = jax.process_index(), jax.process_count()
  data = config.data
  if not data.path:
    raise UserError(f"task.name={config.task.name} reads preference pairs from "
                    "--config.data.path (HH-RLHF JSONL, or JSON lines of {'prompt', 'chosen', "
                    "'rejected'})")
  batch_size = _per_process(config.train.batch_size, process_count, "--config.train.batch_size")
  _per_process(data.eval_batch_size, process_count, "--config.data.eval_batch_size")
  read = read_preferences(data.path, data.skip_bad_records, data.file_pattern)
  if read.skipped:
    warn(f"skipped {read.skipped} malformed records of {data.path} ({convs.SKIP_FLAG}=True)")
  train, heldout = convs.split_heldout(read.pairs, data.eval_fraction, data.split_seed)
  # A char vocabulary learns nothing from the text but its alphabet, and a held-out character
  # outside it would fail the run (HH's held-out pairs have some): it reads every pair.
  vocab_from = read.pairs if data.tokenizer.kind == "char" else train
  tokenizer = chat_template.with_chat_tokens(
      tokenizer or chat_tokenizer(config, conversations_of(vocab_from)))
  splits = {}
  for name, part in (("train", train), ("validation", heldout)):
    rows, dropped = encode_pairs(part, tokenizer, data.seq_len)
    if dropped:
      warn(f"{dropped} of {len(part)} {name} pairs are longer than data.seq_len={data.seq_len} "
           "tokens and were dropped (raise --config.data.seq_len to keep them)")
    if not len(rows["index"]):
      raise UserError(f"no {name} pair fits in data.seq_len={data.seq_len} tokens: raise "
                      "--config.data.seq_len")
    splits[name] = rows
  rows = splits["train"]
  if len(rows["index"]) < config.train.batch_size:
    warn(f"{len(rows['index'])} train pairs, fewer than train.batch_size="
         f"{config.train.batch_size}: every batch repeats some")
  train_it = shuffled_batches(
      len(rows["index"]), PairRows(rows), batch_size=batch_size, seed=config.seed,
      process_index=process_index, process_count=process_count, worker_count=data.worker_count)
  evaluation = functools.partial(eval_batches, splits["validation"], data.eval_batch_size,
                                 process_index, process_count)
  return PreferenceDatasets(tokenizer, train_it, {"validation": evaluation}, num_tokens(rows),
                            num_tokens(splits["validation"]), rows=splits)


@dataclasses.dataclass
class PreferenceDatasets(Datasets):
  rows: dict = dataclasses.field(default_factory=dict)  # split -> the rows its batches read:
  #                        a column added here before the first batch is in every batch
