"""Fingerprints of arrays, to tell a checkpoint read back intact from a damaged one.

Each array's fingerprint is sum(bits[i] * w[i]) mod 2**32 over its elements' raw bits, with
odd position weights w[i], so a changed, swapped or zeroed element changes it. Integer
addition mod 2**32 is exact in any order, so the figure is the same on any mesh and any
number of hosts, and it is computed where the arrays live (one jitted reduction, sharded as
they are) without gathering them to one host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}
_GOLDEN = np.uint32(2654435761)  # Knuth's multiplicative hash constant


def _one(x: jax.Array) -> jax.Array:
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  # 8-byte elements become two 32-bit words (a trailing axis of 2): all bits still count.
  bits = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).reshape(-1)
  weights = jax.lax.iota(jnp.uint32, bits.size) * _GOLDEN | np.uint32(1)
  return jnp.sum(bits.astype(jnp.uint32) * weights, dtype=jnp.uint32)


_fingerprints = jax.jit(lambda tree: jax.tree_util.tree_map(_one, tree))


def path_name(path) -> str:
  """'params/wte/embedding' for a tree path, the same for a dataclass field or a dict key."""
  parts = []
  for key in path:
    for attr in ("name", "key", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def of_tree(tree) -> dict[str, int]:
  """{path name: fingerprint} for every array leaf of `tree`."""
  values = jax.device_get(_fingerprints(tree))
  return {path_name(path): int(v)
          for path, v in jax.tree_util.tree_leaves_with_path(values)}


def mismatches(restored: dict[str, int], saved: dict[str, int]) -> list[str]:
  """Names of restored arrays whose fingerprint is not the saved one (missing counts)."""
  return [name for name, value in restored.items() if saved.get(name) != value]
