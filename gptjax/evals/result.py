"""What an evaluator returns."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class EvalResult:
  figures: dict[str, float]  # to metrics.jsonl as eval/NAME/KEY, and the curves in plots
  markdown: list[str]  # the result file's text: a table, with what was measured and how
  details: dict = dataclasses.field(default_factory=dict)  # the JSON result file's extra
