"""Evaluators by name: `gptjax-eval --eval=NAME[,NAME]` and a run's `eval.evaluators` both
look them up here.

An evaluator is fn(loaded, options) -> EvalResult: `loaded` is a gptjax.load.Loaded (model,
params, tokenizer, mesh, config, step) and `options` its own ConfigDict, config.evals.NAME.
A new evaluator is a new module and one line below.
"""

from __future__ import annotations

import json
import os

import ml_collections

from gptjax import storage
from gptjax.errors import UserError
from gptjax.evals import accuracy, bias_probes, human_export, translation
from gptjax.evals.result import EvalResult

EVALUATORS = {
    "crows_pairs": bias_probes.crows_pairs,
    "winobias": bias_probes.winobias,
    "bleu": translation.bleu,
    "multiple_choice": accuracy.multiple_choice,
    "exact_match": accuracy.exact_match,
    "human_export": human_export.human_export,
}


def names(spec: str) -> list[str]:
  chosen = [n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in chosen if n not in EVALUATORS]
  if unknown:
    raise UserError(f"unknown evaluator(s) {unknown}; choose from {sorted(EVALUATORS)}")
  return chosen


def options_for(config, name: str) -> ml_collections.ConfigDict:
  """config.evals.NAME over the defaults (a run saved before an evaluator existed has none)."""
  from gptjax.config import base_config
  options = base_config().evals[name]
  saved = config.get("evals", {}).get(name) if config is not None else None
  if saved is not None:
    options.update(saved)
  return options


def with_overrides(options: ml_collections.ConfigDict, name: str, overrides) -> ml_collections.ConfigDict:
  """`overrides` ("key=value" strings) over `options`, each value read as its field's type."""
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep or key not in options:
      raise UserError(f"--eval_options: {item!r} is not key=value with a key of evals.{name} "
                      f"({', '.join(sorted(options))})")
    kind = type(options[key])
    try:
      options[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    except ValueError:
      raise UserError(f"--eval_options: {key}={value!r} is not a {kind.__name__}") from None
  return options


def label_for(name: str, overrides) -> str:
  """What a result is filed under (metrics keys eval/LABEL/..., W/evals/step_N/LABEL.*): the
  evaluator's name for the run's own settings; with overrides, they join the name (a path as
  its last component), so a test-set figure never lands on the run's validation curve and
  a greedy and a beam result on one checkpoint keep a file each."""
  if not overrides:
    return name
  parts = []
  for item in overrides:
    key, _, value = item.partition("=")
    parts.append(f"{key}={os.path.basename(value.rstrip('/')) or value}" if "/" in value
                 else item)
  return f"{name}[{','.join(parts)}]"


def run(loaded, name: str, config=None) -> EvalResult:
  return EVALUATORS[name](loaded, options_for(config or loaded.config, name))


def write_result(workdir: str, step: int, name: str, result: EvalResult) -> str:
  """W/evals/step_N/NAME.{md,json}; returns the Markdown path."""
  out = storage.join(workdir, "evals", f"step_{step}")
  storage.makedirs(out)
  storage.write_text(storage.join(out, f"{name}.json"), json.dumps(
      {"step": step, "figures": result.figures, "details": result.details}, indent=1,
      default=float))
  path = storage.join(out, f"{name}.md")
  storage.write_text(path, f"Step {step} of {workdir}.\n\n" + "\n".join(result.markdown) + "\n")
  return path
