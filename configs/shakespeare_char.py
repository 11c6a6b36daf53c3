"""nanoGPT's character-level Shakespeare, reproduced.

  :cpu  -> nanoGPT's CPU configuration (4 layers, 4 heads, 128 wide, context 64, batch 12,
           2000 iterations, dropout 0); nanoGPT reaches validation loss 1.88.
  (none)-> nanoGPT's GPU configuration, config/train_shakespeare_char.py (6 layers, 6 heads,
           384 wide, context 256, batch 64, 5000 iterations, dropout 0.2); best 1.4697.
Both: AdamW lr 1e-3 cosine to 1e-4 over the run with 100 warm-up steps, beta2 0.99, weight
decay 0.1, grad clip 1.0, no biases (nanoGPT's default bias=False).

Data: --config.data.path=../shared/data/tinyshakespeare/input.txt, or (online) TFDS
tiny_shakespeare; either way the first 90% of characters train, the last 10% validate.
"""

from gptjax.config import base_config


def get_config(arg=None):
  c = base_config()
  c.data.tfds_name = "tiny_shakespeare"
  c.data.tokenizer.kind = "char"
  c.data.eval_fraction = 0.1
  c.data.dedup = False  # one document: nothing to deduplicate, keep the split exact
  c.model.use_bias = False
  c.optim.lr = 1e-3
  c.optim.min_lr = 1e-4
  c.optim.warmup_steps = 100
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.1
  c.optim.grad_clip = 1.0
  c.eval.every = 250
  c.checkpoint.every = 1000
  c.train.sample_prompt = "\n"
  c.train.sample_tokens = 500
  if arg == "cpu":
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 4, 4, 128
    c.model.dropout = 0.0
    c.data.seq_len = 64
    c.data.eval_batch_size = 256
    c.train.batch_size = 12
    c.train.steps = 2000
    c.train.log_every = 50
  elif arg in (None, "", "gpu"):
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 6, 6, 384
    c.model.dropout = 0.2
    c.model.dtype = "bfloat16"
    c.model.attention = "auto"  # flash attention: cuDNN on GPU, splash on TPU (T % 128 == 0)
    c.data.seq_len = 256
    c.data.eval_batch_size = 128
    c.train.batch_size = 64
    c.train.steps = 5000
    c.train.log_every = 100
  else:
    raise ValueError(f"shakespeare_char.py takes 'cpu' or nothing, got {arg!r}")
  return c
