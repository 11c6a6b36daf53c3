"""Reproduce nanoGPT's character-level Shakespeare and record the figures the README shows.

    python -m experiments.reproduce_nanogpt [--arg=cpu] [--data=../shared/data/tinyshakespeare/input.txt]
        [--name=STEM] [-- --config.seed=1 ...]

Times the whole `gptjax-train` command as a user runs it (start-up, data preparation,
compilation, evaluations and the final sample included), then writes
docs/results/shakespeare_char_<arg>.json and the loss curve PNG beside it.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from gptjax.metrics import read_metrics
from gptjax.plots import plot_loss_curve

NANOGPT = {  # public reference figures (../shared/data/README.md)
    "cpu": {"eval/loss": 1.88, "wall_s": 160.0, "note": "nanoGPT, same 2-core CPU kind"},
    "gpu": {"eval/loss": 1.4697, "wall_s": 180.0, "note": "nanoGPT, one A100"},
}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--arg", default="cpu", help="shakespeare_char.py arg: cpu or gpu")
  parser.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--out", default="docs/results")
  parser.add_argument("--name", default=None, help="result file stem (default shakespeare_char_ARG)")
  parser.add_argument("overrides", nargs="*", help="extra --config.x=y flags")
  args = parser.parse_args()
  name = args.name or f"shakespeare_char_{args.arg}"
  workdir = args.workdir or f"runs/{name}"
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resume
  config = "configs/shakespeare_char.py" + (f":{args.arg}" if args.arg != "gpu" else "")
  cmd = [sys.executable, "-m", "gptjax.train", f"--config={config}", f"--workdir={workdir}",
         f"--config.data.path={args.data}", *args.overrides]
  start = time.perf_counter()
  subprocess.run(cmd, check=True)
  wall = time.perf_counter() - start

  rows = read_metrics(workdir)
  evals = [r for r in rows if "eval/loss" in r]
  perf = [r["perf/tokens_per_sec"] for r in rows if "perf/tokens_per_sec" in r]
  result = {
      "command": " ".join(["gptjax-train"] + cmd[3:]),
      "wall_s": round(wall, 1),
      "final_eval_loss": round(evals[-1]["eval/loss"], 4),
      "best_eval_loss": round(min(r["eval/loss"] for r in evals), 4),
      "steps": evals[-1]["step"],
      "median_tokens_per_sec": round(sorted(perf)[len(perf) // 2]) if perf else None,
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      "reference": NANOGPT.get(args.arg),
  }
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, name)
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=2)
  plot_loss_curve(workdir, stem + ".png",
                  title=f"{name}: held-out {result['final_eval_loss']}, "
                        f"{result['wall_s']:.0f}s wall")
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
