"""Evaluation of a checkpoint: held-out loss and perplexity over a whole split, and the
evaluators of gptjax/evals/ by name.

    gptjax-eval --workdir=W [--split=validation] [--step=N] [--max_batches=0] [--data_path=P]
    gptjax-eval --workdir=W --eval=crows_pairs,winobias [--step=N]
    gptjax-eval --workdir=W --eval=bleu --eval_options=path=DATA/test_2016_flickr,beams=5

--data_path evaluates on another corpus (its held-out split, tokenized with the checkpoint's
tokenizer): a model imported by gptjax-convert has no corpus of its own.

"loss" (the default) prints the metrics and appends them, with the checkpoint step, to
W/eval_results.jsonl. Each other evaluator writes W/evals/step_N/NAME.{md,json} and appends
its figures (eval/NAME/...) at the checkpoint's step to W/metrics.jsonl, where plots find them.
Evaluator settings come from the run's config.evals.NAME; --eval_options overrides some, for
the one evaluator named, and its results are then filed under a label of their own
(NAME[options], or --eval_label): another data set's figure is not the run's curve.
"""

from __future__ import annotations

import json

import jax

from gptjax import sharding, storage
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
    storage.append_text(storage.join(workdir, "eval_results.jsonl"), json.dumps(results) + "\n")
  return results


def run_evaluators(workdir: str, names: list[str], step: int | None = None,
                   overrides: list[str] = (), label: str = "") -> dict:
  """Registry evaluators on one checkpoint; their figures, and where each wrote its table.
  `overrides` ("key=value") change the options of the one evaluator named; its results are
  then filed under `label` (default: registry.label_for)."""
  from gptjax.evals import registry
  from gptjax.load import load_workdir
  from gptjax.metrics import MetricsWriter

  if overrides and len(names) != 1:
    raise UserError("--eval_options sets the options of one evaluator: name exactly one in --eval")
  loaded = load_workdir(workdir, step)
  row, tables = {}, {}
  for name in names:
    options = registry.with_overrides(registry.options_for(loaded.config, name), name, overrides)
    result = registry.EVALUATORS[name](loaded, options)
    filed = label or registry.label_for(name, overrides)
    row.update({f"eval/{filed}/{k}": v for k, v in result.figures.items()})
    if jax.process_index() == 0:
      tables[filed] = registry.write_result(workdir, loaded.step, filed, result)
  writer = MetricsWriter(workdir)
  writer.write(loaded.step, row)
  writer.close()
  if jax.process_index() == 0:
    from gptjax.plots import plot_eval_curves
    plot_eval_curves(workdir)
  return {"step": loaded.step, **row, "tables": tables}


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("workdir", None, "run folder written by gptjax-train", required=True)
  flags.DEFINE_string("split", "validation", "held-out split to evaluate")
  flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
  flags.DEFINE_integer("max_batches", 0, "evaluate only this many batches (0 = whole split)")
  flags.DEFINE_string("data_path", "", "evaluate on this corpus instead of the run's own")
  flags.DEFINE_list("eval", ["loss"], "what to evaluate: loss and/or gptjax.evals names")
  flags.DEFINE_list("eval_options", [], "key=value,... over config.evals.NAME of the one "
                    "evaluator named, e.g. path=DATA,beams=1")
  flags.DEFINE_string("eval_label", "", "with --eval_options: file the results as "
                      "eval/LABEL/... (default: the name with the options, e.g. "
                      "bleu[path=test_2016_flickr,beams=5])")
  FLAGS = flags.FLAGS

  def evaluate_all():
    from gptjax.evals import registry
    names = registry.names(",".join(n for n in FLAGS.eval if n != "loss"))
    if "loss" in FLAGS.eval:
      print(json.dumps(evaluate_workdir(FLAGS.workdir, FLAGS.split, FLAGS.step,
                                        FLAGS.max_batches, FLAGS.data_path)))
    if names:
      print(json.dumps(run_evaluators(FLAGS.workdir, names, FLAGS.step, FLAGS.eval_options,
                                      FLAGS.eval_label)))

  def _main(_):
    run_cli(evaluate_all)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
