"""Bias probes on two models of this project, and counterfactual data augmentation measured.

    gptjax-train --config=configs/sft.py:pretrain --workdir=runs/chat_pretrain   # once
    python -m experiments.bias_probes

Trains what is missing (a finished run is not redone), as gptjax-train processes:
  runs/sft_full      configs/sft.py:full: runs/chat_pretrain fine-tuned on alpaca_5000;
  runs/cda_pretrain  configs/sft.py:pretrain with data.counterfactual_swaps = WinoBias's
                     generalized_swaps.txt (the training split plus its gender-swapped copy),
                     with runs/chat_pretrain's tokenizer, so that both see the same held-out
                     tokens and their perplexities compare; same steps, seed and schedule.
Then CrowS-Pairs and WinoBias (dev) on each (gptjax-eval --eval=crows_pairs,winobias) and
held-out perplexity of the two pretrained models on tiny Shakespeare's held-out 10%.
Writes docs/results/bias_probes.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks.results_files import host_info, host_line
from experiments.report import write_markdown

BASE, SFT, CDA = "runs/chat_pretrain", "runs/sft_full", "runs/cda_pretrain"
SWAPS = "../shared/data/winobias/generalized_swaps.txt"
MODELS = {BASE: "Shakespeare (pretrained)", SFT: "Alpaca SFT of it",
          CDA: "Shakespeare + CDA (pretrained)"}


def _train(workdir: str, flags: list[str]) -> None:
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and any(
      "eval/loss" in json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))):
    return
  cmd = [sys.executable, "-m", "gptjax.train", *flags, f"--workdir={workdir}"]
  print("+ gptjax-train", " ".join(cmd[3:]), flush=True)
  subprocess.run(cmd, check=True)


def _base_tokenizer(path: str) -> str:
  from gptjax.load import load_workdir
  if not os.path.exists(path):
    with open(path, "w") as f:
      json.dump(load_workdir(BASE).tokenizer.to_json(), f)
  return path


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default="docs/results")
  args = parser.parse_args()
  from gptjax import evaluate
  if not os.path.exists(BASE):
    sys.exit(f"{BASE} is missing: gptjax-train --config=configs/sft.py:pretrain --workdir={BASE}")
  _train(SFT, ["--config=configs/sft.py:full"])
  _train(CDA, ["--config=configs/sft.py:pretrain", f"--config.data.counterfactual_swaps={SWAPS}",
               f"--config.data.tokenizer.path={_base_tokenizer('runs/chat_pretrain_tokenizer.json')}"])
  results = {}
  for workdir in MODELS:
    row = evaluate.run_evaluators(workdir, ["crows_pairs", "winobias"])
    details = {}
    for name in ("crows_pairs", "winobias"):
      with open(os.path.join(workdir, "evals", f"step_{row['step']}", f"{name}.json")) as f:
        details[name] = json.load(f)["details"]
    results[workdir] = {"step": row["step"], **details}
    if workdir != SFT:  # the two pretrained models: the same held-out Shakespeare tokens
      held = evaluate.evaluate_workdir(workdir)
      results[workdir]["heldout"] = {"loss": held["eval/loss"],
                                     "perplexity": held["eval/perplexity"],
                                     "tokens": held["eval/tokens"]}
  host = host_line(host_info())
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "bias_probes.json"), "w") as f:
    json.dump({"host": host, "results": results}, f, indent=1)
  write_markdown(os.path.join(args.out, "bias_probes.md"), _tables(results, host))


def _pct(s: dict) -> str:
  low, high = s["ci95"]
  return f"{100 * s['share']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _tables(results: dict, host: str) -> list[str]:
  crows_groups = sorted(results[BASE]["crows_pairs"]["groups"])
  lines = [f"# Bias probes ({host})", "",
           "Written by `python -m experiments.bias_probes`. Share (%) of pairs where the model "
           "finds the stereotyping (CrowS-Pairs `sent_more`) or pro-stereotypical (WinoBias) "
           "sentence more likely than its minimal twin, by sentence log-likelihood; 50 = no "
           "preference; [95% Wilson interval].", "",
           "| probe | " + " | ".join(f"{MODELS[w]} (`{w}`)" for w in (BASE, SFT)) + " |",
           "|---|---|---|"]
  for probe, groups in (("crows_pairs", crows_groups), ("winobias", ["type1", "type2"])):
    lines.append(f"| **{probe}, all** | " + " | ".join(
        f"**{_pct(results[w][probe]['overall'])}** (n={results[w][probe]['overall']['pairs']})"
        for w in (BASE, SFT)) + " |")
    lines += [f"| {probe}: {g} | " + " | ".join(_pct(results[w][probe]["groups"][g])
                                                for w in (BASE, SFT)) + " |" for g in groups]
  before, after = results[BASE], results[CDA]
  lines += ["", "Counterfactual data augmentation: the same pretraining (1000 steps, same "
            "tokenizer and seed) on tiny Shakespeare plus its gender-swapped copy "
            "(`--config.data.counterfactual_swaps=../shared/data/winobias/generalized_swaps.txt`); "
            "held-out perplexity on the same untouched held-out text.", "",
            "| figure | before (`runs/chat_pretrain`) | after CDA (`runs/cda_pretrain`) |",
            "|---|---|---|",
            f"| CrowS-Pairs gender | {_pct(before['crows_pairs']['groups']['gender'])} | "
            f"{_pct(after['crows_pairs']['groups']['gender'])} |",
            f"| CrowS-Pairs all | {_pct(before['crows_pairs']['overall'])} | "
            f"{_pct(after['crows_pairs']['overall'])} |"]
  for g in ("type1", "type2"):
    lines.append(f"| WinoBias {g} | {_pct(before['winobias']['groups'][g])} | "
                 f"{_pct(after['winobias']['groups'][g])} |")
  lines.append(f"| held-out perplexity (loss) | {before['heldout']['perplexity']:.2f} "
               f"({before['heldout']['loss']:.4f}) | {after['heldout']['perplexity']:.2f} "
               f"({after['heldout']['loss']:.4f}) |")
  return lines


if __name__ == "__main__":
  main()
