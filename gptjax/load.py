"""Load a trained model from a workdir: config, tokenizer and params of one checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from gptjax import checkpoint, sharding, state as state_lib
from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig


@dataclasses.dataclass
class Loaded:
  config: ml_collections.ConfigDict
  model: GPT
  params: Any
  tokenizer: Any
  mesh: Any
  step: int


def inference_mesh(config):
  """The run's own mesh if it fits the devices here, else plain data parallelism."""
  try:
    return sharding.make_mesh(config.mesh)
  except UserError:
    return sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))


def load_workdir(workdir: str, step: int | None = None) -> Loaded:
  from gptjax.data import tokenizer_from_json
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  steps = ckpt.all_steps()
  if not steps:
    raise UserError(f"no checkpoint under {checkpoint.checkpoint_dir(workdir)}: train first "
                    f"with gptjax-train --workdir={workdir}, or fix --workdir")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise UserError(f"--step={step} is not among the checkpoints {sorted(steps)}")
  config_json, tokenizer_json = ckpt.restore_meta(step)
  config = ml_collections.ConfigDict(config_json)
  tokenizer = tokenizer_from_json(tokenizer_json)
  mesh = inference_mesh(config)
  model_cfg = GPTConfig.from_config(config.model, tokenizer.vocab_size, config.data.seq_len)
  model = GPT(model_cfg)
  params_abstract, params_shardings = state_lib.abstract_params(model, mesh)
  params = checkpoint.restore_params(
      ckpt, step, checkpoint.abstract_with_shardings(params_abstract, params_shardings))
  ckpt.close()
  return Loaded(config=config, model=model, params=params, tokenizer=tokenizer, mesh=mesh,
                step=step)
