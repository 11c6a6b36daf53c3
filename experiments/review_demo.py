"""A human-review round trip on two chat models of this project, with synthetic raters.

    python -m experiments.bias_probes      # once: runs/sft_full (Alpaca SFT)
    python -m experiments.hh_feedback      # once: runs/hh_sft (HH SFT)
    python -m experiments.review_demo

1. 16 held-out alpaca_5000 instructions (configs/sft.py's split) to prompts.jsonl.
2. `gptjax-eval --workdir=runs/sft_full --eval=human_export` with compare=runs/hh_sft, twice:
   a Likert pack and a pairwise pack (runs/review_demo/{likert,pairwise}).
3. Two synthetic raters fill each pack's CSV, because no person rates here: "lexi" rates by
   a fixed rule (more distinct words and a reply that shares words with the instruction
   score higher), "noisy" gives lexi's rating moved by a seeded random step for a third of
   the cells (Likert) or flips a quarter of lexi's preferences (pairwise).
4. `gptjax-review` on each. Writes docs/results/review_demo.md: the tables gptjax-review
   prints, so the round trip's output is shown; the figures say nothing about the models.
"""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np

from benchmarks.results_files import host_info, host_line
from experiments.report import write_markdown
from gptjax.evals import review_pack

A, B, OUT = "runs/sft_full", "runs/hh_sft", "runs/review_demo"


def _prompts(n: int) -> list[str]:
  from gptjax.config import sibling_config
  from gptjax.data import conversations
  config = sibling_config("configs/sft.py", "sft.py", "full")
  read = conversations.read_conversations(config.data.path)
  _, held = conversations.split_heldout(read.conversations, config.data.eval_fraction,
                                        config.data.split_seed)
  return [c[0]["content"] for c in held if len(c[0]["content"]) < 300][:n]


def _words(text: str) -> set[str]:
  return set(re.findall(r"[a-z']+", text.lower()))


def _lexi_score(prompt: str, output: str) -> int:
  """1-5: distinct words (up to 3 points) and overlap with the instruction (up to 2)."""
  words = _words(output)
  return 1 + min(2, len(words) // 8) + min(2, len(words & _words(prompt)) // 2)


def _fill(pack: str, kind: str, rater: str, rng) -> str:
  with open(os.path.join(pack, "pack.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    scores = {s: _lexi_score(row["prompt"], row[f"output_{s}"]) for s in "AB"}
    if kind == "likert":
      for s in "AB":
        for criterion in ("fluency", "coherence", "relevance"):
          value = scores[s]
          if rater == "noisy" and rng.random() < 1 / 3:
            value = int(np.clip(value + rng.choice([-1, 1]), 1, 5))
          row[f"{criterion}_{s}"] = str(value)
    else:
      choice = "tie" if scores["A"] == scores["B"] else max("AB", key=scores.get)
      if rater == "noisy" and rng.random() < 0.25:
        choice = {"A": "B", "B": "A", "tie": "A"}[choice]
      row["preferred"] = choice
  path = os.path.join(pack, f"{rater}.csv")
  return review_pack.write_sheet(path, rows)


def main():
  from gptjax import evaluate
  from gptjax.evals import review_import
  os.makedirs(OUT, exist_ok=True)
  prompts_path = os.path.join(OUT, "prompts.jsonl")
  with open(prompts_path, "w") as f:
    f.writelines(json.dumps({"prompt": p}) + "\n" for p in _prompts(16))
  lines = [f"# Human review round trip ({host_line(host_info())})", "",
           "Written by `python -m experiments.review_demo`: packs of `runs/sft_full` (Alpaca "
           "SFT) against `runs/hh_sft` (HH SFT) on 16 held-out Alpaca instructions, greedy, "
           "filled by two **synthetic** raters (a fixed word-count rule and a noisy copy of "
           "it), read back by `gptjax-review`.", ""]
  for kind in ("likert", "pairwise"):
    pack = os.path.join(OUT, kind)
    evaluate.run_evaluators(A, ["human_export"], overrides=[
        f"path={prompts_path}", f"compare={B}", f"kind={kind}", f"out={pack}",
        "max_new_tokens=64"])
    rng = np.random.default_rng(0)
    ratings = [_fill(pack, kind, rater, rng) for rater in ("lexi", "noisy")]
    summary = review_import.import_ratings(os.path.join(pack, "key.json"), ratings)
    lines += [f"## {kind}", "", f"`gptjax-review --key={pack}/key.json "
              f"--ratings={','.join(ratings)}`:", "", *review_import.markdown(summary), ""]
  os.makedirs("docs/results", exist_ok=True)
  write_markdown("docs/results/review_demo.md", lines)


if __name__ == "__main__":
  main()
