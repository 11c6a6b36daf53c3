"""Intervals for the figures evaluators report: a share (Wilson) and any statistic over
resampled items (bootstrap percentiles)."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: float, n: int) -> tuple[float, float]:
  """95% Wilson score interval of a share successes / n (ties may count half)."""
  if n == 0:
    return (math.nan, math.nan)
  p = successes / n
  centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
  half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
  return (centre - half, centre + half)


def bootstrap(per_item: list[list[float]], statistic=np.mean, n: int = 2000,
              seed: int = 0) -> tuple[float, float]:
  """95% percentile interval of `statistic` over the values of items drawn with replacement
  (an item's values stay together: several raters' ratings of one output, say)."""
  rng = np.random.default_rng(seed)
  draws = [statistic([v for i in rng.integers(len(per_item), size=len(per_item))
                      for v in per_item[i]]) for _ in range(n)]
  low, high = np.percentile(draws, [2.5, 97.5])
  return float(low), float(high)
