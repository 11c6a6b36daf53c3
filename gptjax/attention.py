"""Which fused attention kernel a model gets: cuDNN flash attention where it applies, else XLA.

`model.attention`: "xla" always works; "cudnn" asks for cuDNN's fused kernel; "auto" takes
cuDNN on a GPU when the shape allows and XLA otherwise. A request that cannot be met falls
back to XLA with one logged line that says why, instead of failing at compile time.
"""

from __future__ import annotations

import functools
import logging

import jax

log = logging.getLogger(__name__)

_HALF = ("bfloat16", "float16")


def cudnn_unsupported_reason(platform: str, dtype: str, head_dim: int) -> str | None:
  """Why cuDNN's fused attention cannot run this model here (None: it can)."""
  if platform != "gpu":
    return f"the backend is {platform}, not a GPU"
  if dtype not in _HALF:
    return f"model.dtype={dtype}; cuDNN flash attention needs bfloat16 or float16"
  if head_dim % 8 or head_dim > 128:
    return f"head dimension {head_dim}; cuDNN needs a multiple of 8, at most 128"
  return None


@functools.lru_cache(maxsize=None)
def resolve(requested: str, dtype: str, head_dim: int, platform: str | None = None) -> str:
  """The implementation to pass to jax.nn.dot_product_attention ("xla" or "cudnn")."""
  if requested == "xla":
    return "xla"
  reason = cudnn_unsupported_reason(platform or jax.default_backend(), dtype, head_dim)
  if reason is None:
    return "cudnn"
  if requested == "cudnn":
    log.warning("model.attention=cudnn falls back to xla: %s", reason)
  return "xla"
