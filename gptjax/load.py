"""Load a trained model from a workdir: config, tokenizer and params of one checkpoint."""

from __future__ import annotations

import dataclasses
import re
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
  workdir: str = ""


def inference_mesh(config):
  """The run's own mesh if it fits the devices here, else plain data parallelism."""
  try:
    return sharding.make_mesh(config.mesh)
  except UserError:
    return sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))


def one_device_mesh():
  """A mesh of the first device alone: serving, where decode slots batch the requests."""
  import jax
  return sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1}),
                            devices=jax.devices()[:1])


def load_workdir(workdir: str, step: int | None = None, mesh=None) -> Loaded:
  """The newest intact checkpoint (a damaged newer one is named and skipped), or `step`;
  params restored onto `mesh` (default: the run's own mesh where it fits)."""
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  steps = ckpt.all_steps()
  if not steps:
    raise UserError(f"no checkpoint under {checkpoint.checkpoint_dir(workdir)}: train first "
                    f"with gptjax-train --workdir={workdir}, or fix --workdir")
  if step is not None and step not in steps:
    raise UserError(f"--step={step} is not among the checkpoints {steps}")
  try:
    if step is None:
      _, loaded = ckpt.restore_newest_intact(lambda s: _load_step(ckpt, s, mesh),
                                             move_damaged=False)
    else:
      loaded = _load_step(ckpt, step, mesh)
  except checkpoint.DamagedCheckpoint as e:  # the user asked for this step: no fallback
    raise UserError(f"{e}; pass another of the checkpoints {steps} as --step") from e
  finally:
    ckpt.close()
  return loaded


def _load_step(ckpt: checkpoint.Checkpointer, step: int, mesh=None) -> Loaded:
  from gptjax.data import tokenizer_from_json
  config_json, tokenizer_json = ckpt.restore_meta(step)
  with ckpt.reading(step):
    config = ml_collections.ConfigDict(config_json)
    tokenizer = tokenizer_from_json(tokenizer_json)
    cfg = GPTConfig.from_config(config, tokenizer.vocab_size)
  _check_config_fits_arrays(ckpt, step, cfg)
  model = GPT(cfg)
  mesh = mesh or inference_mesh(config)
  params_abstract, params_shardings = state_lib.abstract_params(model, mesh,
                                                                replicate_indivisible=True)
  params = ckpt.restore_params(
      step, checkpoint.abstract_with_shardings(params_abstract, params_shardings))
  return Loaded(config=config, model=model, params=params, tokenizer=tokenizer, mesh=mesh,
                step=step, workdir=ckpt.workdir)


def _check_config_fits_arrays(ckpt: checkpoint.Checkpointer, step: int, cfg: GPTConfig):
  """A checkpoint's config against its arrays' metadata, before the model is built from it:
  a config edited to 100,000 layers or a billion positions would otherwise be traced (for
  minutes, or allocating GiBs) before the restore found the arrays do not match. Checks
  what sets that cost: the layer count and the tables' and a layer's shapes."""
  shapes = ckpt.param_shapes(step)
  layers = {path.split("/")[0] for path in shapes if re.fullmatch(r"block_\d+/.*", path)}
  if len(layers) != cfg.num_layers:
    raise checkpoint.DamagedCheckpoint(step, f"its config says model.num_layers="
                                       f"{cfg.num_layers} but its arrays hold {len(layers)} "
                                       "layers")
  D, N, K, H, V = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.vocab_size
  expected = {"wte": (V, D), "block_0/attn/wq": (D, N, H), "block_0/attn/wk": (D, K, H),
              "block_0/attn/wo": (N, H, D), "block_0/mlp/wo": (cfg.hidden_dim, D)}
  if cfg.positions == "learned":
    expected["wpe"] = (cfg.max_len, D)
  if not cfg.tie_embeddings:
    expected["lm_head"] = (D, V)
  for path, shape in expected.items():
    if shapes.get(path) != shape:
      raise checkpoint.DamagedCheckpoint(step, f"its config gives {path} the shape {shape} "
                                         f"but its array is {shapes.get(path, 'missing')}")
