"""Orbax checkpoints: train state, data-iterator state, config and tokenizer, saved together.

Layout: DIR/checkpoints/<step>/{state,data,config,tokenizer,integrity}. The state restores
onto whatever mesh the caller's abstract target carries (resharding on load); config and
tokenizer are JSON, so nothing is pickled and `gptjax-eval`/`gptjax-sample` need only the
workdir.

Damage: Orbax checks no array bytes (a flipped byte in a chunk restores silently), so every
save also writes a fingerprint of each array (`gptjax.fingerprint`), and a restore compares
the arrays it read against them. A checkpoint that fails to read or to match is damaged:
`restore_newest_intact` names it and falls back to the newest intact one; the trainer then
moves the damaged ones to DIR/damaged_checkpoints/ (never deletes them) so that its next
saves do not collide with them. A half-written checkpoint (`*.orbax-checkpoint-tmp*`) is
not a step at all for Orbax and is ignored.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from gptjax import fingerprint, storage
from gptjax.errors import UserError, fixable_os_error, warn

ITEMS = ("state", "data", "config", "tokenizer", "integrity")
# Written by gptjax-convert beside an imported model's checkpoint (parameters only: a model
# to start from or serve, not a run to resume).
IMPORTED_MARKER = "converted.json"


def checkpoint_dir(workdir: str) -> str:
  """Orbax reads and writes a gs:// folder itself (tensorstore), so a bucket works as-is."""
  return storage.join(storage.absolute(workdir), "checkpoints")


class DamagedCheckpoint(Exception):
  """A checkpoint step that cannot be read back as it was written."""

  def __init__(self, step: int, reason: str):
    super().__init__(f"checkpoint step {step} is damaged: {reason}")
    self.step, self.reason = step, reason


# Orbax's words for a checkpoint that is readable but holds another model's arrays.
_MISMATCH = ("is not compatible with the stored shape", "tree structure", "Missing keys",
             "Requested shape", "Unexpected keys")


def _quiet_orphaned_reads() -> None:
  """When a restore fails, tensorstore still completes the other reads it had started and
  calls back into Orbax's event loop, closed by then; each callback's 'Event loop is closed'
  would print a traceback that says nothing about the checkpoint. Drop exactly those (they
  can start before the failure reaches us, so this is in place before every read)."""
  previous = sys.unraisablehook
  if getattr(previous, "gptjax_quiet", False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
      previous(unraisable)
  hook.gptjax_quiet = True
  sys.unraisablehook = hook


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 2, keep_best: bool = False,
               read_only: bool = False):
    self.workdir = workdir
    self._pending = None  # the step of the save in flight, if any
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
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, config_json: dict, tokenizer_json: dict,
           metrics: dict | None = None) -> None:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config_json), tokenizer=ocp.args.JsonSave(tokenizer_json),
        integrity=ocp.args.JsonSave({"fingerprints": fingerprint.of_tree(state)}))
    with self._writing(step):
      self.manager.save(step, args=args, metrics=metrics, force=True)
    self._pending = step

  @contextlib.contextmanager
  def _writing(self, step: int):
    """A save the system refuses (disk full, permissions) as one UserError; the checkpoint
    being written stays a `*.orbax-checkpoint-tmp` folder that no restore reads."""
    try:
      yield
    except UserError:
      raise
    except Exception as e:  # noqa: BLE001: only a refused write is the user's to fix
      reason = fixable_os_error(e)
      if reason is None:
        raise
      intact = [s for s in self.all_steps() if s != step]
      kept = (f"the newest complete checkpoint, step {intact[-1]}, is intact" if intact
              else "no complete checkpoint was written before it")
      raise UserError(f"could not write checkpoint step {step} in "
                      f"{checkpoint_dir(self.workdir)}: {reason}; {kept}") from e

  def _has_item(self, step: int, item: str) -> bool:
    return (epath.Path(self.manager.directory) / str(step) / item).exists()

  @contextlib.contextmanager
  def reading(self, step: int):
    """Failures to read `step` become DamagedCheckpoint, or a UserError when the arrays
    are intact but belong to another model."""
    _quiet_orphaned_reads()
    try:
      yield
    except (UserError, DamagedCheckpoint):
      raise
    except Exception as e:  # noqa: BLE001: whatever a damaged file makes a reader raise
      first_line = (str(e).strip().splitlines() or [""])[0][:200]
      if any(m in str(e) for m in _MISMATCH):
        raise UserError(
            f"checkpoint step {step} in {checkpoint_dir(self.workdir)} does not fit this run's "
            f"state ({first_line}): resume with the settings it was saved with, or use a new "
            "--workdir") from e
      raise DamagedCheckpoint(step, f"{type(e).__name__}: {first_line}") from e

  def _verify(self, step: int, restored: dict, saved: dict | None) -> None:
    if saved is None:  # written before fingerprints existed: nothing to compare
      return
    bad = fingerprint.mismatches(restored, saved["fingerprints"])
    if bad:
      raise DamagedCheckpoint(step, f"{len(bad)} array(s) differ from what was saved, "
                              f"first {bad[0]}")

  def restore_state(self, step: int, abstract_state):
    """Restore state (onto the shardings in `abstract_state`) and the data-iterator state."""
    with self.reading(step):
      items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
      if self._has_item(step, "integrity"):
        items["integrity"] = ocp.args.JsonRestore()
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
      self._verify(step, fingerprint.of_tree(out.state), out.get("integrity"))
      if not isinstance(out.data, dict):
        raise DamagedCheckpoint(step, "the data-iterator state is not a JSON object")
    return out.state, out.data

  def restore_meta(self, step: int) -> tuple[dict, dict]:
    """(config JSON, tokenizer JSON) of a checkpoint, without touching its arrays."""
    with self.reading(step):
      out = self.manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore(), tokenizer=ocp.args.JsonRestore()))
      if not isinstance(out.config, dict) or "model" not in out.config:
        raise DamagedCheckpoint(step, "its config is not a gptjax config")
      if not isinstance(out.tokenizer, dict):
        raise DamagedCheckpoint(step, "its tokenizer is not a JSON object")
    return out.config, out.tokenizer

  def param_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """'wte', 'block_0/attn/wq', ... -> shape, from the state's metadata: no array is read."""
    with self.reading(step):
      tree = ocp.PyTreeCheckpointHandler().metadata(
          epath.Path(self.manager.directory) / str(step) / "state").tree
      params = tree.get("params") if isinstance(tree, dict) else None
      if not isinstance(params, dict):
        raise DamagedCheckpoint(step, "its state holds no parameters")
      return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if hasattr(leaf, "shape")}

  def restore_data_state(self, step: int) -> dict:
    """The data-iterator position saved with `step`."""
    with self.reading(step):
      out = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    return out.data

  def restore_params(self, step: int, params_target):
    """Only the params of a checkpoint (no optimizer state), onto `params_target`'s shardings."""
    target = {"params": params_target}
    with self.reading(step):
      items = dict(state=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
      if self._has_item(step, "integrity"):
        items["integrity"] = ocp.args.JsonRestore()
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
      self._verify(step, fingerprint.of_tree({"params": out.state["params"]}),
                   out.get("integrity"))
    return out.state["params"]

  def restore_newest_intact(self, attempt: Callable[[int], Any], move_damaged: bool,
                            steps: list[int] | None = None) -> tuple[int | None, Any]:
    """`attempt(step)` on the newest step, then older ones while it raises DamagedCheckpoint.

    Returns (step, attempt's result), or (None, None) when there is no checkpoint at all.
    Each damaged step is named in a warning; with `move_damaged` (the trainer, which will
    save those step numbers again) they are moved aside once an intact one is found.
    """
    damaged = []
    for step in sorted(self.all_steps() if steps is None else steps, reverse=True):
      try:
        result = attempt(step)
      except DamagedCheckpoint as e:
        warn(f"{e}; trying an older checkpoint")
        damaged.append(step)
        continue
      if damaged:
        where = self._move_aside(damaged) if move_damaged else "left in place"
        warn(f"using checkpoint step {step}, the newest intact one; damaged step(s) "
             f"{damaged} {where}")
      return step, result
    if damaged:
      raise UserError(f"every checkpoint in {checkpoint_dir(self.workdir)} is damaged (steps "
                      f"{damaged}, see the warnings above): restore them from a copy, or move "
                      "them away to train from scratch")
    return None, None

  def _move_aside(self, steps: list[int]) -> str:
    """Move damaged steps to WORKDIR/damaged_checkpoints/ (a new name if one is there)."""
    dest_root = epath.Path(storage.absolute(self.workdir)) / "damaged_checkpoints"
    if jax.process_index() == 0:
      dest_root.mkdir(parents=True, exist_ok=True)
      for step in steps:
        dest, n = dest_root / str(step), 1
        while dest.exists():
          dest, n = dest_root / f"{step}.{n}", n + 1
        (epath.Path(self.manager.directory) / str(step)).rename(dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("gptjax_checkpoint_moved_aside")
    self.manager.reload()
    return f"moved to {dest_root}"

  def wait(self) -> None:
    with self._writing(self._pending):
      self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying target shardings: what Orbax restores onto."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
