"""What every experiment module ends with: a figure and a Markdown table in docs/results."""

from __future__ import annotations


def save_figure(fig, axes, path: str) -> None:
  """Grid and legend on each of `axes`, then the figure to `path`, closed."""
  import matplotlib.pyplot as plt
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_markdown(path: str, lines: list[str]) -> None:
  """The report to `path`, and to stdout for whoever ran the command."""
  text = "\n".join(lines) + "\n"
  with open(path, "w") as f:
    f.write(text)
  print(text, end="")
