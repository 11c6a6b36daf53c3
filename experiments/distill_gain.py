"""Does distillation help a small student at equal steps? configs/distill.py's chain.

    python -m experiments.distill_gain [--seeds=0,1,2]

Trains the teacher once (runs/distill_teacher), then per seed the distilled student
(configs/distill.py:student) and the same student trained on the data alone
(configs/distill.py:baseline): same shape, steps, data order and seed. Each is a
`gptjax-train` process; a finished run is not redone. Compares held-out cross-entropy (the
student's eval/ce, the baseline's eval/loss: both plain next-token nats on the last 10% of
tiny Shakespeare) and writes docs/results/distill_gain.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.results_files import host_info, host_line
from experiments.report import write_markdown
from gptjax.metrics import read_metrics


def train(variant: str, workdir: str, seed: int | None = None) -> list[dict]:
  cmd = [sys.executable, "-m", "gptjax.train", f"--config=configs/distill.py:{variant}",
         f"--workdir={workdir}", "--config.train.progress=False"]
  if seed is not None:
    cmd.append(f"--config.seed={seed}")
  print("+ gptjax-train", " ".join(cmd[3:]), flush=True)
  subprocess.run(cmd, check=True)
  return [r for r in read_metrics(workdir) if "eval/loss" in r]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--out", default="docs/results")
  args = parser.parse_args()
  teacher = train("teacher", "runs/distill_teacher")[-1]
  rows = {}
  for seed in (int(s) for s in args.seeds.split(",")):
    student = train("student", f"runs/distill_student_seed{seed}", seed)[-1]
    baseline = train("baseline", f"runs/distill_baseline_seed{seed}", seed)[-1]
    rows[seed] = {"distilled": student["eval/ce"], "baseline": baseline["eval/loss"],
                  "steps": student["step"]}
  distilled = np.array([r["distilled"] for r in rows.values()])
  baseline = np.array([r["baseline"] for r in rows.values()])
  gain = baseline - distilled
  host = host_line(host_info())
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, "distill_gain")
  with open(stem + ".json", "w") as f:
    json.dump({"teacher": teacher["eval/loss"], "rows": rows, "host": host}, f, indent=1)
  sd = (lambda x: x.std(ddof=1)) if len(rows) > 1 else (lambda x: float("nan"))
  lines = [f"# Distillation at equal steps, char-level tiny Shakespeare ({host})", "",
           "Written by `python -m experiments.distill_gain`: teacher `configs/distill.py:teacher`"
           f" (2.7M parameters, held-out loss {teacher['eval/loss']:.4f}); students "
           "`:student` (0.11M, 0.5 CE + 0.5 T² forward KL at T = 2) and `:baseline` (the same "
           "student, cross-entropy only), same seed and data order per row. Held-out "
           "cross-entropy, nats per character:", "",
           "| seed | baseline | distilled | gain |", "|---|---|---|---|"]
  for seed, r in rows.items():
    lines.append(f"| {seed} | {r['baseline']:.4f} | {r['distilled']:.4f} "
                 f"| {r['baseline'] - r['distilled']:+.4f} |")
  lines.append(f"| mean ± sd | {baseline.mean():.4f} ± {sd(baseline):.4f} | "
               f"{distilled.mean():.4f} ± {sd(distilled):.4f} | "
               f"{gain.mean():+.4f} ± {sd(gain):.4f} |")
  write_markdown(stem + ".md", lines)


if __name__ == "__main__":
  main()
