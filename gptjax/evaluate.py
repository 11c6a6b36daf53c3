"""Held-out evaluation of a checkpoint: loss and perplexity over a whole split.

    gptjax-eval --workdir=W [--split=validation] [--step=N] [--max_batches=0] [--data_path=P]

--data_path evaluates on another corpus (its held-out split, tokenized with the checkpoint's
tokenizer): a model imported by gptjax-convert has no corpus of its own.

Prints the metrics and appends them, with the checkpoint step, to W/eval_results.jsonl.
"""

from __future__ import annotations

import json
import os

import jax

from gptjax import sharding
from gptjax.errors import UserError


def evaluate_workdir(workdir: str, split: str = "validation", step: int | None = None,
                     max_batches: int = 0, data_path: str = "") -> dict:
  from gptjax.load import load_workdir
  from gptjax.tasks import make_task
  from gptjax.train import evaluate, make_eval_step

  loaded = load_workdir(workdir, step)
  if data_path:
    loaded.config.data.path, loaded.config.data.tfds_name = data_path, ""
  task = make_task(loaded.config)
  datasets = task.datasets(tokenizer=loaded.tokenizer)
  if split not in datasets.eval_splits:
    raise UserError(f"--split={split!r} is not one of {sorted(datasets.eval_splits)}")
  task.bind(loaded.model)
  with sharding.rules_context(loaded.mesh):
    results = evaluate(make_eval_step(task, loaded.mesh), loaded.params,
                       task.init_frozen(loaded.mesh), {split: datasets.eval_splits[split]},
                       loaded.mesh, max_batches, task.weight_unit,
                       task.perplexity_of)
  results = {"step": loaded.step, "split": split, **results}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval_results.jsonl"), "a") as f:
      f.write(json.dumps(results) + "\n")
  return results


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("workdir", None, "run folder written by gptjax-train", required=True)
  flags.DEFINE_string("split", "validation", "held-out split to evaluate")
  flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
  flags.DEFINE_integer("max_batches", 0, "evaluate only this many batches (0 = whole split)")
  flags.DEFINE_string("data_path", "", "evaluate on this corpus instead of the run's own")
  FLAGS = flags.FLAGS

  def _main(_):
    run_cli(lambda: print(json.dumps(evaluate_workdir(
        FLAGS.workdir, FLAGS.split, FLAGS.step, FLAGS.max_batches, FLAGS.data_path))))

  run_app(_main, argv)


if __name__ == "__main__":
  main()
