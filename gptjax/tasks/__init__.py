"""Objectives behind one protocol: the trainer calls these methods and never a task's name.

A task is built with the config, gives the trainer its data (`datasets`), is bound to the
model once the vocabulary is known (`bind`), and supplies a pure, jittable `loss`. Optional
seams: `init_frozen` (a teacher, a reference policy, a reward model), `trainable` (a bool
mask for freezing/adapters) and `evaluators` (extra held-out metrics).

`loss` returns (scalar, metrics); metrics["weight"] is how many items the scalar averages
over (tokens, pairs, ...), named by `weight_unit`. The trainer weights microbatches and
eval batches by it, so gradient accumulation and whole-split evaluation are exact for masked
objectives too; held-out perplexity is exp of the metric `perplexity_of` names.

A frozen model (`init_frozen`, gptjax.frozen) is an argument of the jitted step. RL adds one
optional seam, `rollout(params, batch, frozen, step) -> batch`: the loop hands it each
batch of prompts and trains `updates_per_rollout` steps on the batch it returns
(tasks/grpo.py); its host metrics (rewards, rollout speed) join the step's.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax

from gptjax.tasks.distill import DistillTask
from gptjax.tasks.dpo import DPOTask
from gptjax.tasks.grpo import GRPOTask
from gptjax.tasks.lm import LMTask
from gptjax.tasks.reward import RewardTask
from gptjax.tasks.sft import SFTTask


class Task(Protocol):
  weight_unit: str  # what metrics["weight"] counts: "tokens", "pairs", ...
  perplexity_of: str  # the per-token cross-entropy metric held-out perplexity is exp of ("": none)
  rollout: Any  # None, or RL's (params, prompts, frozen, step) -> (batch, host metrics)
  updates_per_rollout: int  # optimizer steps on each rollout's batch
  def datasets(self, tokenizer=None) -> Any: ...  # gptjax.data.Datasets; reuse `tokenizer` if given
  def bind(self, model) -> None: ...  # the GPT module, once the vocabulary is known
  def init_frozen(self, mesh) -> Any: ...  # teacher / reference / reward model, or None
  def loss(self, params, batch, rng: jax.Array | None, frozen) -> tuple[jax.Array, dict]: ...
  def trainable(self, params) -> Any: ...  # bool tree; None = train everything
  def evaluators(self) -> dict[str, Callable]: ...  # extra metrics: (params, frozen) -> dict


TASKS: dict[str, type] = {"lm": LMTask, "sft": SFTTask, "reward": RewardTask, "dpo": DPOTask,
                           "grpo": GRPOTask, "distill": DistillTask}


def make_task(config) -> Task:
  from gptjax.errors import UserError
  if config.task.name not in TASKS:
    raise UserError(f"task.name={config.task.name!r} is not one of {sorted(TASKS)}")
  return TASKS[config.task.name](config)
