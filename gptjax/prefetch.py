"""Batches put on the devices ahead of the step that uses them.

Transfers overlap the running step instead of following it. Each prefetched batch carries
the data-iterator state *after* it was drawn, so a checkpoint records the position of the
last batch the model actually consumed, not of the batches waiting in the queue.
"""

from __future__ import annotations

import collections

from gptjax import sharding


class DevicePrefetcher:

  def __init__(self, iterator, mesh, depth: int = 2):
    self.iterator, self.mesh, self.depth = iterator, mesh, max(depth, 0)
    self.queue: collections.deque = collections.deque()
    self.consumed_state = iterator.get_state()

  def _fill(self) -> None:
    while len(self.queue) < max(self.depth, 1):
      batch = sharding.shard_batch(next(self.iterator), self.mesh)  # async host->device copy
      self.queue.append((batch, self.iterator.get_state()))

  def __iter__(self):
    return self

  def __next__(self):
    self._fill()
    batch, self.consumed_state = self.queue.popleft()
    if self.depth:
      self._fill()  # start the next transfers while this batch's step runs
    return batch

  def get_state(self) -> dict:
    """Position after the last batch handed out: what a checkpoint must record."""
    return self.consumed_state
