"""LoRA: low-rank adapters beside chosen weights, y = x W + (alpha / r) * x A B.

The model creates, next to every weight whose path (`block_0/attn/wq`) `lora.targets`
matches, `NAME_lora_a` (the weight's input axes x rank, uniform in +-1/sqrt(fan_in), as
peft) and `NAME_lora_b` (rank x output axes, zeros), so the adapted model starts equal to
the base one. A takes the weight's input-axis sharding and B its output-axis sharding. The
trainable mask (`gptjax.trainable`) then trains the adapters and leaves the base weights
bit-identical. `merge` folds the adapters into their weights: an ordinary checkpoint.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

A_SUFFIX, B_SUFFIX = "_lora_a", "_lora_b"
ADAPTER_RE = re.compile(f"({A_SUFFIX}|{B_SUFFIX})$")
DEFAULT_TARGETS = r"attn/w[qkvo]$|mlp/w(i|i_gate|i_up|o)$"  # attention and MLP projections


def applies(cfg, path: str) -> bool:
  return bool(cfg.lora_rank) and re.search(cfg.lora_targets or DEFAULT_TARGETS, path) is not None


def scale(cfg) -> float:
  return cfg.lora_alpha / cfg.lora_rank


def contracted_axes(spec: str) -> int:
  """How many leading axes of the weight the einsum `spec` contracts with the activation."""
  x_axes, w_axes = spec.split("->")[0].split(",")
  return sum(axis in x_axes for axis in w_axes)


def a_init(fan_in_shape):
  bound = 1.0 / math.sqrt(math.prod(fan_in_shape))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _specs(spec: str) -> tuple[str, str]:
  """Einsums x A -> x_r and x_r B -> y for a weight einsum like "btd,dnh->btnh"."""
  inputs, out = spec.split("->")
  x_axes, w_axes = inputs.split(",")
  n_in = contracted_axes(spec)
  lead = "".join(a for a in x_axes if a not in w_axes)
  return (f"{x_axes},{w_axes[:n_in]}r->{lead}r", f"{lead}r,r{w_axes[n_in:]}->{out}")


def delta(spec: str, x, a, b, factor: float):
  """The adapter's contribution (alpha / r) * x A B, as einsum `spec` would give for x W."""
  to_rank, from_rank = _specs(spec)
  return jnp.einsum(from_rank, jnp.einsum(to_rank, x, a), b) * jnp.asarray(factor, x.dtype)


def is_adapter(path: str) -> bool:
  return ADAPTER_RE.search(path) is not None


def merged_weight(w, a, b, factor: float):
  """W + (alpha / r) * A B, contracting the rank axis: A [..in, r], B [r, ..out]."""
  return w + factor * jnp.tensordot(a, b, axes=1)


def merge(params: dict, cfg) -> dict:
  """Params with every adapter folded into its weight and the adapter leaves removed."""
  def walk(tree):
    out = {}
    for name, value in tree.items():
      if isinstance(value, dict):
        out[name] = walk(value)
      elif not is_adapter(name):
        a, b = tree.get(name + A_SUFFIX), tree.get(name + B_SUFFIX)
        out[name] = value if a is None else merged_weight(value, a, b, scale(cfg))
    return out
  return walk(params)


def adapters(params: dict) -> dict[str, np.ndarray]:
  """The adapter leaves alone, by flat path ("block_0/attn/wq_lora_a"): what to save."""
  from gptjax.trainable import path_of
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = path_of(path)
    if is_adapter(name):
      flat[name] = np.asarray(jax.device_get(leaf))
  return flat


def with_adapters(params: dict, flat: dict) -> dict:
  """`params` with its adapter leaves replaced by `flat` (from `adapters`); shapes checked."""
  from gptjax.trainable import path_of

  def put(key_path, value):
    path = path_of(key_path)
    if path not in flat:
      return value
    if tuple(flat[path].shape) != tuple(value.shape):
      raise ValueError(f"adapter {path}: shape {flat[path].shape}, model has {value.shape}")
    return jnp.asarray(flat[path], value.dtype)
  return jax.tree_util.tree_map_with_path(put, params)


def without_adapters(params):
  """The base model: every B set to zero, so each adapter adds nothing. With LoRA the base
  weights are the frozen reference policy (DPO, GRPO) and no second copy is held."""
  from gptjax.trainable import path_of
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if path_of(p).endswith(B_SUFFIX) else x, params)
