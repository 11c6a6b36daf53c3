"""Reinforcement learning with GRPO (task.name=grpo): rollouts, rewards, a KL leash.

  (none) -> HH harmless-base prompts (5% held out), the policy and its reference start as
            runs/hh_sft, rewards from the reward model runs/hh_reward (configs/reward.py)
  :smoke -> seconds on CPU from fresh weights: HH prompts, the `brevity` reward function,
            no KL (no reference), for tests
"""

from gptjax.config import base_config

HH = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"


def get_config(arg=None):
  c = base_config()
  c.task.name = "grpo"
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 4, 4, 128
  c.data.path = HH
  c.data.seq_len = 256
  c.data.eval_fraction = 0.05
  c.data.eval_batch_size = 32
  c.init.workdir = "runs/hh_sft"
  c.grpo.update(group_size=4, max_new_tokens=64, temperature=1.0, kl_coef=0.04,
                reward_workdir="runs/hh_reward")
  c.train.batch_size, c.train.steps, c.train.log_every = 32, 100, 10
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-5, 1e-6, 10
  c.optim.weight_decay = 0.0
  c.eval.every = c.checkpoint.every = 50
  c.eval.at_start = True  # step 0 scores the starting model: the "before" figures
  if arg == "smoke":
    c.init.workdir = ""
    c.data.tokenizer.kind = "char"
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
    c.data.seq_len = 160
    c.grpo.update(max_new_tokens=8, kl_coef=0.0, reward_workdir="", reward_fn="brevity")
    c.train.batch_size, c.train.steps = 16, 4
    c.eval.every = c.checkpoint.every = 4
    c.eval.max_batches = 1
    c.train.progress = False
  elif arg is not None:
    raise ValueError(f"grpo.py takes smoke or nothing, got {arg!r}")
  return c
