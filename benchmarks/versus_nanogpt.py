"""Whole-command wall time of shakespeare_char:cpu against nanoGPT's own train.py, in turns.

    python -m benchmarks.versus_nanogpt --nanogpt=DIR \
        [--data=../shared/data/tinyshakespeare/input.txt] [--rounds=2] [--variants=...]

DIR is a checkout of nanoGPT (github.com/karpathy/nanoGPT; not part of this repository)
whose `data/shakespeare_char/prepare.py` has been run, with torch and numpy importable by this
Python. Each round runs, one after the other and each timed as a whole process (start-up,
data preparation, compilation, every evaluation and the final sample included):

  nanoGPT: python train.py config/train_shakespeare_char.py --device=cpu --compile=False
           --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
           --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
           (its README's CPU command)
  gptjax:  gptjax-train --config=configs/shakespeare_char.py:cpu --config.data.path=DATA
           plus each variant's overrides (default: none, and `eval.max_batches=1`, which
           evaluates 16,384 held-out tokens like nanoGPT's 2 x 15,360, instead of all 111,540)

Reports per command the median wall time over rounds, its final held-out loss and its median
step time, with the host's CPU, and writes benchmarks/results/versus_nanogpt/
{shakespeare_char_cpu.json,README.md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import results_files

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "versus_nanogpt")

NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
                "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                "--lr_decay_iters=2000", "--dropout=0.0"]
DEFAULT_VARIANTS = ["", "--config.eval.max_batches=1"]


def run_nanogpt(nanogpt_dir: str) -> dict:
  out_dir = tempfile.mkdtemp(prefix="nanogpt-out-")
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "train.py", *NANOGPT_ARGS, f"--out_dir={out_dir}"],
                        cwd=nanogpt_dir, capture_output=True, text=True, check=True)
  wall = time.perf_counter() - t0
  evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)
  step_ms = [float(ms) for i, ms in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms",
                                                proc.stdout) if int(i) >= 10]
  return {"wall_s": wall, "final_loss": float(evals[-1][2]),
          "loss_kind": "mean of 20 random validation batches",
          "median_step_ms": statistics.median(step_ms)}


def run_gptjax(data: str, variant: str) -> dict:
  workdir = tempfile.mkdtemp(prefix="gptjax-run-")
  command = ["gptjax-train", "--config=configs/shakespeare_char.py:cpu",
             f"--config.data.path={data}", f"--workdir={workdir}",
             "--config.train.progress=false", *variant.split()]
  t0 = time.perf_counter()
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
  wall = time.perf_counter() - t0
  final = next(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  step_ms = [1000 * r["perf/step_time"] for r in rows if "perf/step_time" in r]
  return {"wall_s": wall, "final_loss": final["eval/loss"],
          "loss_kind": f"{int(final['eval/tokens']):,} held-out tokens",
          "median_step_ms": statistics.median(step_ms)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--nanogpt", required=True, help="a nanoGPT checkout, data prepared")
  parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data",
                                                     "tinyshakespeare", "input.txt"))
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS,
                      help="gptjax override sets ('' = the config as it is)")
  args = parser.parse_args()
  if not os.path.exists(os.path.join(args.nanogpt, "data", "shakespeare_char", "train.bin")):
    raise SystemExit(f"error: {args.nanogpt} is not a nanoGPT checkout with "
                     "data/shakespeare_char prepared: run its prepare.py first")
  data = os.path.abspath(args.data)
  runs = {"nanoGPT train.py": [], **{f"gptjax {v}".strip(): [] for v in args.variants}}
  for r in range(args.rounds):
    runs["nanoGPT train.py"].append(run_nanogpt(args.nanogpt))
    for v in args.variants:
      runs[f"gptjax {v}".strip()].append(run_gptjax(data, v))
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in runs.items()),
          flush=True)
  result = {"host": results_files.host_info(), "rounds": args.rounds, "runs": runs}
  results_files.save(RESULTS, "shakespeare_char_cpu", result)
  lines = [f"Host: {results_files.host_line(result['host'])}; {args.rounds} alternating rounds",
           "", "| command | wall time (median, rounds) | held-out loss | median step |",
           "|---|---|---|---|"]
  for name, rs in runs.items():
    walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
    lines.append(f"| {name} | {statistics.median(r['wall_s'] for r in rs):.1f} s ({walls}) | "
                 f"{rs[0]['final_loss']:.4f} ({rs[0]['loss_kind']}) | "
                 f"{statistics.median(r['median_step_ms'] for r in rs):.1f} ms |")
  with open(os.path.join(RESULTS, "README.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
