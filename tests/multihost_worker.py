"""One process of a multi-process test run (started by gptjax-launch in test_multihost.py).

    python tests/multihost_worker.py WORKDIR CONFIG_JSON [--record=DIR] [--sigterm_at=S]
        [--die_at=S] [--process=I] [--fast_clock]

Trains configs/tiny.py with the overrides in CONFIG_JSON ({"train.steps": 8, ...}) through
the trainer's own entry point (gptjax.distributed joins the processes). --record writes the
token rows this process put into each train batch to DIR/process_<i>.npz; --sigterm_at
sends this process SIGTERM after step S (a preemption notice), --die_at kills it outright
(SIGKILL) after step S; both only in process --process. --fast_clock makes process 0's
wall clock (the checkpoint cadence's) run a minute ahead at every reading; the others keep
the real one.
"""

import argparse
import importlib.util
import json
import os
import signal

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("overrides")
  parser.add_argument("--record", default="")
  parser.add_argument("--sigterm_at", type=int, default=0)
  parser.add_argument("--die_at", type=int, default=0)
  parser.add_argument("--process", type=int, default=0)
  parser.add_argument("--fast_clock", action="store_true")
  args = parser.parse_args()

  from gptjax import distributed, prefetch, train as train_lib
  from gptjax.errors import run_cli
  # configs/tiny.py itself (test_train's helper would bring conftest's 8-device setting)
  spec = importlib.util.spec_from_file_location("tiny", os.path.join(REPO, "configs", "tiny.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in json.loads(args.overrides).items():
    node, *path = key.split(".")
    target = config[node]
    for part in path[:-1]:
      target = target[part]
    target[path[-1]] = value
  distributed.initialize(True, config.train.heartbeat_timeout)
  import jax
  me = jax.process_index()

  if args.fast_clock and me == 0:
    from gptjax import checkpoint_cadence
    readings = iter(range(60, 10**9, 60))
    checkpoint_cadence.clock = lambda: next(readings)

  rows = []
  if args.record:
    class Recording(prefetch.DevicePrefetcher):
      def _fill(self):
        while len(self.queue) < max(self.depth, 1):
          local = next(self.iterator)
          rows.append(np.asarray(local["tokens"]))
          self.queue.append((prefetch.sharding.shard_batch(local, self.mesh),
                             self.iterator.get_state()))
    train_lib.DevicePrefetcher = Recording

  def hook(step, _state):
    if me != args.process:
      return
    if step == args.sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
    if step == args.die_at:
      os.kill(os.getpid(), signal.SIGKILL)

  def body():
    try:
      train_lib.train(config, args.workdir, hooks=[hook])
    finally:
      if args.record:
        os.makedirs(args.record, exist_ok=True)
        np.savez(os.path.join(args.record, f"process_{me}.npz"), tokens=np.stack(rows))
  run_cli(body)


if __name__ == "__main__":
  main()
