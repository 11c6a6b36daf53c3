"""The XLA GPU flag preset the launchers apply (`train.xla_flags="auto"`; "none" turns it off).

XLA reads XLA_FLAGS once, when the first backend starts, and aborts on a flag it does not
know; so the preset is set before JAX starts, only on hosts with a CUDA plugin installed,
never over a flag the user already put in XLA_FLAGS, and a test checks that the installed
jaxlib parses every flag in it. On one GPU the collective flags have nothing to act on; they
are what multi-GPU data/FSDP runs need.
"""

from __future__ import annotations

import importlib.util
import os

from gptjax.errors import UserError

GPU_PRESET = {
    # Schedule collectives (FSDP all-gathers, gradient reduce-scatters and all-reduces) to
    # overlap with compute instead of in program order; NVIDIA's JAX containers set it too.
    "xla_gpu_enable_latency_hiding_scheduler": "true",
    # Run those collectives on a high-priority stream, so compute kernels do not starve them.
    "xla_gpu_enable_highest_priority_async_stream": "true",
    # Combine the many per-parameter gradient collectives into few large ones (128 MiB).
    "xla_gpu_all_reduce_combine_threshold_bytes": "134217728",
    "xla_gpu_all_gather_combine_threshold_bytes": "134217728",
    "xla_gpu_reduce_scatter_combine_threshold_bytes": "134217728",
    # Start loop iterations' collectives one iteration early (gradient-accumulation scan).
    "xla_gpu_enable_pipelined_all_gather": "true",
    "xla_gpu_enable_pipelined_reduce_scatter": "true",
    "xla_gpu_enable_pipelined_all_reduce": "true",
}
# JAX preallocates 75% of GPU memory by default; a training job owns the GPU, so take 90%
# (the rest stays for cuDNN/cuBLAS workspaces and the CUDA context).
GPU_ENV = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.90"}

_CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins.xla_cuda12",
                 "jax_plugins.xla_cuda13")


def cuda_plugin_installed() -> bool:
  def found(name):
    try:
      return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
      return False
  return any(found(name) for name in _CUDA_PLUGINS)


def merged_flags(existing: str, preset: dict[str, str]) -> str:
  """`existing` XLA_FLAGS plus every preset flag it does not already set."""
  set_already = {part.lstrip("-").split("=", 1)[0] for part in existing.split()}
  extra = [f"--{k}={v}" for k, v in preset.items() if k not in set_already]
  return " ".join([existing.strip(), *extra]).strip()


def apply_preset(mode: str, environ=os.environ) -> bool:
  """Set the GPU preset in `environ` when `mode` is "auto" and this is a GPU host."""
  if mode not in ("auto", "none"):
    raise UserError(f"train.xla_flags must be 'auto' or 'none', got {mode!r}")
  if mode == "none" or not cuda_plugin_installed() or environ.get("JAX_PLATFORMS") == "cpu":
    return False
  environ["XLA_FLAGS"] = merged_flags(environ.get("XLA_FLAGS", ""), GPU_PRESET)
  for key, value in GPU_ENV.items():
    environ.setdefault(key, value)
  return True


def prepare_host(config) -> None:
  """What every launcher does before JAX starts: the CPU device split and the GPU preset."""
  from gptjax import sharding
  sharding.split_host_cpu_for(config)
  apply_preset(config.train.xla_flags)
