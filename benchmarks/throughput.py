"""Throughput of a config's real train step, side by side with PyTorch references.

    python -m benchmarks.throughput --config=configs/shakespeare_char.py:cpu \
        [--config.x=y ...] [--torch[=nanogpt,hf]] [--rounds=3]
        [--windows=5 --steps=20 --warmup=3] [--name=NAME]

Builds the run exactly as `gptjax-train` does (same mesh, sharding, task, optimizer, donated
state), pulls real batches from the data pipeline and puts them on the devices before the
clock starts, then times `windows` windows of `steps` back-to-back steps with no host
synchronisation inside a window (one block_until_ready at each window's end; on a
multi-device CPU host every step is awaited, as in the trainer, see
gptjax.sharding.must_sync_each_step). Step time is window time / steps; the median and
spread are over windows.

FLOPs per token follow PaLM (appendix B): 6N + 12*L*T*d, N the parameters used in matrix
multiplies; the causal figure halves the attention term. MFU = tokens/s * FLOPs/token /
(peak bf16 FLOP/s per chip * chips), peak from gptjax.chips.CHIPS.

--torch times the PyTorch references at the same shape, each in its own process
(benchmarks.torch_common): `nanogpt` (benchmarks.torch_nanogpt, nanoGPT's architecture and
step, fused AdamW where PyTorch has it) and `hf` (benchmarks.torch_reference, Hugging Face
GPT-2 with torch's default AdamW); bare --torch runs both. Each round runs gptjax, then each
reference, so a noisy machine slows all alike; every side reports its median round.

Every result records its host (benchmarks.results_files.host_info: CPU model, cores, the
accelerator), and the table shows it per row.

Writes benchmarks/results/NAME.json and rewrites benchmarks/results/README.md, the table
the project README links to, from every JSON there.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

from benchmarks import results_files

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# --torch=NAME -> (module run as `python -m`, the column title in the table)
TORCH_REFS = {"nanogpt": ("benchmarks.torch_nanogpt", "PyTorch nanoGPT"),
              "hf": ("benchmarks.torch_reference", "PyTorch HF GPT-2")}


def measure_gptjax(config, windows: int, steps: int, warmup: int) -> dict:
  import jax

  from gptjax import metrics as metrics_lib, sharding, state as state_lib
  from gptjax.model import count_params
  from gptjax.train import build_run, jitted_step

  run = build_run(config)
  state = state_lib.init_state(run.model, run.tx, run.mesh, run.shardings, config.seed)
  step_fn = jitted_step(run)
  batches = [sharding.shard_batch(next(run.datasets.train), run.mesh)
             for _ in range(warmup + windows * steps)]
  with sharding.rules_context(run.mesh):
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batches[0], run.frozen).compile()
    compile_s = time.perf_counter() - t0
    for batch in batches[:warmup]:
      state, out = compiled(state, batch, run.frozen)
    jax.block_until_ready(out)
    window_times = []
    sync_each_step = sharding.must_sync_each_step()  # as the trainer does; see there
    for w in range(windows):
      t0 = time.perf_counter()
      for batch in batches[warmup + w * steps: warmup + (w + 1) * steps]:
        state, out = compiled(state, batch, run.frozen)
        if sync_each_step:
          jax.block_until_ready(out)
      jax.block_until_ready(out)
      window_times.append((time.perf_counter() - t0) / steps)
  loss = float(jax.device_get(out["train/loss"]))

  cfg = run.model_cfg
  params = count_params(state.params)
  seq_len = config.data.seq_len
  flops = metrics_lib.model_flops_per_token(state.params, cfg, seq_len)
  flops_causal = metrics_lib.model_flops_per_token(state.params, cfg, seq_len, causal=True)
  median = statistics.median(window_times)
  tokens_per_sec = config.train.batch_size * seq_len / median
  peak = metrics_lib.peak_flops_per_device()
  devices = jax.devices()
  memory = devices[0].memory_stats() or {}
  return {
      "framework": "gptjax", "jax_version": jax.__version__,
      "device": f"{len(devices)} x {devices[0].device_kind}",
      "mesh": dict(run.mesh.shape),
      "num_params": params, "vocab_size": cfg.vocab_size,
      "step_time_median_s": median, "step_time_min_s": min(window_times),
      "step_time_max_s": max(window_times),
      "tokens_per_sec": tokens_per_sec,
      "flops_per_token": flops, "flops_per_token_causal": flops_causal,
      "mfu": tokens_per_sec * flops / (peak * len(devices)) if peak else None,
      "compile_s": compile_s,
      "peak_device_memory_bytes": memory.get("peak_bytes_in_use"),
      "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "final_loss": loss,
  }


def measure_torch_in_subprocess(config, vocab_size: int, steps: int, warmup: int,
                                ref: str = "hf") -> dict:
  """A PyTorch reference (TORCH_REFS) in its own process: its thread pools never meet XLA's."""
  import subprocess
  args = [sys.executable, "-m", TORCH_REFS[ref][0], f"--vocab_size={vocab_size}",
          f"--num_layers={config.model.num_layers}", f"--num_heads={config.model.num_heads}",
          f"--embed_dim={config.model.embed_dim}", f"--seq_len={config.data.seq_len}",
          f"--batch_size={config.train.batch_size}", f"--steps={steps}", f"--warmup={warmup}",
          f"--dropout={config.model.dropout}",
          "--dtype=" + ("bfloat16" if config.model.dtype == "bfloat16" else "float32")]
  if not config.model.use_bias:
    args.append("--no_bias")
  out = subprocess.run(args, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if out.returncode:
    raise RuntimeError(f"PyTorch reference {ref} failed:\n{out.stderr[-2000:]}")
  return json.loads(out.stdout[out.stdout.index("{"):])


def _torch_sides(result: dict) -> dict:
  """{'nanogpt': ..., 'hf': ...} from a result; 'torch' in older files was the HF one."""
  sides = {ref: result.get(f"torch_{ref}") for ref in TORCH_REFS}
  if sides["hf"] is None:
    sides["hf"] = result.get("torch")
  return sides


def write_table() -> str:
  """benchmarks/results/README.md from every result JSON (the table is generated, not typed)."""
  rows = results_files.load_all(RESULTS)
  titles = [title for _, title in TORCH_REFS.values()]
  lines = [
      "# Benchmark results",
      "",
      "Generated by `python -m benchmarks.throughput` (each row: its `command` in the JSON).",
      "PyTorch columns: tokens/s (AdamW kernel) and gptjax's tokens/s over it; "
      "nanoGPT = benchmarks/torch_nanogpt.py, HF GPT-2 = benchmarks/torch_reference.py.",
      "",
      "| run | host | device | shape (L x d, T, batch) | gptjax tokens/s | step ms (min-max) "
      "| MFU | " + " | ".join(f"{t} tokens/s | gptjax / {t.removeprefix('PyTorch ')}"
                            for t in titles) + " |",
      "|---" * (7 + 2 * len(titles)) + "|",
  ]
  for name, r in rows:
    g, s = r["gptjax"], r["shape"]
    mfu = f"{g['mfu']:.1%}" if g.get("mfu") else "n/a (CPU)"
    cells = []
    for t in _torch_sides(r).values():
      if t:
        impl = f" ({t['adamw_impl']})" if t.get("adamw_impl") else ""
        cells += [f"{t['tokens_per_sec']:,.0f}{impl}",
                  f"{g['tokens_per_sec'] / t['tokens_per_sec']:.2f}x"]
      else:
        cells += ["-", "-"]
    lines.append(
        f"| {name} | {results_files.host_line(r.get('host'))} | {g['device']} | "
        f"{s['num_layers']} x {s['embed_dim']}, {s['seq_len']}, {s['batch_size']} | "
        f"{g['tokens_per_sec']:,.0f} | {g['step_time_median_s'] * 1e3:.1f} "
        f"({g['step_time_min_s'] * 1e3:.1f}-{g['step_time_max_s'] * 1e3:.1f}) | {mfu} | "
        + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(RESULTS, "README.md"), "w") as f:
    f.write(text)
  return text


def parse_torch_refs(argument) -> list[str]:
  """--torch's value: bare/true = every reference, false = none, else 'nanogpt,hf'."""
  if isinstance(argument, (list, tuple)):
    names = list(argument)
  else:
    text = str(argument).strip().lower()
    if text in ("true", "1", "all", "both"):
      return list(TORCH_REFS)
    if text in ("false", "0", "none", ""):
      return []
    names = [n.strip() for n in text.split(",") if n.strip()]
  unknown = [n for n in names if n not in TORCH_REFS]
  if unknown:
    raise ValueError(f"unknown PyTorch reference(s) {unknown}; choose from {list(TORCH_REFS)}")
  return list(dict.fromkeys(names))


def _define_torch_flag(flags) -> None:
  """--torch, --notorch, --torch=nanogpt,hf: a list flag that also parses as a boolean."""
  class Parser(flags.ArgumentParser):
    def parse(self, argument):
      return parse_torch_refs(argument)

    def flag_type(self):
      return "list"

  flags.DEFINE_flag(flags.Flag(
      Parser(), flags.CsvListSerializer(","), "torch", "false",
      "also time PyTorch references at the same shape: bare --torch = all of "
      f"{list(TORCH_REFS)}, or a comma list", boolean=True))


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import define_config_flag, run_app

  define_config_flag(None, "config file to benchmark", lock_config=True)
  flags.DEFINE_integer("windows", 5, "timed windows (median and spread are over these)")
  flags.DEFINE_integer("steps", 20, "back-to-back steps per window")
  flags.DEFINE_integer("warmup", 3, "untimed steps after compilation")
  flags.DEFINE_integer("rounds", 1, "alternating gptjax/PyTorch rounds; each side reports its "
                       "median round")
  _define_torch_flag(flags)
  flags.DEFINE_string("name", None, "result name (default: config file and arg)")
  flags.DEFINE_string("out", None, "write the JSON here instead (no table row): for "
                      "benchmarks.ablate")
  FLAGS = flags.FLAGS

  def _main(_):
    from gptjax import xla_flags
    from gptjax.errors import run_cli
    config = FLAGS.config
    xla_flags.prepare_host(config)

    def body():
      result = {
          "command": " ".join(["python -m benchmarks.throughput"] + sys.argv[1:]),
          "host": None,  # below, once the accelerator is known
          "shape": {"num_layers": config.model.num_layers, "num_heads": config.model.num_heads,
                    "embed_dim": config.model.embed_dim, "seq_len": config.data.seq_len,
                    "batch_size": config.train.batch_size},
      }
      # Alternate the frameworks for `rounds` rounds, so a noisy machine slows both alike;
      # each side reports its median round.
      refs = FLAGS.torch
      runs = {"gptjax": [], **{f"torch_{ref}": [] for ref in refs}}
      for _ in range(FLAGS.rounds):
        runs["gptjax"].append(measure_gptjax(config, FLAGS.windows, FLAGS.steps, FLAGS.warmup))
        for ref in refs:
          runs[f"torch_{ref}"].append(measure_torch_in_subprocess(
              config, runs["gptjax"][0]["vocab_size"], FLAGS.windows * FLAGS.steps,
              FLAGS.warmup, ref))
      result["host"] = results_files.host_info(_accelerator(runs["gptjax"][0]["device"]))
      for side, rounds in runs.items():
        result[side] = _median_round(rounds)
        result[f"{side}_rounds_tokens_per_sec"] = [r["tokens_per_sec"] for r in rounds]
      for ref in refs:
        result[f"gptjax_over_torch_{ref}"] = (result["gptjax"]["tokens_per_sec"]
                                              / result[f"torch_{ref}"]["tokens_per_sec"])
      if FLAGS.out:
        with open(FLAGS.out, "w") as f:
          json.dump(result, f, indent=2)
        return
      results_files.save(RESULTS, FLAGS.name or results_files.config_name(sys.argv), result)
      print(write_table())
    run_cli(body)

  run_app(_main, argv)


def _accelerator(device: str) -> str | None:
  """gptjax's '8 x NVIDIA H100 80GB HBM3' is the host's accelerator; '2 x cpu' is none."""
  return None if device.endswith(" x cpu") or device == "cpu" else device


def _median_round(rounds: list[dict]) -> dict:
  return sorted(rounds, key=lambda r: r["tokens_per_sec"])[len(rounds) // 2]


if __name__ == "__main__":
  main()
