"""Checkpoints by wall-clock time (`checkpoint.every_minutes`), beside every N steps.

A preemption notice is short (about 30 s for a spot TPU VM), and a maintenance event without
autocheckpoint gives none, while a large run's checkpoint can take minutes to write. So
the regular cadence is the safety net, and it is better set in minutes than in steps, whose
duration changes with the model, the slice and the batch.

Every process must save the same steps, but their clocks differ. So process 0's clock
decides, and the decision is broadcast. That is a small collective that waits for the
device, so it runs only at logging steps (train.log_every), where the loop already waits
for the step's metrics.
"""

from __future__ import annotations

import time

import jax
import numpy as np

clock = time.monotonic  # tests replace it, in one process or in all


class WallClockCadence:

  def __init__(self, minutes: float):
    self.seconds = 60.0 * minutes
    self.last = clock()

  def due(self) -> bool:
    """Whether `minutes` have passed since the last save, by process 0's clock. Every
    process must call it at the same steps."""
    if self.seconds <= 0:
      return False
    late = clock() - self.last >= self.seconds
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      late = bool(multihost_utils.broadcast_one_to_all(np.asarray(late)))
    return late

  def saved(self) -> None:
    self.last = clock()
