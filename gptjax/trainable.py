"""What trains: a bool mask over the parameters, from regexes over their paths.

Paths are the params tree's keys joined by "/": `wte`, `block_3/attn/wq`,
`block_3/ln1/norm/scale`, `block_3/mlp/wi_bias`, `ln_f/norm/scale`. `train.trainable`
picks what trains ("" = everything, or with LoRA the adapters alone), `train.frozen`
removes from it. The trainer differentiates only the selected subtree (`select`) and keeps
optimizer state only for it, so frozen weights have neither gradients nor moments and stay
bit-identical.
"""

from __future__ import annotations

import re

import jax

from gptjax import lora
from gptjax.errors import UserError


def path_of(key_path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in key_path)


def _regex(setting: str, value: str):
  try:
    return re.compile(value) if value else None
  except re.error as e:
    raise UserError(f"--config.{setting}={value!r} is not a regular expression ({e})") from None


def trainable_mask(config, params):
  """Bool tree like `params` (None: everything trains)."""
  rank = config.lora.rank if "lora" in config else 0
  pick = _regex("train.trainable", config.train.get("trainable", ""))
  drop = _regex("train.frozen", config.train.get("frozen", ""))
  if not (pick or drop or rank):
    return None

  def trains(key_path, _):
    path = path_of(key_path)
    chosen = lora.is_adapter(path) or (pick.search(path) is not None if pick else not rank)
    return chosen and not (drop and drop.search(path))

  if rank and not any(lora.is_adapter(path_of(p)) for p, _ in
                     jax.tree_util.tree_leaves_with_path(params)):
    raise UserError(f"--config.lora.targets={config.lora.targets!r} matches no weight (they "
                    "are named like block_0/attn/wq, block_0/mlp/wi, block_0/mlp/wo)")
  mask = jax.tree_util.tree_map_with_path(trains, params)
  if not any(jax.tree_util.tree_leaves(mask)):
    raise UserError(f"--config.train.trainable={config.train.trainable!r} and "
                    f"--config.train.frozen={config.train.frozen!r} leave no parameter to train "
                    "(paths look like block_0/attn/wq, ln_f/norm/scale, wte)")
  return mask


def select(tree, mask):
  """The leaves of `tree` where `mask` is True, as a nested dict (None mask: all of it)."""
  if mask is None:
    return tree
  if isinstance(mask, dict):
    out = {k: select(tree[k], m) for k, m in mask.items()}
    return {k: v for k, v in out.items() if not (isinstance(v, dict) and not v)}
  return tree if mask else {}


def merge(tree, part):
  """`tree` with the leaves `part` (from `select`) holds replaced by those."""
  if not isinstance(part, dict) or not isinstance(tree, dict):
    return part
  return {k: merge(v, part[k]) if k in part else v for k, v in tree.items()}


def count(params, mask) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(select(params, mask)))
