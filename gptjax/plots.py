"""The loss curve of a run, drawn from its metrics.jsonl (so any run can be re-plotted)."""

from __future__ import annotations

import os

from gptjax.metrics import read_metrics


def plot_loss_curve(workdir: str, path: str | None = None, title: str | None = None) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = read_metrics(workdir)
  path = path or os.path.join(workdir, "loss_curve.png")
  fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
  for key, style, label in (("train/loss", "-", "train (window mean)"),
                            ("eval/loss", "o-", "held-out (whole split)")):
    points = [(r["step"], r[key]) for r in rows if key in r]
    if points:
      ax.plot(*zip(*points), style, label=label, markersize=4)
  evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
  if evals:
    ax.axhline(min(evals), color="gray", lw=0.6, ls=":")
    ax.annotate(f"best held-out {min(evals):.4f}", xy=(0.98, 0.9), xycoords="axes fraction",
                ha="right")
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats/token)")
  ax.set_title(title or os.path.basename(os.path.abspath(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
