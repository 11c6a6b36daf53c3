"""Save a LoRA run's adapters merged into its base weights, or alone.

    gptjax-lora --workdir=RUN --out=DIR [--step=N]              # merged: an ordinary checkpoint
    gptjax-lora --workdir=RUN --out=DIR --adapters_only         # DIR/adapters.safetensors

Merged, DIR is a gptjax workdir whose checkpoint (same step, config with lora.rank=0, same
tokenizer and data position, a fresh optimizer state) gptjax-eval, gptjax-sample and
init.workdir read like any other. Adapters alone: a safetensors file of the A and B
matrices by parameter path, and adapter_config.json with rank, alpha, targets and the
base run (init.workdir/step) they apply to; `load_adapters` puts them back on that base.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from gptjax import checkpoint, lora, state as state_lib
from gptjax.errors import UserError, run_app, run_cli
from gptjax.load import Loaded, load_workdir

ADAPTERS_FILE, ADAPTER_CONFIG = "adapters.safetensors", "adapter_config.json"


def _lora_run(workdir: str, step: int | None) -> Loaded:
  loaded = load_workdir(workdir, step)
  if not loaded.model.cfg.lora_rank:
    raise UserError(f"--workdir={workdir} has no LoRA adapters (its lora.rank is 0)")
  return loaded


def save_merged(loaded: Loaded, out: str) -> str:
  """Write the merged model as an ordinary checkpoint in workdir `out`."""
  from gptjax.model import GPT, GPTConfig
  from gptjax.optim import make_optimizer
  config = ml_collections.ConfigDict(loaded.config.to_dict())
  config.lora.rank = 0
  model = GPT(GPTConfig.from_config(config, loaded.tokenizer.vocab_size))
  _, shardings = state_lib.abstract_params(model, loaded.mesh)
  params = jax.jit(lambda p: lora.merge(p, loaded.model.cfg), out_shardings=shardings)(
      loaded.params)
  tx = make_optimizer(config.optim, config.train.steps)
  state = state_lib.init_state(model, tx, loaded.mesh, state_lib.state_shardings(
      tx, params, shardings, loaded.mesh), 0, params=params).replace(step=loaded.step)
  source = checkpoint.Checkpointer(loaded.workdir, read_only=True)
  data_state = source.restore_data_state(loaded.step)
  source.close()
  ckpt = checkpoint.Checkpointer(out, keep=1)
  try:
    ckpt.save(loaded.step, state, data_state, json.loads(config.to_json_best_effort()),
              loaded.tokenizer.to_json())
    ckpt.wait()
  finally:
    ckpt.close()
  return checkpoint.checkpoint_dir(out)


def save_adapters(loaded: Loaded, out: str) -> str:
  from safetensors.numpy import save_file
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, ADAPTERS_FILE)
  save_file(lora.adapters(loaded.params), path)
  cfg = loaded.model.cfg
  with open(os.path.join(out, ADAPTER_CONFIG), "w") as f:
    json.dump({"rank": cfg.lora_rank, "alpha": cfg.lora_alpha,
               "targets": cfg.lora_targets or lora.DEFAULT_TARGETS,
               "base_workdir": loaded.config.init.get("workdir", ""),
               "base_step": loaded.config.init.get("step", 0),
               "trained_in": os.path.abspath(loaded.workdir), "step": loaded.step}, f, indent=1)
  return path


def load_adapters(params, folder: str):
  """`params` (a model built with the same lora.* settings) with the saved adapters."""
  from safetensors.numpy import load_file
  try:
    return lora.with_adapters(params, load_file(os.path.join(folder, ADAPTERS_FILE)))
  except ValueError as e:
    raise UserError(f"adapters in {folder} do not fit this model: {e}") from None


def main(argv=None) -> None:
  from absl import flags

  flags.DEFINE_string("workdir", None, "a LoRA run's workdir", required=True)
  flags.DEFINE_string("out", None, "where to write (a new workdir, or a folder)", required=True)
  flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
  flags.DEFINE_bool("adapters_only", False, "save the adapters alone instead of merging")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      if os.path.exists(checkpoint.checkpoint_dir(FLAGS.out)):
        raise UserError(f"--out={FLAGS.out} already holds checkpoints: choose a new folder")
      loaded = _lora_run(FLAGS.workdir, FLAGS.step)
      where = (save_adapters if FLAGS.adapters_only else save_merged)(loaded, FLAGS.out)
      print(f"wrote {where}")
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
