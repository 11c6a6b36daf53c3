"""Joining a multi-process (multi-host) run: `jax.distributed.initialize`, before JAX starts.

On a Cloud TPU VM slice every worker runs the same command and JAX finds its peers by itself
(`--config.train.distributed=True`, or the tpu_scripts launcher, which sets it). Elsewhere
the processes are named by environment variables, as torchrun's MASTER_ADDR/WORLD_SIZE/RANK:

  GPTJAX_COORDINATOR=host:port  GPTJAX_NUM_PROCESSES=N  GPTJAX_PROCESS_ID=i

(`gptjax-launch` sets them for N local processes). On CPU the processes exchange collectives
over gloo. A process that dies is noticed by the others within `train.heartbeat_timeout`
seconds: they stop with an error instead of waiting forever in a collective.
"""

from __future__ import annotations

import os

from gptjax.errors import UserError

ENV_COORDINATOR = "GPTJAX_COORDINATOR"
ENV_NUM_PROCESSES = "GPTJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GPTJAX_PROCESS_ID"


def requested(config_says: bool) -> bool:
  return config_says or any(os.environ.get(v, "0") not in ("", "0") for v in (
      "JAX_COORDINATOR_ADDRESS", ENV_COORDINATOR, "GPTJAX_DISTRIBUTED"))


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"{name}={value!r} must be an integer") from None


def initialize(config_says: bool = False, heartbeat_timeout: int = 100) -> None:
  """Join the run's other processes when the config or the environment asks; else nothing.
  Call before anything touches a JAX backend (a checkpoint manager does)."""
  import jax
  if not requested(config_says) or jax.distributed.is_initialized():
    return
  coordinator = os.environ.get(ENV_COORDINATOR)
  num, index = _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID)
  if coordinator and (num is None or index is None):
    raise UserError(f"{ENV_COORDINATOR} is set: set {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} "
                    "too (or launch with gptjax-launch)")
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu" or coordinator:
    # CPU devices of different processes talk over gloo (XLA's CPU default talks to none).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                               process_id=index, heartbeat_timeout_seconds=heartbeat_timeout)
  except ValueError as e:  # nothing to join: not a TPU slice or a known cluster
    raise UserError(f"a multi-host run was asked for (train.distributed or GPTJAX_DISTRIBUTED) "
                    f"but JAX found no cluster here ({e}): on a Cloud TPU slice it is found "
                    f"by itself; elsewhere set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and "
                    f"{ENV_PROCESS_ID}, or use gptjax-launch") from None
