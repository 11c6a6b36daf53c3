"""Which fused attention kernel a model gets: a flash kernel where one applies, else XLA.

`model.attention`: "xla" always works; "cudnn" asks for cuDNN's fused kernel (GPU); "splash"
for the Pallas splash kernel (TPU, `gptjax.splash`); "auto" takes the platform's flash
kernel when the shape allows and XLA otherwise. A request that cannot be met falls back to
XLA with one logged line that says why, instead of failing at compile time.
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


def splash_unsupported_reason(platform: str, seq_len: int | None) -> str | None:
  """Why the splash kernel cannot run this model here (None: it can)."""
  if platform != "tpu":
    return f"the backend is {platform}, not a TPU"
  from gptjax import splash  # imports Pallas: only where a TPU kernel is wanted
  return splash.unsupported_reason(seq_len)


def resolve(requested: str, dtype: str, head_dim: int, platform: str | None = None,
            seq_len: int | None = None) -> str:
  """The kernel for this model: "xla", "cudnn" (jax.nn.dot_product_attention's GPU kernel)
  or "splash" (gptjax.splash, TPU)."""
  platform = platform or _target_platform or jax.default_backend()
  return _resolve(requested, dtype, head_dim, platform, seq_len)


@functools.lru_cache(maxsize=None)  # one log line per shape, not one per trace
def _resolve(requested: str, dtype: str, head_dim: int, platform: str,
             seq_len: int | None) -> str:
  if requested == "xla":
    return "xla"
  reasons = {"cudnn": cudnn_unsupported_reason(platform, dtype, head_dim),
             "splash": splash_unsupported_reason(platform, seq_len)}
  if requested == "auto":
    return next((kind for kind, reason in reasons.items() if reason is None), "xla")
  if reasons[requested] is None:
    return requested
  log_fallback(requested, reasons[requested])
  return "xla"


@functools.lru_cache(maxsize=None)  # once per reason
def log_fallback(kind: str, reason: str) -> None:
  log.warning("model.attention=%s falls back to xla: %s", kind, reason)


def causal(q_BTNH, k_BTKH, v_BTKH, requested: str, dtype: str, segment_ids_BT=None):
  """Causal self-attention of a whole sequence with the kernel `requested` resolves to;
  with `segment_ids_BT` a query sees only keys of its own segment (packed documents)."""
  B, T, N, H = q_BTNH.shape
  impl = resolve(requested, dtype, H, seq_len=T)
  if impl == "splash":
    from gptjax import splash
    reason = splash.mesh_unsupported_reason(B, N, k_BTKH.shape[2])
    if reason is None:
      return splash.causal_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT)
    log_fallback(requested, reason)
    impl = "xla"
  mask = None
  if segment_ids_BT is not None:  # XLA masks the scores; cuDNN takes the mask as a bias
    mask = (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])[:, None]
  return jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, mask=mask, is_causal=True,
                                      implementation=impl)
