"""Which fused attention kernel a model gets: cuDNN flash attention where it applies, else XLA.

`model.attention`: "xla" always works; "cudnn" asks for cuDNN's fused kernel; "auto" takes
cuDNN on a GPU when the shape allows and XLA otherwise. A request that cannot be met falls
back to XLA with one logged line that says why, instead of failing at compile time.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import jax

log = logging.getLogger(__name__)

_HALF = ("bfloat16", "float16")
_target_platform: str | None = None  # set while compiling for another machine's devices


@contextlib.contextmanager
def compiling_for(platform: str):
  """Resolve kernels for `platform` ("gpu", "tpu") instead of this host's backend, e.g. while
  compiling ahead of time for a GPU from a CPU machine."""
  global _target_platform
  saved, _target_platform = _target_platform, platform
  try:
    yield
  finally:
    _target_platform = saved


def cudnn_unsupported_reason(platform: str, dtype: str, head_dim: int) -> str | None:
  """Why cuDNN's fused attention cannot run this model here (None: it can)."""
  if platform != "gpu":
    return f"the backend is {platform}, not a GPU"
  if dtype not in _HALF:
    return f"model.dtype={dtype}; cuDNN flash attention needs bfloat16 or float16"
  if head_dim % 8 or head_dim > 128:
    return f"head dimension {head_dim}; cuDNN needs a multiple of 8, at most 128"
  return None


def resolve(requested: str, dtype: str, head_dim: int, platform: str | None = None) -> str:
  """The implementation to pass to jax.nn.dot_product_attention ("xla" or "cudnn")."""
  return _resolve(requested, dtype, head_dim,
                  platform or _target_platform or jax.default_backend())


@functools.lru_cache(maxsize=None)  # one log line per shape, not one per trace
def _resolve(requested: str, dtype: str, head_dim: int, platform: str) -> str:
  if requested == "xla":
    return "xla"
  reason = cudnn_unsupported_reason(platform, dtype, head_dim)
  if reason is None:
    return "cudnn"
  if requested == "cudnn":
    log.warning("model.attention=cudnn falls back to xla: %s", reason)
  return "xla"
