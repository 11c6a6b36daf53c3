"""Learning from human feedback on Anthropic HH harmless-base: SFT, reward model, DPO, GRPO.

    gptjax-train --config=configs/sft.py:pretrain --workdir=runs/chat_pretrain   # once
    python -m experiments.hh_feedback [--samples=3]

Runs the chain of configs/reward.py's docstring as `gptjax-train` processes (a finished stage
is not redone): SFT on the chosen dialogues (runs/hh_sft), a reward model (runs/hh_reward),
DPO (runs/hh_dpo) and GRPO against the reward model (runs/hh_grpo), all on the same 5% of
the 2,312 pairs held out (data.split_seed 0 splits the pairs and the SFT dialogues alike).
Writes docs/results/hh_feedback.{md,json}: the reward model's held-out pairwise accuracy
against "the longer reply wins" on the same pairs, DPO's held-out accuracy and implicit-reward
margin, GRPO's held-out reward (reward model score of greedy replies) before and after with
the KL reached, and greedy replies to held-out prompts before and after GRPO.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


from benchmarks.results_files import host_info, host_line
from experiments.report import write_markdown
from gptjax.config import sibling_config
from gptjax.metrics import read_metrics

HH = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"
STAGES = {  # workdir -> gptjax-train arguments
    "runs/hh_sft": ["--config=configs/sft.py:full", f"--config.data.path={HH}"],
    "runs/hh_reward": ["--config=configs/reward.py"],
    "runs/hh_dpo": ["--config=configs/dpo.py"],
    "runs/hh_grpo": ["--config=configs/grpo.py"],
}


def evals(workdir: str) -> list[dict]:
  return [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]


def longer_reply_wins(config) -> dict:
  """Held-out accuracy of "the reply with more tokens is the chosen one" (ties count half),
  over exactly the held-out pairs the reward model is scored on (those that fit)."""
  from gptjax.data import conversations, preferences
  from gptjax.load import load_workdir
  tokenizer = load_workdir(config.init.workdir).tokenizer
  read = preferences.read_preferences(config.data.path)
  _, heldout = conversations.split_heldout(read.pairs, config.data.eval_fraction,
                                           config.data.split_seed)
  from gptjax.data import chat_template
  rows, dropped = preferences.encode_pairs(heldout, chat_template.with_chat_tokens(tokenizer),
                                           config.data.seq_len)
  chosen, rejected = rows["chosen_mask"].sum(1), rows["rejected_mask"].sum(1)
  wins = (chosen > rejected) + 0.5 * (chosen == rejected)
  return {"accuracy": float(wins.mean()), "pairs": int(len(wins)), "dropped": int(dropped)}


def greedy_replies(workdirs: dict, limit: int) -> dict:
  """Greedy replies of each model in `workdirs` to the first held-out GRPO prompts, scored by
  the reward model, through the GRPO task's own held-out path."""
  from gptjax import sharding, train as train_lib
  from gptjax.data import prompts
  from gptjax.load import load_workdir
  config = sibling_config("configs/grpo.py", "grpo.py")
  run = train_lib.build_run(config, tokenizer=load_workdir(config.init.workdir).tokenizer)
  out = {}
  for label, workdir in workdirs.items():
    params = load_workdir(workdir, mesh=run.mesh).params
    with sharding.rules_context(run.mesh):
      out[label] = run.task.heldout_completions(params, run.frozen, limit)
  records = run.task.data.eval_records
  first = out[next(iter(out))]
  asked = [prompts.prompt_of(records[r["index"]])[-1]["content"] for r in first]
  return {"prompts": asked, "replies": out}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--samples", type=int, default=3)
  parser.add_argument("--out", default="docs/results")
  args = parser.parse_args()
  for workdir, flags in STAGES.items():
    cmd = [sys.executable, "-m", "gptjax.train", *flags, f"--workdir={workdir}"]
    print("+ gptjax-train", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)

  sft = evals("runs/hh_sft")[-1]
  reward = evals("runs/hh_reward")
  dpo = evals("runs/hh_dpo")
  grpo = evals("runs/hh_grpo")
  kl = [r["train/kl"] for r in read_metrics("runs/hh_grpo") if "train/kl" in r]
  baseline = longer_reply_wins(sibling_config("configs/reward.py", "reward.py"))
  samples = greedy_replies({"SFT (before GRPO)": "runs/hh_sft", "GRPO": "runs/hh_grpo"},
                           args.samples)
  host = host_line(host_info())
  figures = {
      "sft_heldout_loss": sft["eval/loss"], "sft_step": sft["step"],
      "reward_accuracy_start": reward[0]["eval/accuracy"],
      "reward_accuracy": reward[-1]["eval/accuracy"], "reward_margin": reward[-1]["eval/margin"],
      "reward_step": reward[-1]["step"], "longer_wins": baseline,
      "dpo_loss_start": dpo[0]["eval/loss"], "dpo_loss": dpo[-1]["eval/loss"],
      "dpo_accuracy": dpo[-1]["eval/accuracy"], "dpo_margin": dpo[-1]["eval/margin"],
      "dpo_reward_chosen": dpo[-1]["eval/reward_chosen"],
      "dpo_reward_rejected": dpo[-1]["eval/reward_rejected"], "dpo_step": dpo[-1]["step"],
      "grpo_reward_before": grpo[0]["eval/greedy/reward"],
      "grpo_reward_after": grpo[-1]["eval/greedy/reward"],
      "grpo_chars_before": grpo[0]["eval/greedy/completion_chars"],
      "grpo_chars_after": grpo[-1]["eval/greedy/completion_chars"],
      "grpo_prompts": grpo[-1]["eval/greedy/prompts"], "grpo_kl": kl[-1],
      "grpo_step": grpo[-1]["step"]}
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, "hh_feedback")
  with open(stem + ".json", "w") as f:
    json.dump({"figures": figures, "samples": samples, "host": host,
               "commands": {w: " ".join(["gptjax-train", *fl, f"--workdir={w}"])
                            for w, fl in STAGES.items()}}, f, indent=1)
  f_ = figures
  b = f_["longer_wins"]
  lines = [f"# Learning from feedback on HH harmless-base ({host})", "",
           "Written by `python -m experiments.hh_feedback`; a 1.1M-parameter model "
           "(`configs/sft.py:pretrain`, tiny Shakespeare) fine-tuned along the chain below. "
           f"Held out: 5% of the 2,312 pairs; {b['pairs']} of them fit in 256 tokens "
           f"({b['dropped']} longer ones are dropped) and are what every pair figure counts.", "",
           "| stage | held-out figure |", "|---|---|",
           "| SFT on chosen dialogues (`runs/hh_sft`) | response loss "
           f"{f_['sft_heldout_loss']:.3f} (step {f_['sft_step']}) |",
           f"| reward model (`runs/hh_reward`) | pairwise accuracy {f_['reward_accuracy']:.3f} "
           f"(fresh head: {f_['reward_accuracy_start']:.3f}; \"the longer reply wins\": "
           f"{b['accuracy']:.3f}, so the shorter wins {1 - b['accuracy']:.3f}); mean margin "
           f"{f_['reward_margin']:.3f} (step {f_['reward_step']}) |",
           f"| DPO, beta 0.1 (`runs/hh_dpo`) | preference accuracy {f_['dpo_accuracy']:.3f}, "
           f"implicit-reward margin {f_['dpo_margin']:.4f} (chosen {f_['dpo_reward_chosen']:.4f}, "
           f"rejected {f_['dpo_reward_rejected']:.4f}); loss {f_['dpo_loss_start']:.4f} at step 0 "
           f"(log 2 = 0.6931) -> {f_['dpo_loss']:.4f} (step {f_['dpo_step']}) |",
           f"| GRPO on the reward model (`runs/hh_grpo`) | reward of greedy replies "
           f"{f_['grpo_reward_before']:.3f} -> {f_['grpo_reward_after']:.3f} at KL "
           f"{f_['grpo_kl']:.4f} (k3, per token; step {f_['grpo_step']}); reply length "
           f"{f_['grpo_chars_before']:.0f} -> {f_['grpo_chars_after']:.0f} characters; "
           f"{f_['grpo_prompts']:.0f} prompts |", "",
           "Greedy replies to held-out prompts (last user turn shown), with the reward "
           "model's score:", ""]
  for i, asked in enumerate(samples["prompts"]):
    lines += [f"**{json.dumps(asked, ensure_ascii=False)}**", ""]
    for label, rows in samples["replies"].items():
      reply = json.dumps(rows[i]["completion"], ensure_ascii=False)
      lines.append(f"- {label} ({rows[i]['reward']:+.3f}): {reply}")
    lines.append("")
  write_markdown(stem + ".md", lines)


if __name__ == "__main__":
  main()
