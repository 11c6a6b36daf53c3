"""Orbax checkpoints: train state, data-iterator state, config and tokenizer, saved together.

Layout: DIR/checkpoints/<step>/{state,data,config,tokenizer}. The state restores onto
whatever mesh the caller's abstract target carries (resharding on load); config and
tokenizer are JSON, so nothing is pickled and `gptjax-eval`/`gptjax-sample` need only the
workdir.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

ITEMS = ("state", "data", "config", "tokenizer")


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 2, keep_best: bool = False,
               read_only: bool = False):
    preserve = [policies.LatestN(n=max(keep, 1))]
    if keep_best:
      preserve.append(policies.BestN(get_metric_fn=lambda m: m["eval/loss"], reverse=True, n=1,
                                     keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only,
        preservation_policy=policies.AnyPreservationPolicy(preserve))
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                         item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, config_json: dict, tokenizer_json: dict,
           metrics: dict | None = None) -> None:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config_json), tokenizer=ocp.args.JsonSave(tokenizer_json))
    self.manager.save(step, args=args, metrics=metrics, force=True)

  def restore_state(self, step: int, abstract_state):
    """Restore state (onto the shardings in `abstract_state`) and the data-iterator state."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out.state, out.data

  def restore_meta(self, step: int) -> tuple[dict, dict]:
    """(config JSON, tokenizer JSON) of a checkpoint, without touching its arrays."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), tokenizer=ocp.args.JsonRestore()))
    return out.config, out.tokenizer

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying target shardings: what Orbax restores onto."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def restore_params(ckpt: Checkpointer, step: int, params_target):
  """Only the params of a checkpoint (no optimizer state), onto `params_target`'s shardings."""
  target = {"params": params_target}
  out = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))
  return out.state["params"]
