"""GPT-2 at its four published sizes, context 1024, bf16, for accelerators.

  :124m (default) 12 layers x 768, :350m 24 x 1024, :774m 36 x 1280, :1558m 48 x 1600.
  350m and up rematerialise each block with the save_dots policy (projections kept,
  attention and elementwise recomputed) and take 16 sequences a microbatch, which fits a
  80 GB GPU with room to spare (`gptjax-plan --config=configs/gpt2.py:774m --topology=h100`).

Optimiser as in llm.c's GPT-2 (124M) reproduction: ~0.5M-token batches, lr 6e-4 with 700
warm-up steps, cosine to 6e-5, weight decay 0.1, beta2 0.95. Data: --config.data.path (a
local corpus) or a TFDS catalogue corpus (default lm1b, when online); a 50257-piece BPE
sentencepiece tokenizer is trained from it, the embedding padded to 50304.

  :smoke -> the same layout shrunk to run two steps on a CPU (the config test uses it).
configs/gpt2_124m.py is :124m under its own name.
"""

from gptjax.config import base_config, stdlib_dir

SIZES = {"124m": (12, 12, 768), "350m": (24, 16, 1024), "774m": (36, 20, 1280),
         "1558m": (48, 25, 1600)}  # layers, heads, width


def get_config(arg=None):
  arg = arg or "124m"
  if arg not in (*SIZES, "smoke"):
    raise ValueError(f"gpt2.py takes one of {[*SIZES, 'smoke']}, got {arg!r}")
  c = base_config()
  c.data.tfds_name = "lm1b"
  c.data.seq_len = 1024
  c.data.tokenizer.vocab_size = 50257
  c.data.eval_batch_size = 64
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = SIZES.get(arg, SIZES["124m"])
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
  if arg in ("350m", "774m", "1558m"):
    c.model.remat = "save_dots"
    c.train.grad_accum = 32  # 16 sequences a microbatch
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
  return c
