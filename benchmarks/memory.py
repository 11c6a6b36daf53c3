"""The planner checked against the memory XLA gives the real train step.

    python -m benchmarks.memory --config=configs/gpt2.py:774m [--config.x=y ...]
        [--target=h100|h100-8] [--name=NAME]

Compiles `gptjax-train`'s step for the config (sharded, donated) and compares
`gptjax-plan`'s per-device total with:
  compiled  XLA's own peak for the step (compiled.memory_analysis().peak_memory_in_bytes:
            arguments, outputs and the temporaries its buffer assignment schedules);
  measured  on a GPU, the allocator's peak_bytes_in_use after running three steps.
With --target=h100 the step is compiled for an H100 on any machine, no GPU needed
("deviceless" AOT; needs the CUDA plugin: pip install "jax[cuda12]"), from the target
description in benchmarks/gpu_targets/. Shapes only: no corpus is read, the vocabulary is the
config's (model.vocab_size, else data.tokenizer.vocab_size).

Writes benchmarks/results/memory/NAME.json and regenerates benchmarks/results/memory.md.
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks import results_files

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "memory")


def target_devices(target: str):
  """Compile-only devices of `target` (deviceless AOT), or the local devices."""
  import jax
  if not target:
    return jax.devices()
  from jax.experimental import topologies
  gpu, _, count = target.partition("-")  # h100 or h100-8 (one host with 8)
  path = os.path.join(HERE, "gpu_targets", f"{gpu}.txtpb")
  if not os.path.exists(path):
    raise SystemExit(f"error: no GPU description {path}; --target is one of "
                     f"{sorted(n[:-6] for n in os.listdir(os.path.dirname(path)))}")
  with open(path) as f:
    topology = topologies.get_topology_desc(platform="cuda", topology=f"1x1x{count or 1}",
                                            target_config=f.read())
  return topology.devices


def lower_step(run, config):
  """The run's train step lowered for abstract state and batch (no array is allocated)."""
  import jax
  import jax.numpy as jnp

  from gptjax import sharding, train
  from gptjax.checkpoint import abstract_with_shardings
  state = abstract_with_shardings(run.abstract, run.shardings)
  batch = {"tokens": jax.ShapeDtypeStruct((config.train.batch_size, config.data.seq_len + 1),
                                          jnp.int32, sharding=sharding.batch_sharding(run.mesh))}
  with sharding.rules_context(run.mesh):
    return train.jitted_step(run).lower(state, batch, run.frozen)


def measure(config, target: str) -> dict:
  import jax

  from gptjax import attention, chips, plan, sharding, train

  devices = target_devices(target)
  chip = chips.chip_for_device_kind(devices[0].device_kind)
  if chip is None:
    raise SystemExit(f"error: the planner has no chip for {devices[0].device_kind!r}; "
                     "compile for one with --target=h100")
  platform = "gpu" if target else jax.default_backend()
  with attention.compiling_for(platform):  # kernels for the devices the step is built for
    run = train.build_run(config, with_data=False, devices=list(devices))
    t0 = time.perf_counter()
    compiled = lower_step(run, config).compile()
    compile_s = time.perf_counter() - t0
    with sharding.rules_context(run.mesh):
      measured = None if target else _run_steps(run, compiled, config)
  planned = plan.plan(config, f"{chip.name}-{len(devices) * chip.cores_per_device}")
  compiled_peak = compiled.memory_analysis().peak_memory_in_bytes
  return {"device": f"{len(devices)} x {devices[0].device_kind}",
          "how": "deviceless compile" if target else "this machine",
          "compile_s": compile_s, "planned_bytes": planned["total_bytes"],
          "planned": planned["memory"], "compiled_bytes": compiled_peak,
          "measured_bytes": measured,
          "planned_over_compiled": planned["total_bytes"] / compiled_peak,
          "planned_over_measured": planned["total_bytes"] / measured if measured else None}


def _run_steps(run, compiled, config):
  """Peak bytes in use after three real steps (GPU/TPU), None where the backend has no stats."""
  import jax
  import numpy as np

  from gptjax import sharding, state as state_lib
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  state = state_lib.init_state(run.model, run.tx, run.mesh, run.shardings, config.seed)
  rows = np.random.RandomState(0).randint(0, run.model_cfg.vocab_size,
                                          (config.train.batch_size, config.data.seq_len + 1))
  batch = sharding.shard_batch({"tokens": rows.astype(np.int32)}, run.mesh)
  for _ in range(3):
    state, out = compiled(state, batch, run.frozen)
  jax.block_until_ready(out)
  return jax.devices()[0].memory_stats()["peak_bytes_in_use"]


def write_table() -> str:
  rows = results_files.load_all(RESULTS)
  gb = lambda b: f"{b / 1e9:.2f}" if b else "-"  # noqa: E731
  lines = ["# Planned vs compiled memory", "",
           "Generated by `python -m benchmarks.memory` (each row: its `command` in the JSON). "
           "GB per device; error = planned / compiled - 1.", "",
           "| run | device | how | planned | compiled | error | measured |",
           "|---|---|---|---|---|---|---|"]
  for name, r in rows:
    lines.append(f"| {name} | {r['device']} | {r['how']} | {gb(r['planned_bytes'])} | "
                 f"{gb(r['compiled_bytes'])} | {r['planned_over_compiled'] - 1:+.1%} | "
                 f"{gb(r['measured_bytes'])} |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(os.path.dirname(RESULTS), "memory.md"), "w") as f:
    f.write(text)
  return text


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import define_config_flag, run_app

  define_config_flag(None, "config file to check", lock_config=True)
  flags.DEFINE_string("target", "", "compile for these GPUs without them (h100, h100-8); "
                      "default: this machine's devices")
  flags.DEFINE_string("name", None, "result name (default: from the config and target)")
  FLAGS = flags.FLAGS

  def _main(_):
    import jax

    from gptjax.errors import run_cli
    if FLAGS.target:
      jax.config.update("jax_platforms", "cpu")  # the CUDA plugin only compiles here

    def body():
      result = {"command": " ".join(["python -m benchmarks.memory"] + sys.argv[1:])}
      result.update(measure(FLAGS.config, FLAGS.target))
      default = "_".join(filter(None, [results_files.config_name(sys.argv), FLAGS.target]))
      results_files.save(RESULTS, FLAGS.name or default, result)
      print(write_table())
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
