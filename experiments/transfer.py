"""Transfer learning: does a model pretrained on other text learn a target corpus faster?

    python -m experiments.transfer [--source=../shared/data/multi30k/train.en.gz]
        [--target=../shared/data/tinyshakespeare/input.txt] [--source_steps=2000]
        [--steps=100,300,1000] [--seeds=0] [--name=captions_to_shakespeare]
        [--config=configs/shakespeare_char.py:cpu] [-- --config.x=y ...]

1. One character vocabulary for both corpora (ROOT/chars.json), so every run scores the same
   tokens and the two arms' losses compare directly.
2. The source model: the config trained for --source_steps on the source text (ROOT/source).
3. For each fine-tuning budget (a whole run of that many steps, its schedule over them) and
   seed, two runs on the target corpus: from scratch, and from the source model
   (`--config.init.workdir`); same architecture, data order, schedule and held-out split.
   Both evaluate their starting weights (`eval.at_start`): the transferred arm's step-0
   loss is the source model's zero-shot loss on the target.
Every run is a `gptjax-train` command in ROOT/... (ROOT = runs/transfer/NAME); a finished run
is read back, not redone (experiments.sweep's run_point). Writes OUT/transfer_NAME.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from experiments import sweep
from gptjax import storage
from gptjax.errors import UserError, run_cli

ARMS = {"scratch": "from scratch", "transfer": "from the source model"}


def shared_vocabulary(texts: list[str], path: str) -> str:
  """A char tokenizer of every character in `texts`, written to `path` (once)."""
  from gptjax.data.tokenizers import CharTokenizer
  if not os.path.exists(path):
    storage.write_text(path, json.dumps(CharTokenizer.from_texts(texts).to_json()))
  return path


def plain_text(path: str, out: str) -> str:
  """The corpus at `path` as one plain text file (a .gz one decompressed to `out`)."""
  if not path.endswith(".gz"):
    return path
  if not os.path.exists(out):
    with storage.open_text(path) as f:
      storage.write_text(out, f.read())
  return out


def arm_flags(arm: str, steps: int, seed: int, target: str, chars: str, source_dir: str,
              extra: list[str]) -> list[str]:
  flags = [f"--config.data.path={target}", f"--config.data.tokenizer.path={chars}",
           f"--config.train.steps={steps}", f"--config.optim.warmup_steps={max(steps // 10, 1)}",
           f"--config.eval.every={max(steps // 4, 1)}", f"--config.checkpoint.every={steps}",
           "--config.eval.at_start=True", "--config.train.sample_prompt=",
           f"--config.seed={seed}", *extra]
  if arm == "transfer":
    flags.append(f"--config.init.workdir={source_dir}")
  return flags


def run_study(spec: str, source: str, target: str, source_steps: int, budgets: list[int],
              seeds: list[int], extra: list[str], root: str) -> dict:
  if not (os.path.isfile(source) and os.path.isfile(target)):
    raise UserError(f"--source={source} and --target={target} must both be text files "
                    "(.gz is read through gzip)")
  os.makedirs(root, exist_ok=True)
  source_text = plain_text(source, os.path.join(root, "source.txt"))
  chars = shared_vocabulary([storage.read_text(source_text), storage.read_text(target)],
                            os.path.join(root, "chars.json"))
  source_dir = os.path.join(root, "source")
  source_flags = [f"--config.data.path={source_text}", f"--config.data.tokenizer.path={chars}",
                  f"--config.train.steps={source_steps}", "--config.train.sample_prompt=",
                  *extra]
  sweep.load_config(spec, source_flags)  # a bad flag is one line before anything trains
  plan = [(arm, steps, seed, arm_flags(arm, steps, seed, target, chars, source_dir, extra))
          for steps in budgets for seed in seeds for arm in ARMS]
  for *_, flags in plan:
    sweep.load_config(spec, flags)
  source_record = sweep.run_point(spec, source_flags, source_dir)
  source_summary = sweep.summarise(source_dir, sweep.load_config(spec, source_flags))
  runs = []
  for arm, steps, seed, flags in plan:
    workdir = os.path.join(root, f"{arm}_steps={steps}_seed={seed}")
    record = sweep.run_point(spec, flags, workdir)
    summary = sweep.summarise(workdir, sweep.load_config(spec, flags))
    runs.append({"arm": arm, "steps": steps, "seed": seed, "workdir": workdir,
                 "wall_s": record["wall_s"], "start_eval_loss": summary["curve"][0][1],
                 **summary})
  return {"source": {"path": source, "steps": source_steps, "wall_s": source_record["wall_s"],
                     "final_eval_loss": source_summary["final_eval_loss"]},
          "target": target, "runs": runs}


def write_report(study: dict, spec: str, name: str, argv_line: str, out: str) -> str:
  from benchmarks.results_files import host_info, host_line
  from experiments.report import save_figure, write_markdown
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  runs = study["runs"]
  budgets = sorted({r["steps"] for r in runs})
  seeds = sorted({r["seed"] for r in runs})

  def losses(arm, steps, key="final_eval_loss"):
    return np.array([r[key] for r in runs if r["arm"] == arm and r["steps"] == steps])

  def cell(values):
    return (f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1
            else f"{values.mean():.4f}")

  host = host_line(host_info())
  src = study["source"]
  lines = [f"# Transfer learning: {name} ({host})", "",
           f"Written by `{argv_line}`. Source model: `{spec}` trained {src['steps']:,} steps "
           f"on {src['path']} (its own held-out loss {src['final_eval_loss']:.4f}, "
           f"{src['wall_s']:.0f} s). Each row is two runs on {study['target']} with that many "
           "steps (warm-up a tenth, cosine over the run), one from scratch and one from the "
           "source model, same data order and seed"
           + (f" (mean ± sd over seeds {seeds})" if len(seeds) > 1 else f" (seed {seeds[0]})")
           + ". Held-out loss: nats per character over the target's whole held-out split, "
           "one character vocabulary for both corpora.", "",
           "| fine-tuning steps | start: scratch | start: transferred | after: scratch "
           "| after: transferred | gain |", "|---|---|---|---|---|---|"]
  for steps in budgets:
    scratch, transfer = losses("scratch", steps), losses("transfer", steps)
    lines.append(f"| {steps:,} | {cell(losses('scratch', steps, 'start_eval_loss'))} "
                 f"| {cell(losses('transfer', steps, 'start_eval_loss'))} | {cell(scratch)} "
                 f"| {cell(transfer)} | {cell(scratch - transfer)} |")
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
  for arm, label in ARMS.items():
    left.plot(budgets, [losses(arm, s).mean() for s in budgets], "o-", label=label)
    longest = next(r for r in runs if r["arm"] == arm and r["steps"] == budgets[-1])
    right.plot(*zip(*longest["curve"]), ".-", label=f"{label}, {budgets[-1]:,} steps")
  left.set_xscale("log")
  left.set_xticks(budgets, [f"{b:,}" for b in budgets])
  left.set_xlabel("fine-tuning steps (one run each)")
  right.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
  left.set_ylabel("final held-out loss (nats/char)")
  right.set_xlabel("tokens seen")
  right.set_ylabel("held-out loss")
  os.makedirs(out, exist_ok=True)
  stem = os.path.join(out, f"transfer_{name}")
  save_figure(fig, [left, right], stem + ".png")
  with open(stem + ".json", "w") as f:
    json.dump({"command": argv_line, "host": host, **study}, f, indent=1)
  lines += ["", f"![held-out loss of both arms]({os.path.basename(stem)}.png)"]
  write_markdown(stem + ".md", lines)
  return stem


def main(argv=None) -> None:
  import sys
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/shakespeare_char.py:cpu")
  parser.add_argument("--source", default="../shared/data/multi30k/train.en.gz")
  parser.add_argument("--target", default="../shared/data/tinyshakespeare/input.txt")
  parser.add_argument("--source_steps", type=int, default=2000)
  parser.add_argument("--steps", default="100,300,1000", help="fine-tuning budgets, one run each")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--name", default="captions_to_shakespeare")
  parser.add_argument("--root", default="runs/transfer")
  parser.add_argument("--out", default="docs/results")
  parser.add_argument("extra", nargs="*", help="--config.x=y flags for every run")
  args = parser.parse_args(argv)
  argv_line = "python -m experiments.transfer " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])

  def body():
    try:
      budgets = [int(s) for s in args.steps.split(",")]
      seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
      raise UserError(f"--steps={args.steps} and --seeds={args.seeds}: give integers, e.g. "
                      "100,300") from None
    study = run_study(args.config, args.source, args.target, args.source_steps, budgets, seeds,
                      args.extra, os.path.join(args.root, args.name))
    write_report(study, args.config, args.name, argv_line.strip(), args.out)
  run_cli(body)


if __name__ == "__main__":
  main()
