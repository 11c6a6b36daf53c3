"""The deployment loop once, on the HH chat model: serve it, collect feedback, DPO on the
feedback, serve the new checkpoint.

    python -m experiments.hh_feedback            # once: runs/hh_sft and runs/hh_reward
    python -m experiments.feedback_loop [--requests=256 --steps=100]

1. `gptjax-serve --workdir=runs/hh_sft --feedback_dir=runs/feedback_loop/log` (a process).
2. A stand-in user, because no person rates here: for each of --requests training-split HH
   prompts (configs/grpo.py's split: the held-out prompts stay unseen) it asks the server for
   two replies (`n=2`, temperature 1, 64 tokens) with the `openai` client, and posts
   /v1/feedback preferring the one the HH reward model (runs/hh_reward) scores higher.
3. `gptjax-feedback` turns the log into pairs.jsonl.
4. `gptjax-train --config=configs/dpo.py` from runs/hh_sft on those pairs (runs/feedback_loop/dpo).
5. Both checkpoints served in turn: greedy replies to the held-out prompts through the API,
   scored by the same reward model. The figure is the mean score before and after.
Writes docs/results/feedback_loop.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.results_files import host_info, host_line
from benchmarks.serve import _start
from experiments.report import write_markdown
from gptjax.config import sibling_config

OUT = "runs/feedback_loop"
SFT, REWARD = "runs/hh_sft", "runs/hh_reward"
MAX_TOKENS = 64  # reply tokens per request


def _prompts(limit_train: int, limit_eval: int):
  """(training-split, held-out) HH prompts as conversations, GRPO's split, keeping those whose
  rendered prompt leaves room for a MAX_TOKENS reply in the SFT model's context (the server
  refuses the rest with a 400 rather than truncate them)."""
  from gptjax.data import chat_template, conversations, prompts
  from gptjax.load import load_workdir
  config = sibling_config("configs/grpo.py", "grpo.py")
  read = prompts.read_prompts(config.data.path)
  order = list(range(len(read.conversations)))
  train, held = conversations.split_heldout(order, config.data.eval_fraction,
                                            config.data.split_seed)
  loaded = load_workdir(SFT)
  room = loaded.model.cfg.max_len - MAX_TOKENS
  fits = lambda c: len(chat_template.render_prompt(c, loaded.tokenizer)) <= room
  pick = lambda ids, n: [c for c in (read.conversations[i] for i in ids) if fits(c)][:n]
  return pick(train, limit_train), pick(held, limit_eval)


class RewardModel:
  """The HH reward model's score of a reply to a conversation (gptjax.tasks.reward)."""

  def __init__(self, workdir: str):
    import jax
    from gptjax.load import load_workdir
    from gptjax.tasks.reward import sequence_rewards
    self.loaded = load_workdir(workdir)
    self._score = jax.jit(lambda p, x, last: sequence_rewards(self.loaded.model, p, x, last))

  def __call__(self, conversation, reply: str) -> float:
    from gptjax.data import chat_template
    ids = chat_template.render(conversation + [{"role": "assistant", "content": reply}],
                               self.loaded.tokenizer)[0]
    ids = ids[-self.loaded.model.cfg.max_len:]
    padded = np.zeros((1, self.loaded.model.cfg.max_len), np.int32)
    padded[0, :len(ids)] = ids
    return float(self._score(self.loaded.params, padded, np.asarray([len(ids) - 1]))[0])


def _collect(base: str, prompts, reward: RewardModel) -> dict:
  import openai
  client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
  margins = []
  for i, conversation in enumerate(prompts):
    response = client.chat.completions.create(model="m", messages=conversation, n=2,
                                              max_tokens=MAX_TOKENS, temperature=1.0, seed=i)
    replies = [c.message.content for c in response.choices]
    scores = [reward(conversation, r) for r in replies]
    client.post("/feedback", cast_to=object,
                body={"id": response.id, "preferred": int(np.argmax(scores))})
    margins.append(abs(scores[0] - scores[1]))
  return {"requests": len(prompts), "mean_score_gap": float(np.mean(margins))}


def _served_scores(workdir: str, prompts, reward: RewardModel) -> dict:
  import openai
  proc, base = _start(workdir, slots=8, max_queue=len(prompts))
  try:
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
    replies = [client.chat.completions.create(model="m", messages=c, max_tokens=MAX_TOKENS,
                                              temperature=0.0).choices[0].message.content
               for c in prompts]
  finally:
    proc.terminate()
    proc.wait(timeout=60)
  scores = [reward(c, r) for c, r in zip(prompts, replies)]
  return {"mean_reward": float(np.mean(scores)), "stderr": float(np.std(scores) /
                                                                 np.sqrt(len(scores))),
          "mean_chars": float(np.mean([len(r) for r in replies])), "replies": replies[:3]}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--requests", type=int, default=256)
  parser.add_argument("--heldout", type=int, default=64)
  parser.add_argument("--steps", type=int, default=100)
  args = parser.parse_args()
  train_prompts, held_prompts = _prompts(args.requests, args.heldout)
  reward = RewardModel(REWARD)
  log, data, dpo = f"{OUT}/log", f"{OUT}/data", f"{OUT}/dpo"
  if not os.path.exists(f"{data}/pairs.jsonl"):
    proc, base = _start(SFT, 8, 16, f"--feedback_dir={log}")
    try:
      collected = _collect(base, train_prompts, reward)
    finally:
      proc.terminate()
      proc.wait(timeout=60)
    subprocess.run([sys.executable, "-m", "gptjax.serve.feedback", f"--feedback_dir={log}",
                    f"--out={data}"], check=True)
    with open(f"{OUT}/collected.json", "w") as f:
      json.dump(collected, f)
  with open(f"{OUT}/collected.json") as f:
    collected = json.load(f)
  pairs = sum(1 for _ in open(f"{data}/pairs.jsonl"))
  if not os.path.exists(f"{dpo}/metrics.jsonl"):
    subprocess.run([sys.executable, "-m", "gptjax.train", "--config=configs/dpo.py",
                    f"--workdir={dpo}", f"--config.data.path={data}/pairs.jsonl",
                    f"--config.init.workdir={SFT}", f"--config.train.steps={args.steps}",
                    f"--config.checkpoint.every={args.steps}", f"--config.eval.every={args.steps}",
                    "--config.eval.at_start=True", "--config.data.eval_fraction=0.1"],
                   check=True)
  before = _served_scores(SFT, held_prompts, reward)
  after = _served_scores(dpo, held_prompts, reward)
  result = {"host": host_info(), "args": vars(args), "collected": collected, "pairs": pairs,
            "before": before, "after": after}
  os.makedirs("docs/results", exist_ok=True)
  with open("docs/results/feedback_loop.json", "w") as f:
    json.dump(result, f, indent=2)
  lines = [f"Host: {host_line(host_info())}. `python -m experiments.feedback_loop "
           f"--requests={args.requests} --heldout={args.heldout} --steps={args.steps}`: "
           f"{collected['requests']} requests with two replies each (mean reward-model gap "
           f"between the two {collected['mean_score_gap']:.3f}), {pairs} preference pairs, DPO "
           f"for {args.steps} steps from runs/hh_sft; {len(held_prompts)} held-out prompts "
           "served greedily before and after, scored by runs/hh_reward.", "",
           "| served checkpoint | reward-model score (mean ± s.e.) | reply characters |",
           "|---|---|---|"]
  for label, r in (("before: runs/hh_sft", before), ("after: DPO on the feedback", after)):
    lines.append(f"| {label} | {r['mean_reward']:.3f} ± {r['stderr']:.3f} | "
                 f"{r['mean_chars']:.0f} |")
  write_markdown("docs/results/feedback_loop.md", lines)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
