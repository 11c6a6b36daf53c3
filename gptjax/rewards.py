"""Python reward functions for RL on verifiable tasks (`grpo.reward_fn`).

A reward function takes the completions (text, cut at the end-of-turn token) and the prompt
records they answer (the data file's objects: "answer" and any other field) and returns one
float per completion. Register a new one with `@register("name")`; a reward model checkpoint
is the other source of rewards (`grpo.reward_workdir`, tasks/reward.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

from gptjax.errors import UserError

RewardFn = Callable[[Sequence[str], Sequence[dict]], list]
REWARDS: dict[str, RewardFn] = {}


def register(name: str):
  def add(fn: RewardFn) -> RewardFn:
    REWARDS[name] = fn
    return fn
  return add


def get(name: str) -> RewardFn:
  if name not in REWARDS:
    raise UserError(f"grpo.reward_fn={name!r} is not one of {sorted(REWARDS)} "
                    "(gptjax.rewards.register adds one)")
  return REWARDS[name]


def _answer(record: dict) -> str:
  if "answer" not in record:
    raise UserError(f"a prompt record has no 'answer' for the reward to check: {str(record)[:80]}")
  return str(record["answer"]).strip()


@register("exact_match")
def exact_match(completions: Sequence[str], records: Sequence[dict]) -> list:
  """1.0 where the completion, stripped of surrounding whitespace, is the answer."""
  return [float(c.strip() == _answer(r)) for c, r in zip(completions, records)]


@register("answer_prefix_chars")
def answer_prefix_chars(completions: Sequence[str], records: Sequence[dict]) -> list:
  """Share of the answer's characters the completion gets right from the start, minus a
  share for extra characters: partial credit, a denser signal than exact match."""
  out = []
  for c, r in zip(completions, records):
    answer, c = _answer(r), c.strip()
    right = 0
    for a, b in zip(answer, c):
      if a != b:
        break
      right += 1
    extra = max(0, len(c) - len(answer))
    out.append((right - extra) / max(len(answer), 1))
  return out


@register("brevity")
def brevity(completions: Sequence[str], records: Sequence[dict]) -> list:
  """Minus the completion's length in hundreds of characters: prefers concise replies."""
  return [-len(c.strip()) / 100.0 for c in completions]
