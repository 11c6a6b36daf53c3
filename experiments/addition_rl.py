"""Verifiable-reward RL: does GRPO on exact match raise held-out addition accuracy?

    python -m experiments.addition_rl [--seeds=0,1,2] [--sft_step=1000] [--data_only]
        [-- --config.x=y ...]

Writes the problems (runs/addition/data/), then per seed runs configs/addition.py's chain
pretrain -> sft -> grpo as `gptjax-train` processes (runs/addition/seed{S}/...; a finished
stage is not redone), GRPO starting from SFT checkpoint --sft_step, and writes
docs/results/addition_rl_sft{STEP}.{md,json,png} (addition_rl.* with --sft_step=0): held-out
exact match, greedy and sampled as in rollouts, at the start of GRPO (step 0) and at its end,
per seed and as mean and spread, beside the SFT run continued to its end instead, with the
rollout-reward and held-out curves. Extra --config flags go to the GRPO stage.

The problems: a + b with a, b uniform in [0, 1000), the sum written least-significant digit
first ("123+456" -> "975"), the order in which a small transformer can carry digit by digit
(Lee et al. 2023, "Teaching arithmetic to small transformers"). The RL prompts are 5,000 distinct
problems of which data.eval_fraction (10%, split as gptjax.data.prompts splits them) are
held out; the pretraining text and SFT conversations are drawn from the other problems only,
so a held-out sum is never seen before it is scored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.results_files import host_info, host_line
from experiments.report import save_figure, write_markdown
from gptjax.config import sibling_config
from gptjax.data import conversations
from gptjax.metrics import read_metrics

DIGITS = 3
PROMPTS, PRETRAIN_LINES, SFT_CONVERSATIONS = 5_000, 60_000, 20_000
STAGES = ("pretrain", "sft", "grpo")


def answer(a: int, b: int) -> str:
  return str(a + b)[::-1]


def problems(rng: np.random.Generator, n: int, exclude: set) -> list[tuple[int, int]]:
  """n distinct (a, b) not in `exclude`."""
  out, seen = [], set(exclude)
  while len(out) < n:
    a, b = (int(x) for x in rng.integers(0, 10 ** DIGITS, size=2))
    if (a, b) not in seen:
      seen.add((a, b))
      out.append((a, b))
  return out


def write_data(folder: str, eval_fraction: float, split_seed: int) -> dict:
  """The three data files of configs/addition.py; returns their sizes."""
  rng = np.random.default_rng(1234)
  prompts = problems(rng, PROMPTS, set())
  _, heldout = conversations.split_heldout(prompts, eval_fraction, split_seed)
  heldout = set(heldout)
  pretrain = problems(rng, PRETRAIN_LINES, heldout)
  sft = problems(rng, SFT_CONVERSATIONS, heldout)
  files = {
      "prompts.jsonl": [json.dumps({"prompt": f"{a}+{b}", "answer": answer(a, b)})
                        for a, b in prompts],
      "pretrain.txt": [f"{a}+{b}={answer(a, b)}" for a, b in pretrain],
      "sft.jsonl": [json.dumps({"messages": [{"role": "user", "content": f"{a}+{b}"},
                                             {"role": "assistant", "content": answer(a, b)}]})
                    for a, b in sft]}
  os.makedirs(folder, exist_ok=True)
  for name, lines in files.items():
    path, text = os.path.join(folder, name), "\n".join(lines) + "\n"
    if not os.path.exists(path) or open(path).read() != text:  # runs reading it keep their
      with open(path + ".tmp", "w") as f:                          # file and its cache key
        f.write(text)
      os.replace(path + ".tmp", path)
  return {"prompts": len(prompts), "heldout": len(heldout), "pretrain_lines": len(pretrain),
          "sft_conversations": len(sft)}


def grpo_workdir(sft_seed: int, sft_step: int, seed: int) -> str:
  return (f"runs/addition/seed{sft_seed}/grpo" + (f"_from_sft{sft_step}" if sft_step else "")
          + (f"_seed{seed}" if seed != sft_seed else ""))


def run_chain(sft_seed: int, overrides: list[str], sft_step: int = 0, seed: int | None = None):
  """Pretrain and SFT with seed `sft_seed`, then GRPO with `seed` (default: the same) from
  SFT checkpoint `sft_step` (0 = its end); returns the GRPO workdir."""
  seed = sft_seed if seed is None else seed
  previous = ""
  for stage in STAGES:
    workdir = (grpo_workdir(sft_seed, sft_step, seed) if stage == "grpo"
               else f"runs/addition/seed{sft_seed}/{stage}")
    cmd = [sys.executable, "-m", "gptjax.train", f"--config=configs/addition.py:{stage}",
           f"--workdir={workdir}", f"--config.seed={seed if stage == 'grpo' else sft_seed}"]
    if previous:
      cmd.append(f"--config.init.workdir={previous}")
    if stage == "grpo":
      cmd += overrides + ([f"--config.init.step={sft_step}"] if sft_step else [])
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)
    previous = workdir
  return previous


def summarize(workdir: str) -> dict:
  rows = read_metrics(workdir)
  curve = lambda key: [(r["step"], r[key]) for r in rows if key in r]
  greedy, sampled = curve("eval/greedy/reward"), curve("eval/sampled/reward")
  speed = [r["rollout/tokens_per_sec"] for r in rows if "rollout/tokens_per_sec" in r]
  return {"greedy_before": greedy[0][1], "greedy_after": greedy[-1][1],
          "sampled_before": sampled[0][1], "sampled_after": sampled[-1][1],
          "greedy_curve": greedy, "sampled_curve": sampled,
          "reward_curve": curve("rollout/reward_mean"), "final_kl": curve("train/kl")[-1][1],
          "steps": greedy[-1][0], "rollout_tokens_per_sec": float(np.median(speed))}


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=110)
  titles = {"reward_curve": "rollout reward (train prompts, T = 1)",
            "sampled_curve": "held-out exact match, sampled (T = 1)",
            "greedy_curve": "held-out exact match, greedy"}
  for ax, (key, title) in zip(axes, titles.items()):
    for seed, r in results.items():
      ax.plot(*zip(*r[key]), "-" if key == "reward_curve" else "o-", markersize=3,
              label=f"seed {seed}")
    ax.set_title(title)
    ax.set_xlabel("GRPO step")
  save_figure(fig, axes, path)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", default="0,1,2", help="GRPO seeds (rollouts, prompt order)")
  parser.add_argument("--sft_seed", type=int, default=0,
                      help="seed of the one pretrained and SFT model every GRPO run starts from")
  parser.add_argument("--data_only", action="store_true")
  parser.add_argument("--sft_step", type=int, default=1000,
                      help="start GRPO from this SFT checkpoint, which the report sets beside "
                           "the SFT run's end (SFT continued instead); 0 = from the SFT run's "
                           "end (1,500 steps), where a seed is already at 0.93")
  parser.add_argument("--out", default="docs/results")
  parser.add_argument("overrides", nargs="*", help="extra --config.x=y flags for the GRPO runs")
  args = parser.parse_args()
  grpo = sibling_config("configs/addition.py", "addition.py", "grpo")
  sizes = write_data(os.path.dirname(grpo.data.path), grpo.data.eval_fraction,
                     grpo.data.split_seed)
  print(f"data: {sizes}")
  if args.data_only:
    return
  seeds = [int(s) for s in args.seeds.split(",")]
  results = {s: summarize(run_chain(args.sft_seed, args.overrides, args.sft_step, s))
             for s in seeds}
  if args.sft_step:  # the control: the same SFT run continued to its end instead of GRPO
    end = summarize(run_chain(args.sft_seed, args.overrides))
    for r in results.values():
      r.update(sampled_sft_end=end["sampled_before"], greedy_sft_end=end["greedy_before"])
  stats = {}
  for kind in ("sampled", "greedy"):
    before = np.array([r[f"{kind}_before"] for r in results.values()])
    after = np.array([r[f"{kind}_after"] for r in results.values()])
    pairs = [("before", before), ("after", after), ("gain", after - before)]
    if args.sft_step:
      pairs.append(("sft_end", np.array([r[f"{kind}_sft_end"] for r in results.values()])))
    for stat, x in pairs:
      stats[f"{kind}_{stat}"] = (float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0)
  os.makedirs(args.out, exist_ok=True)
  name = ("addition_rl" + (f"_sft{args.sft_step}" if args.sft_step else "")
          + (f"_sftseed{args.sft_seed}" if args.sft_seed else ""))
  stem = os.path.join(args.out, name)
  plot(results, stem + ".png")
  host = host_line(host_info())
  with open(stem + ".json", "w") as f:
    json.dump({"results": results, "summary": stats, "data": sizes, "host": host,
               "overrides": args.overrides}, f, indent=1)
  ms = lambda key, sign="": f"{stats[key][0]:{sign}.3f} ± {stats[key][1]:.3f}"
  command = " ".join(["python -m experiments.addition_rl"] + sys.argv[1:])
  start = f"SFT step {args.sft_step}" if args.sft_step else "SFT"
  control = bool(args.sft_step)
  header = ["seed"] + [f"{kind}: {label}" for kind in ("sampled", "greedy")
                       for label in [start, "GRPO"] + (["SFT to its end"] if control else [])]
  header.append("KL to the start at the end")
  lines = [f"# GRPO on 3-digit addition, exact-match reward ({host})", "",
           f"Written by `{command}`; the chain is `configs/addition.py`: one model pretrained "
           f"and fine-tuned (seed {args.sft_seed}), then GRPO from it with each seed (its "
           f"rollouts and prompt order). Held out: {sizes['heldout']} problems that no "
           f"training file contains. Exact match of the GRPO run's start ({start}: its step 0) "
           "and end, sampled at T = 1 as in rollouts (one fixed key) and greedy"
           + (", beside the same SFT run continued to its end instead" if control else "")
           + ":", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  cols = lambda kind: [f"{kind}_before", f"{kind}_after"] + [f"{kind}_sft_end"] * control
  for seed, r in results.items():
    cells = [f"{r[k]:.3f}" for k in cols("sampled") + cols("greedy")]
    lines.append(f"| GRPO seed {seed} | " + " | ".join(cells) + f" | {r['final_kl']:.4f} |")
  lines += ["| mean ± sd | " + " | ".join(ms(k) for k in cols("sampled") + cols("greedy"))
            + " | |", "",
            f"Gain over {len(results)} seeds (mean ± sd): sampled {ms('sampled_gain', '+')}, "
            f"greedy {ms('greedy_gain', '+')}; GRPO ran {results[seeds[0]]['steps']} steps.",
            "", f"![curves]({name}.png)"]
  write_markdown(stem + ".md", lines)


if __name__ == "__main__":
  main()
