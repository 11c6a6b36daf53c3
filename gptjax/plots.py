"""The loss curve of a run, drawn from its metrics.jsonl (so any run can be re-plotted)."""

from __future__ import annotations

import os

from gptjax import storage
from gptjax.metrics import read_metrics


def plot_loss_curve(workdir: str, path: str | None = None, title: str | None = None) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = read_metrics(workdir)
  path = path or storage.join(workdir, "loss_curve.png")
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
  ax.set_title(title or os.path.basename(storage.absolute(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)
  return path


# What each evaluator's panel draws from its eval/NAME/... figures, and a reference line.
EVAL_CURVES = {
    "bleu": (("bleu", "bleu_lowercase"), None),
    "crows_pairs": (("share",), 0.5),
    "winobias": (("share", "type1/share", "type2/share"), 0.5),
    "multiple_choice": (("accuracy", "accuracy_norm"), None),
    "exact_match": (("accuracy",), None),
}


def plot_eval_curves(workdir: str, path: str | None = None) -> str | None:
  """One panel per evaluator with figures in metrics.jsonl (gptjax.evals), over steps;
  None if the run has none."""
  rows = read_metrics(workdir)
  panels = [(name, keys, ref) for name, (keys, ref) in EVAL_CURVES.items()
            if any(f"eval/{name}/{keys[0]}" in r for r in rows)]
  if not panels:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  path = path or storage.join(workdir, "eval_curves.png")
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), dpi=110,
                           squeeze=False)
  for ax, (name, keys, ref) in zip(axes[0], panels):
    for key in keys:
      points = sorted({r["step"]: r[f"eval/{name}/{key}"] for r in rows
                       if f"eval/{name}/{key}" in r}.items())
      if points:
        ax.plot(*zip(*points), "o-", markersize=4, label=key)
    if ref is not None:
      ax.axhline(ref, color="gray", lw=0.6, ls=":")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)
  return path


def _save(fig, path: str) -> None:
  """Into a file or a bucket object (matplotlib writes either through a file object)."""
  with storage.open_file(path, "wb") as f:
    fig.savefig(f, format="png")
