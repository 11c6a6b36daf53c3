"""Full SFT vs LoRA vs last-two-blocks vs from scratch, at equal steps, on one base model.

    gptjax-train --config=configs/sft.py:pretrain --workdir=runs/chat_pretrain   # once
    python -m experiments.sft_variants [--variants=full,lora,frozen,scratch] [--samples=3]
        [-- --config.train.steps=400 ...]

Each variant is the `gptjax-train --config=configs/sft.py:VARIANT` command, run and timed as
a whole process in turn (fresh workdirs runs/sft_VARIANT). Writes docs/results/sft_variants.md
(held-out response loss, trainable parameters, optimizer-state bytes, wall time, host) and
sft_variants.png (the four held-out curves), and samples replies to the first held-out
instructions before (the base model) and after (each variant) fine-tuning with
`gptjax-sample --user=...`, greedy, so anyone can regenerate them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import jax

from benchmarks.results_files import host_info, host_line
from experiments.report import save_figure, write_markdown
from gptjax.config import sibling_config
from gptjax.data import conversations
from gptjax.metrics import read_metrics

VARIANTS = {"full": "full SFT", "lora": "LoRA r=8", "frozen": "last two blocks",
            "scratch": "full SFT from scratch"}


def heldout_instructions(config, n: int) -> list[str]:
  read = conversations.read_conversations(config.data.path, config.data.format)
  _, heldout = conversations.split_heldout(read.conversations, config.data.eval_fraction,
                                           config.data.split_seed)
  return [next(m["content"] for m in c if m["role"] == "user") for c in heldout[:n]]


def state_sizes(config) -> dict:
  """Trainable parameters and optimizer-state bytes of the run `config` describes."""
  from gptjax import train as train_lib, trainable
  from gptjax.init_from import source_tokenizer
  tokenizer = source_tokenizer(config.init) if config.init.workdir else None
  run = train_lib.build_run(config, tokenizer=tokenizer)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(run.abstract.opt_state))
  total = sum(x.size for x in jax.tree_util.tree_leaves(run.abstract.params))
  return {"params": total, "trainable": trainable.count(run.abstract.params, run.mask),
          "optimizer_bytes": opt_bytes}


def sample(workdir: str, instruction: str, tokens: int) -> str:
  out = subprocess.run([sys.executable, "-m", "gptjax.generate", f"--workdir={workdir}",
                        f"--user={instruction}", "--temperature=0", f"--max_new_tokens={tokens}"],
                       capture_output=True, text=True, check=True)
  return out.stdout.strip()


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
  for name, r in results.items():
    ax.plot(*zip(*r["curve"]), "o-", markersize=3, label=f"{VARIANTS[name]}: {r['final']:.3f}")
  ax.set_xlabel("step")
  ax.set_ylabel("held-out response loss (nats/token)")
  ax.set_title("SFT on alpaca_5000 (5% held out), one pretrained base")
  save_figure(fig, [ax], path)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--variants", default="full,lora,frozen,scratch")
  parser.add_argument("--samples", type=int, default=3, help="held-out instructions to answer")
  parser.add_argument("--sample_tokens", type=int, default=60)
  parser.add_argument("--out", default="docs/results")
  parser.add_argument("overrides", nargs="*", help="extra --config.x=y flags for every variant")
  args = parser.parse_args()
  names = args.variants.split(",")
  results, commands = {}, {}
  for name in names:
    workdir = f"runs/sft_{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, "-m", "gptjax.train", f"--config=configs/sft.py:{name}",
           f"--workdir={workdir}", *args.overrides]
    commands[name] = " ".join(["gptjax-train"] + cmd[3:])
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    rows = read_metrics(workdir)
    curve = [(r["step"], r["eval/loss"]) for r in rows if "eval/loss" in r]
    config = sibling_config("configs/sft.py", "sft.py", name)
    results[name] = {"wall_s": round(wall, 1), "curve": curve, "final": curve[-1][1],
                     "steps": curve[-1][0], **state_sizes(config)}
  config = sibling_config("configs/sft.py", "sft.py", names[0])
  instructions = heldout_instructions(config, args.samples)
  replies = {"before SFT (the pretrained base)": [
      sample(config.init.workdir, q, args.sample_tokens) for q in instructions]}
  for name in names:
    replies[VARIANTS[name]] = [sample(f"runs/sft_{name}", q, args.sample_tokens)
                               for q in instructions]
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, "sft_variants")
  plot(results, stem + ".png")
  with open(stem + ".json", "w") as f:
    json.dump({"results": results, "commands": commands, "instructions": instructions,
               "replies": replies, "host": host_line(host_info())}, f, indent=1)
  lines = [f"# SFT variants on alpaca_5000 ({host_line(host_info())})", "",
           "Written by `python -m experiments.sft_variants`; every variant starts from "
           "`runs/chat_pretrain` (`configs/sft.py:pretrain`) except the last, which keeps only "
           "its tokenizer.", "",
           "| variant | held-out response loss | trainable params | optimizer state | wall time |",
           "|---|---|---|---|---|"]
  for name, r in results.items():
    lines.append(f"| {VARIANTS[name]} (`sft.py:{name}`) | {r['final']:.4f} (step {r['steps']}) "
                 f"| {r['trainable']:,} of {r['params']:,} | {r['optimizer_bytes'] / 1e6:.2f} MB "
                 f"| {r['wall_s']:.0f} s |")
  lines += ["", "Greedy replies to held-out instructions (`gptjax-sample --workdir=runs/sft_NAME "
            f"--user=... --temperature=0 --max_new_tokens={args.sample_tokens}`):", ""]
  for i, q in enumerate(instructions):
    lines.append(f"**{q}**")
    lines.append("")
    for label, texts in replies.items():
      lines.append(f"- {label}: {json.dumps(texts[i])}")
    lines.append("")
  write_markdown(stem + ".md", lines)


if __name__ == "__main__":
  main()
