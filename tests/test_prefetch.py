"""Prefetching runs ahead of the model; the checkpointed data position must not."""

import jax
import numpy as np

from gptjax import sharding
from gptjax.prefetch import DevicePrefetcher


class Counting:
  def __init__(self):
    self.i = 0

  def __next__(self):
    self.i += 1
    return {"tokens": np.full((8, 3), self.i, np.int32)}

  def get_state(self):
    return {"i": self.i}


def test_prefetched_batches_arrive_in_order_and_state_counts_only_consumed_ones():
  import ml_collections
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  source = Counting()
  batches = DevicePrefetcher(source, mesh, depth=3)
  assert batches.get_state() == {"i": 0}
  for k in range(1, 6):
    batch = next(batches)
    assert isinstance(batch["tokens"], jax.Array)
    assert int(batch["tokens"][0, 0]) == k
    assert batches.get_state() == {"i": k}  # the model has seen k batches
    assert source.i == k + 3  # while the source already ran `depth` ahead
