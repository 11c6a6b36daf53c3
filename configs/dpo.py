"""Direct preference optimisation (task.name=dpo) on human preference pairs.

  (none) -> DPO, beta 0.1, on Anthropic HH harmless-base pairs (5% held out): the policy and
            its frozen reference both start as runs/hh_sft (see configs/reward.py's chain)
  :lora  -> LoRA r=8 adapters train; the reference is the base weights, adapters off
  :smoke -> seconds on CPU from fresh weights with LoRA (the base is the reference), for tests
"""

from gptjax.config import base_config

HH = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"


def get_config(arg=None):
  c = base_config()
  c.task.name = "dpo"
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 4, 4, 128
  c.data.path = HH
  c.data.seq_len = 256
  c.data.eval_fraction = 0.05
  c.data.eval_batch_size = 32
  c.init.workdir = "runs/hh_sft"
  c.dpo.beta = 0.1
  c.train.batch_size, c.train.steps, c.train.log_every = 16, 200, 25
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 5e-5, 5e-6, 20
  c.optim.weight_decay = 0.0
  c.eval.every = c.checkpoint.every = 100
  c.eval.at_start = True  # step 0 scores the starting model: the "before" figures
  if arg in ("lora", "smoke"):
    c.lora.rank, c.lora.alpha = 8, 16.0
    c.optim.lr, c.optim.min_lr = 5e-4, 5e-5
  if arg == "smoke":
    c.init.workdir = ""
    c.data.tokenizer.kind = "char"
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
    c.train.batch_size, c.train.steps = 8, 4
    c.eval.every = c.checkpoint.every = 4
    c.eval.max_batches = 2
    c.train.progress = False
  elif arg not in (None, "lora"):
    raise ValueError(f"dpo.py takes lora, smoke or nothing, got {arg!r}")
  return c
