"""A seconds-long run for tests: 2 layers, 32 wide, character tokenizer, stdlib source."""

from gptjax.config import base_config, stdlib_dir


def get_config(arg=None):
  del arg
  c = base_config()
  c.data.path = stdlib_dir()
  c.data.file_pattern = "*.py"
  c.data.max_chars = 200_000
  c.data.seq_len = 32
  c.data.tokenizer.kind = "char"
  c.data.eval_batch_size = 16
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 4, 32
  c.train.steps = 20
  c.train.batch_size = 8
  c.train.log_every = 5
  c.optim.warmup_steps = 5
  c.eval.every = 10
  c.eval.max_batches = 4
  c.checkpoint.every = 10
  c.train.progress = False
  return c
