"""Sweeps of learning rate, batch size, epochs, or any config key: one training run per point.

    python -m experiments.sweep --config=configs/shakespeare_char.py:cpu --name=lr_batch \
        --grid=optim.lr=3e-4,1e-3,3e-3 --grid=train.batch_size=12,48 --grid=epochs=1 \
        [--seeds=0,1] [--root=runs/sweeps] [--out=docs/results] \
        [-- --config.data.path=../shared/data/tinyshakespeare/input.txt ...]

The points are the product of the --grid lists (times --seeds). Each is one `gptjax-train`
process in ROOT/NAME/POINT, so every point is a command a user could type and its workdir
holds everything gptjax-eval or gptjax-sample need. An interrupted sweep resumes: a finished
point is read back, not rerun, and a half-done one resumes from its checkpoint.

`epochs=E` is the one grid key that is not a config key: it sets train.steps to E passes over
the training tokens (as the trainer counts them) at the point's batch size and seq_len,
rounded up, so a batch-size sweep at fixed epochs compares equal token budgets. The schedule
follows (cosine decay over train.steps unless optim.decay_steps is set).

Writes OUT/sweep_NAME.{md,json,png}: per point its steps, tokens, final and best held-out
loss and wall time (mean ± sd over seeds when there are several), the best point marked; the
figure draws final held-out loss against the first grid key, one line per value of the
others, and every point's held-out curve against tokens seen.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from gptjax.errors import UserError, run_cli

EPOCHS = "epochs"


def load_config(spec: str, overrides: list[str]):
  """The config `gptjax-train --config=SPEC OVERRIDES...` would train, read the same way."""
  from absl import flags
  from ml_collections import config_flags

  from gptjax.errors import flag_error_message
  argv = ["sweep", f"--config={spec}", *overrides]
  values = flags.FlagValues()
  try:
    config_flags.DEFINE_config_file("config", spec, "config file", flag_values=values,
                                    sys_argv=argv)
    values(argv)
    values.config.keys()  # ml_collections reports a bad file or override on first use
  except Exception as e:  # noqa: BLE001: a bad file, key or value is the user's to fix
    raise UserError(flag_error_message(e, argv)) from None
  return values.config


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
  """["optim.lr=1e-3,3e-3", ...] -> [("optim.lr", ["1e-3", "3e-3"]), ...]."""
  grid = []
  for spec in specs:
    key, sep, values = spec.partition("=")
    values = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not values:
      raise UserError(f"--grid={spec}: write KEY=V1,V2,... with a config key such as "
                      f"optim.lr, or {EPOCHS}")
    if key in [k for k, _ in grid]:
      raise UserError(f"--grid={spec}: {key} is swept twice; give its values in one --grid")
    grid.append((key, values))
  if not grid:
    raise UserError("no --grid: give at least one, e.g. --grid=optim.lr=3e-4,1e-3,3e-3")
  return grid


def points(grid, seeds: list[int]) -> list[dict]:
  """Every combination of the grid's values (first key slowest), for each seed."""
  keys = [k for k, _ in grid]
  return [{**dict(zip(keys, combo)), "seed": seed}
          for combo in itertools.product(*(values for _, values in grid)) for seed in seeds]


def point_name(point: dict, with_seed: bool) -> str:
  """`lr=0.001,batch_size=12` (the last part of each key): a readable folder name."""
  parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items() if k != "seed"]
  return ",".join(parts + ([f"seed={point['seed']}"] if with_seed else []))


def steps_for_epochs(config, epochs: float, train_tokens: int) -> int:
  return max(1, math.ceil(epochs * train_tokens / (config.train.batch_size * config.data.seq_len)))


def train_tokens_of(config) -> int:
  """Training tokens of the config's data, as the trainer counts them (prepares it if needed,
  into the same cache the run then reads)."""
  from gptjax.tasks import make_task
  return make_task(config).datasets().train_tokens


def point_overrides(spec: str, extra: list[str], point: dict, tokens_cache: dict) -> list[str]:
  """The `--config.*` flags of one point, checked by loading the config they make."""
  flags = [*extra, f"--config.seed={point['seed']}"]
  flags += [f"--config.{k}={v}" for k, v in point.items() if k not in ("seed", EPOCHS)]
  config = load_config(spec, flags)
  if EPOCHS in point:
    try:
      epochs = float(point[EPOCHS])
    except ValueError:
      raise UserError(f"--grid={EPOCHS}=...: {point[EPOCHS]!r} is not a number") from None
    data_key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    if data_key not in tokens_cache:
      tokens_cache[data_key] = train_tokens_of(config)
    flags.append(f"--config.train.steps={steps_for_epochs(config, epochs, tokens_cache[data_key])}")
    load_config(spec, flags)
  return flags


def run_point(spec: str, flags: list[str], workdir: str) -> dict:
  """Train one point (or read it back when this exact command already finished there)."""
  command = [sys.executable, "-m", "gptjax.train", f"--config={spec}", f"--workdir={workdir}",
             "--config.train.progress=False", *flags]
  record_path = os.path.join(workdir, "sweep_point.json")
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
    if record["command"] == command[3:]:
      return record
  print("+ gptjax-train " + " ".join(command[3:]), flush=True)
  start = time.perf_counter()
  done = subprocess.run(command, check=False)
  if done.returncode:
    raise UserError(f"the run in {workdir} exited with code {done.returncode} (its error is "
                    "above); fix it and run the sweep again: finished points are kept")
  record = {"command": command[3:], "wall_s": round(time.perf_counter() - start, 1)}
  with open(record_path, "w") as f:
    json.dump(record, f, indent=1)
  return record


def summarise(workdir: str, config) -> dict:
  """What the table shows of one finished run, from its metrics.jsonl."""
  from gptjax.metrics import read_metrics
  rows = read_metrics(workdir)
  evals = [r for r in rows if "eval/loss" in r]
  if not evals:
    raise UserError(f"{workdir} has no held-out loss: set eval.every so the run evaluates")
  best = min(evals, key=lambda r: r["eval/loss"])
  tokens_per_step = config.train.batch_size * config.data.seq_len
  return {"steps": evals[-1]["step"], "tokens": evals[-1]["step"] * tokens_per_step,
          "final_eval_loss": evals[-1]["eval/loss"], "best_eval_loss": best["eval/loss"],
          "best_step": best["step"],
          "curve": [(r["step"] * tokens_per_step, r["eval/loss"]) for r in evals]}


def run_sweep(spec: str, grid, seeds: list[int], extra: list[str], root: str) -> list[dict]:
  """Every point checked first (a bad key or value stops the sweep before any run), then
  trained in turn; one result dict per point."""
  planned, tokens_cache = [], {}
  for point in points(grid, seeds):
    flags = point_overrides(spec, extra, point, tokens_cache)
    planned.append((point, flags, os.path.join(root, point_name(point, len(seeds) > 1))))
  results = []
  for point, flags, workdir in planned:
    record = run_point(spec, flags, workdir)
    results.append({"point": point, "workdir": workdir, "wall_s": record["wall_s"],
                    **summarise(workdir, load_config(spec, flags))})
  return results


def _number(text: str) -> float | None:
  try:
    return float(text)
  except ValueError:
    return None


def write_report(results: list[dict], grid, spec: str, extra: list[str], name: str,
                 out: str) -> str:
  from benchmarks.results_files import host_info, host_line
  from experiments.report import write_markdown
  keys = [k for k, _ in grid]
  groups: dict[tuple, list[dict]] = {}
  for r in results:
    groups.setdefault(tuple(r["point"][k] for k in keys), []).append(r)
  best = min(groups, key=lambda g: np.mean([r["final_eval_loss"] for r in groups[g]]))
  seeds = sorted({r["point"]["seed"] for r in results})
  several = len(seeds) > 1

  def cell(values, digits):
    mean = np.mean(values)
    return (f"{mean:.{digits}f} ± {np.std(values, ddof=1):.{digits}f}" if several
            else f"{mean:.{digits}f}")

  host = host_line(host_info())
  command = " ".join(["python -m experiments.sweep", f"--config={spec}", f"--name={name}",
                      *(f"--grid={k}={','.join(v)}" for k, v in grid),
                      *([f"--seeds={','.join(map(str, seeds))}"] if several else []),
                      *(["--", *extra] if extra else [])])
  lines = [f"# Sweep {name} ({host})", "", f"Written by `{command}`.", "",
           "Each point is one `gptjax-train` run (its workdir under runs/sweeps/"
           f"{name}/). Held-out loss: mean next-token loss over the whole held-out split"
           + (f", mean ± sd over seeds {seeds}" if several else f", seed {seeds[0]}")
           + "; the lowest final loss in bold.", "",
           "| " + " | ".join(keys) + " | steps | tokens | final held-out loss | best (step) "
           "| wall time |", "|" + "---|" * (len(keys) + 5)]
  for group, runs in groups.items():
    final = cell([r["final_eval_loss"] for r in runs], 4)
    if group == best:
      final = f"**{final}**"
    lines.append("| " + " | ".join(group) + f" | {runs[0]['steps']:,} | {runs[0]['tokens']:,} "
                 f"| {final} | {cell([r['best_eval_loss'] for r in runs], 4)} "
                 f"({runs[0]['best_step']:,}) | {cell([r['wall_s'] for r in runs], 0)} s |")
  os.makedirs(out, exist_ok=True)
  stem = os.path.join(out, f"sweep_{name}")
  with open(stem + ".json", "w") as f:
    json.dump({"command": command, "host": host, "grid": grid, "results": results}, f, indent=1)
  _plot(groups, keys, stem + ".png")
  lines += ["", f"![final held-out loss against {keys[0]}]({os.path.basename(stem)}.png)"]
  write_markdown(stem + ".md", lines)
  return stem


def _plot(groups: dict, keys: list[str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from experiments.report import save_figure
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
  lines: dict[tuple, list] = {}
  for group, runs in groups.items():
    x = _number(group[0])
    if x is not None:
      lines.setdefault(group[1:], []).append((x, np.mean([r["final_eval_loss"] for r in runs])))
  for rest, pts in lines.items():
    label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys[1:], rest)) or "final"
    left.plot(*zip(*sorted(pts)), "o-", label=label)
  xs = [x for pts in lines.values() for x, _ in pts]
  if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
    left.set_xscale("log")
  left.set_xlabel(keys[0])
  left.set_ylabel("final held-out loss (nats/token)")
  for group, runs in groups.items():
    right.plot(*zip(*runs[0]["curve"]), ".-", markersize=3,
               label=",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, group)))
  right.set_xlabel("tokens seen")
  right.set_ylabel("held-out loss")
  save_figure(fig, [left, right], path)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  parser.add_argument("--name", required=True, help="names the runs' folder and the report")
  parser.add_argument("--grid", action="append", default=[],
                      help="KEY=V1,V2,... (repeat for more keys); KEY epochs sets train.steps")
  parser.add_argument("--seeds", default="0", help="comma-separated seeds, each a full grid")
  parser.add_argument("--root", default="runs/sweeps", help="the runs go in ROOT/NAME/POINT")
  parser.add_argument("--out", default="docs/results")
  parser.add_argument("extra", nargs="*", help="--config.x=y flags shared by every point")
  args = parser.parse_args(argv)

  def body():
    try:
      seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
      raise UserError(f"--seeds={args.seeds}: give integers, e.g. 0,1,2") from None
    grid = parse_grid(args.grid)
    results = run_sweep(args.config, grid, seeds, args.extra, os.path.join(args.root, args.name))
    write_report(results, grid, args.config, args.extra, args.name, args.out)
  run_cli(body)


if __name__ == "__main__":
  main()
