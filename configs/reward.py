"""A reward model from human preference pairs (task.name=reward), on an SFT model.

  (none) -> Bradley-Terry on Anthropic HH harmless-base pairs (5% held out), starting from
            runs/hh_sft (configs/sft.py with --config.data.path=HH: SFT on chosen replies)
  :smoke -> seconds on CPU from fresh weights, a char tokenizer, for tests
The chain the README measures (learning from feedback on HH):

  gptjax-train --config=configs/sft.py:pretrain --workdir=runs/chat_pretrain
  gptjax-train --config=configs/sft.py:full --workdir=runs/hh_sft \\
      --config.data.path=../shared/data/hh-rlhf/harmless-base-test.jsonl.gz
  gptjax-train --config=configs/reward.py --workdir=runs/hh_reward
  gptjax-train --config=configs/dpo.py --workdir=runs/hh_dpo
  gptjax-train --config=configs/grpo.py --workdir=runs/hh_grpo
"""

from gptjax.config import base_config

HH = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"


def get_config(arg=None):
  c = base_config()
  c.task.name = "reward"
  c.model.score_head = True
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 4, 4, 128
  c.data.path = HH
  c.data.seq_len = 256
  c.data.eval_fraction = 0.05
  c.data.eval_batch_size = 32
  c.init.workdir = "runs/hh_sft"
  c.train.batch_size, c.train.steps, c.train.log_every = 16, 200, 25
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-4, 1e-5, 20
  c.eval.every = c.checkpoint.every = 100
  c.eval.at_start = True  # step 0 scores the starting model: the "before" figures
  if arg == "smoke":
    c.init.workdir = ""
    c.data.tokenizer.kind = "char"
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
    c.train.batch_size, c.train.steps = 8, 4
    c.eval.every = c.checkpoint.every = 4
    c.eval.max_batches = 2
    c.train.progress = False
  elif arg is not None:
    raise ValueError(f"reward.py takes smoke or nothing, got {arg!r}")
  return c
