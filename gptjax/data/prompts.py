"""Prompts for reinforcement learning (task.name=grpo): what the policy answers in rollouts.

A record (JSON list or JSON lines, `.gz` too) is one of
  {"prompt": "text" | [messages], ...}   extra keys ("answer", ...) go to reward functions
  {"messages": [...], ...}                the conversation so far, ending with a user turn
  {"chosen": ..., "rejected": ...}        a preference pair: its shared prompt (HH and the
                                          formats of gptjax.data.preferences)
Prompts are rendered with the tokenizer's chat format (ending with its generation prompt) and
left-padded to P = data.seq_len - grpo.max_new_tokens tokens, so prompt and completion fit
in the model's context (as a preference pair does: a reward model reads the last token of
a full-length completion); longer prompts are dropped and counted.

A batch holds each of its prompts `group_size` times in a row (the group the advantages
compare): {"prompt": int32[B, P], "left_pad": int32[B] (padding tokens before each prompt),
"index": int32[B] (the prompt's index in its split; -1 on held-out padding rows)}.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gptjax.data import chat_template, conversations as convs
from gptjax.data.pipeline import shuffled_batches
from gptjax.errors import UserError, warn


@dataclasses.dataclass
class Prompts:
  conversations: list[list[dict]]  # each ends with a user message
  records: list[dict]  # the source records: answers and other fields for reward functions
  skipped: int


def prompt_of(record) -> list[dict]:
  """The conversation a record asks the model to continue; ValueError if there is none."""
  if not isinstance(record, dict):
    raise ValueError("a prompt record must be a JSON object")
  if "chosen" in record and "prompt" not in record and "messages" not in record:
    from gptjax.data.preferences import parse_pair
    return parse_pair(record).prompt
  prompt = record.get("prompt", record.get("messages"))
  if isinstance(prompt, str):
    prompt = [{"role": "user", "content": prompt}]
  if not isinstance(prompt, list) or not prompt:
    raise ValueError("a prompt record needs 'prompt' (text or messages) or 'messages'")
  convs.validate(prompt + [{"role": "assistant", "content": ""}])
  if prompt[-1]["role"] != "user":
    raise ValueError("the prompt's last message must be a user message")
  return [{"role": m["role"], "content": m["content"]} for m in prompt]


def read_prompts(path: str, skip_bad: bool = False, file_pattern: str = "*") -> Prompts:
  items, skipped = convs.read_records(path, file_pattern, skip_bad, prompt_of, "prompts")
  return Prompts([p for p, _ in items], [r for _, r in items], skipped)


def encode(conversations: list, tokenizer, prompt_len: int) -> tuple[np.ndarray, np.ndarray, list]:
  """(prompts int32[N, prompt_len] left-padded, padding int32[N], kept indices)."""
  kept, rows = [], []
  for i, conversation in enumerate(conversations):
    ids = chat_template.render_prompt(conversation, tokenizer)
    if len(ids) <= prompt_len:
      kept.append(i)
      rows.append(ids)
  from gptjax.rollout import left_padded
  prompt, pad = left_padded(rows, prompt_len)
  return prompt, pad, kept


class _Groups:
  """Batch function: prompt indices -> each prompt's row `group_size` times in a row."""

  def __init__(self, prompt: np.ndarray, pad: np.ndarray, group_size: int):
    self.prompt, self.pad, self.group_size = prompt, pad, group_size

  def __call__(self, index) -> dict:
    index = np.repeat(np.asarray(index), self.group_size)
    return {"prompt": self.prompt[index], "left_pad": self.pad[index],
            "index": index.astype(np.int32)}


def eval_batches(prompt: np.ndarray, pad: np.ndarray, batch_size: int, process_index: int,
                 process_count: int):
  """Every held-out prompt once, in order; padding rows repeat the last one with index -1."""
  n = len(prompt)
  for first in range(0, n, batch_size):
    index = np.arange(first, first + batch_size)[process_index::process_count]
    rows = np.minimum(index, n - 1)
    yield {"prompt": prompt[rows], "left_pad": pad[rows],
           "index": np.where(index < n, index, -1).astype(np.int32)}


@dataclasses.dataclass
class PromptData:
  tokenizer: object
  train: object  # infinite, resumable iterator of batches
  eval_batches: object  # () -> iterator over the held-out prompts once
  train_records: list
  eval_records: list
  train_tokens: int = 0
  eval_tokens: int = 0
  eval_splits: dict = dataclasses.field(default_factory=dict)  # no held-out loss: see evaluators


def make_prompt_datasets(config, tokenizer, process_index: int | None = None,
                         process_count: int | None = None) -> PromptData:
  """Prompt batches for `config` (data.path), rendered with `tokenizer` (a chat model's)."""
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  data, grpo = config.data, config.grpo
  if not data.path:
    raise UserError("task.name=grpo reads prompts from --config.data.path (JSON lines of "
                    "{'prompt': ...}, or preference pairs)")
  prompt_len = data.seq_len - grpo.max_new_tokens
  if prompt_len < 2:
    raise UserError(f"grpo.max_new_tokens={grpo.max_new_tokens} leaves no room for a prompt in "
                    f"data.seq_len={data.seq_len}: raise data.seq_len or lower max_new_tokens")
  read = read_prompts(data.path, data.skip_bad_records, data.file_pattern)
  if read.skipped:
    warn(f"skipped {read.skipped} malformed records of {data.path} ({convs.SKIP_FLAG}=True)")
  order = list(range(len(read.conversations)))
  train_ids, eval_ids = convs.split_heldout(order, data.eval_fraction, data.split_seed)
  tokenizer = chat_template.with_chat_tokens(tokenizer)
  splits = {}
  for name, ids in (("train", train_ids), ("validation", eval_ids)):
    prompt, pad, kept = encode([read.conversations[i] for i in ids], tokenizer, prompt_len)
    if len(kept) < len(ids):
      warn(f"{len(ids) - len(kept)} of {len(ids)} {name} prompts are longer than "
           f"{prompt_len} tokens (data.seq_len - grpo.max_new_tokens) and were dropped")
    if not kept:
      raise UserError(f"no {name} prompt fits in {prompt_len} tokens: raise data.seq_len")
    splits[name] = (prompt, pad, [read.records[ids[k]] for k in kept])
  prompt, pad, records = splits["train"]
  per_process = config.train.batch_size // process_count
  if per_process % grpo.group_size:
    raise UserError(f"train.batch_size={config.train.batch_size} completions per step must "
                    f"divide by grpo.group_size={grpo.group_size} (per process)")
  train = shuffled_batches(len(prompt), _Groups(prompt, pad, grpo.group_size),
                           batch_size=per_process // grpo.group_size, seed=config.seed,
                           process_index=process_index, process_count=process_count,
                           worker_count=data.worker_count)
  ev_prompt, ev_pad, ev_records = splits["validation"]

  def held_out():
    return eval_batches(ev_prompt, ev_pad, data.eval_batch_size, process_index, process_count)
  count = lambda p, q: int(p.size - q.sum())
  return PromptData(tokenizer, train, held_out, records, ev_records,
                    count(prompt, pad), count(ev_prompt, ev_pad))
