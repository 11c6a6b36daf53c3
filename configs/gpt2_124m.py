"""GPT-2 small (124M): 12 layers, 12 heads, 768 wide, context 1024, for accelerators.

Optimiser as in llm.c's GPT-2 (124M) reproduction: ~0.5M-token batches, lr 6e-4 with 700
warm-up steps, cosine to 6e-5, weight decay 0.1, beta2 0.95. Data: --config.data.path (a
local corpus) or a TFDS catalogue corpus (default lm1b, when online); a 50257-piece BPE
sentencepiece tokenizer is trained from it, the embedding padded to 50304.

  :smoke -> the same layout shrunk to run two steps on a CPU (the config test uses it).
"""

from gptjax.config import base_config, stdlib_dir


def get_config(arg=None):
  c = base_config()
  c.data.tfds_name = "lm1b"
  c.data.seq_len = 1024
  c.data.tokenizer.vocab_size = 50257
  c.data.eval_batch_size = 64
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 12, 12, 768
  c.model.vocab_multiple = 128
  c.model.dtype = "bfloat16"
  c.model.attention = "auto"
  # float32 logits of one 64 x 1024 microbatch over 50304 pieces would be 13 GB: chunk them.
  c.task.loss_chunk = 128
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 6e-4, 6e-5, 700
  c.optim.b2 = 0.95
  c.train.steps = 19073  # 10B tokens at 524,288 tokens a step
  c.train.batch_size = 512
  c.train.grad_accum = 8
  c.train.log_every = 20
  c.eval.every = 1000
  c.eval.max_batches = 100
  c.checkpoint.every = 1000
  if arg == "smoke":
    c.data.tfds_name = ""
    c.data.path = stdlib_dir()
    c.data.file_pattern = "*.py"
    c.data.max_chars = 300_000
    c.data.seq_len = 64
    c.data.tokenizer.vocab_size = 512
    c.data.eval_batch_size = 8
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 4, 64
    c.model.dtype = "float32"
    c.task.loss_chunk = 16  # keeps the chunked path exercised by the smoke run
    c.train.steps, c.train.batch_size, c.train.grad_accum = 2, 8, 2
    c.optim.warmup_steps = 1
    c.eval.max_batches = 2
  elif arg:
    raise ValueError(f"gpt2_124m.py takes 'smoke' or nothing, got {arg!r}")
  return c
