"""Verifiable-reward RL on multi-digit addition: pretrain, SFT, then GRPO on exact match.

The data is generated in code (experiments/addition_rl.py writes runs/addition/data/):
3-digit + 3-digit sums; the held-out problems (10% of the RL prompts) appear in no training
file. A char tokenizer; every stage keeps one model shape and context.

  :pretrain -> next-token pretraining on lines "123+456=975" (the sum least-significant digit first)
  :sft      -> chat fine-tuning from runs/addition/pretrain: user "123+456", assistant "975"
  :grpo     -> GRPO from runs/addition/sft (also the KL reference): 8 samples per prompt,
               reward 1 for the exact sum (`exact_match`); held-out exact match is
               `eval/greedy/reward` (greedy) and `eval/sampled/reward` (sampled at T = 1,
               as in rollouts), scored at step 0 too (eval.at_start)

  python -m experiments.addition_rl --data_only     # the data files
  gptjax-train --config=configs/addition.py:pretrain --workdir=runs/addition/pretrain
  gptjax-train --config=configs/addition.py:sft --workdir=runs/addition/sft
  gptjax-train --config=configs/addition.py:grpo --workdir=runs/addition/grpo \
      [--config.init.step=1000]                   # from SFT's step 1000 (it keeps 1000, 1500)
  python -m experiments.addition_rl                 # all three over 3 seeds, with the figures
"""

from gptjax.config import base_config

DATA = "runs/addition/data"


def get_config(arg=None):
  c = base_config()
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 4, 128
  c.data.tokenizer.kind = "char"
  c.data.seq_len = 32
  c.optim.b2 = 0.99
  c.train.log_every = 25
  c.train.progress = False
  if arg == "pretrain":
    c.data.path = f"{DATA}/pretrain.txt"
    c.data.dedup = False
    c.train.batch_size, c.train.steps = 64, 1000
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-3, 3e-4, 100
    c.eval.every = c.checkpoint.every = 500
  elif arg == "sft":
    c.task.name = "sft"
    c.data.path = f"{DATA}/sft.jsonl"
    c.data.eval_fraction = 0.02
    c.init.workdir = "runs/addition/pretrain"
    c.train.batch_size, c.train.steps = 32, 1500
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-3, 1e-4, 30
    c.eval.every = c.checkpoint.every = 500
  elif arg == "grpo":
    c.task.name = "grpo"
    c.data.path = f"{DATA}/prompts.jsonl"
    c.data.eval_fraction = 0.1
    c.data.eval_batch_size = 500
    c.init.workdir = "runs/addition/sft"
    c.grpo.update(group_size=8, max_new_tokens=6, temperature=1.0, reward_fn="exact_match",
                  kl_coef=0.04)
    c.train.batch_size, c.train.steps = 256, 300  # 32 prompts x 8 samples per step
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 2e-4, 2e-5, 20
    c.optim.weight_decay = 0.0
    c.eval.every = 25
    c.eval.at_start = True
    c.checkpoint.every = 150
  else:
    raise ValueError(f"addition.py takes pretrain, sft or grpo, got {arg!r}")
  return c
