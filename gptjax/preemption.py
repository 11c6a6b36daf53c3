"""Preemption: on SIGTERM (what a preempted Cloud TPU VM gets) save at a step every process
agrees on, then stop; the same command resumes from there exactly.

Multi-process runs use JAX's preemption sync point: the process that got the signal tells
the coordination service, and every process learns the same safe step (its own newest + 1),
so they all save the same checkpoint. One process alone needs no agreement: a signal
handler sets a flag that the loop reads after each step.
"""

from __future__ import annotations

import signal

import jax


class PreemptionWatch:

  def __init__(self):
    self._signalled = False
    self._previous = None
    if _sync_manager_running():
      return  # JAX's own SIGTERM handler feeds the sync point: keep ours out of its way
    try:
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    except ValueError:  # not the main thread (a test or a notebook): no notice, no stop
      self._previous = None

  def _on_signal(self, _signum, _frame):
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Must be called after every step, by every process, with the same steps."""
    if _sync_manager_running():
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _sync_manager_running() -> bool:
  # jax.distributed.initialize (the only way to more than one process) starts the sync
  # manager whenever this public option is on, as it is by default.
  return jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)
