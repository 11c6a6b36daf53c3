"""Llama-layout models for pretraining at scale: RoPE, RMSNorm, SwiGLU, no biases, bf16.

  :1b   Llama 3.2 1B's shape: 16 layers x 2048, 32 heads sharing 8 key/value heads, SwiGLU
        8192, tied embeddings, a 128,256-piece vocabulary, RoPE theta 500,000.
  :7b   Llama 2 7B's shape: 32 layers x 4096, 32 heads, SwiGLU 11008, untied head, 32,000
        pieces, full remat.
  :smoke the 1b layout shrunk to run two steps on a CPU.
Both full sizes train FSDP over every device (mesh.fsdp=-1) on 4096-token windows of C4
(TFDS c4/en, online) or --config.data.path; 1M-token batches (256 x 4096) in 4 (7b) or 8 microbatches. Whether a slice
holds them: `gptjax-plan --config=configs/llama.py:7b --topology=v5p-128`.
"""

from gptjax.config import base_config, stdlib_dir

SIZES = {  # layers, width, heads, kv heads, mlp, vocab, tied, rope theta
    "1b": (16, 2048, 32, 8, 8192, 128256, True, 500000.0),
    "7b": (32, 4096, 32, 32, 11008, 32000, False, 10000.0),
}


def get_config(arg=None):
  arg = arg or "1b"
  if arg not in (*SIZES, "smoke"):
    raise ValueError(f"llama.py takes one of {[*SIZES, 'smoke']}, got {arg!r}")
  c = base_config()
  m = c.model
  (m.num_layers, m.embed_dim, m.num_heads, m.num_kv_heads, m.mlp_dim, vocab,
   m.tie_embeddings, m.rope_theta) = SIZES.get(arg, SIZES["1b"])
  m.positions, m.norm, m.mlp, m.use_bias, m.norm_eps = "rope", "rmsnorm", "swiglu", False, 1e-5
  m.dtype, m.attention = "bfloat16", "auto"
  m.remat = "full" if arg == "7b" else "save_dots"
  m.vocab_multiple = 128
  c.data.tfds_name, c.data.text_key = "c4/en", "text"
  c.data.seq_len = 4096
  c.data.tokenizer.vocab_size = vocab
  c.data.eval_batch_size = 64
  c.task.loss_chunk = 512
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-4, 3e-5, 2000
  c.optim.b2, c.optim.eps = 0.95, 1e-5
  c.train.steps = 100_000  # 105B tokens
  c.train.batch_size = 256
  # Microbatches of 32 sequences (1b: 4 a GPU on 8 GPUs) or 64 (7b: 1 a chip on a v5p-128).
  c.train.grad_accum = 4 if arg == "7b" else 8
  c.train.log_every = 20
  c.eval.every, c.eval.max_batches = 2000, 50
  c.checkpoint.every = 1000
  if arg == "smoke":
    c.data.tfds_name, c.data.path, c.data.file_pattern = "", stdlib_dir(), "*.py"
    c.data.max_chars = 300_000
    c.data.seq_len, c.data.eval_batch_size = 64, 8
    c.data.tokenizer.vocab_size = 512
    m.num_layers, m.embed_dim, m.num_heads, m.num_kv_heads, m.mlp_dim = 2, 64, 4, 2, 0
    m.dtype = "float32"
    c.task.loss_chunk = 16
    c.mesh.data, c.mesh.fsdp = -1, 1
    c.train.steps, c.train.batch_size, c.train.grad_accum = 2, 8, 1
    c.optim.warmup_steps = 1
    c.eval.max_batches = 2
  return c
