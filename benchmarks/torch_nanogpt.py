"""PyTorch reference for the throughput benchmark: nanoGPT's architecture and step at a shape.

    python -m benchmarks.torch_nanogpt --vocab_size=65 --num_layers=4 --num_heads=4 \
        --embed_dim=128 --seq_len=64 --batch_size=12 --steps=100 [--no_bias] [--threads=1]

The model nanoGPT (github.com/karpathy/nanoGPT, model.py) trains, written here from its
description (none of its code is used):
  tokens + learned positions -> dropout -> num_layers pre-LayerNorm blocks
    x += dropout(proj(causal SDPA(q, k, v from one fused qkv Linear)))   F.scaled_dot_product_
         attention(is_causal=True), attention dropout in training
    x += dropout(Linear(4d -> d)(GELU(Linear(d -> 4d)(LN(x)))))          exact (erf) GELU,
         nn.GELU(), as nanoGPT; gptjax and the HF reference use the tanh approximation
  -> final LayerNorm -> lm_head tied to the token embedding (no bias).
  LayerNorms (eps 1e-5) and Linears carry biases only when use_bias (nanoGPT's `bias`; its
  default and gptjax's shakespeare_char config: none). Init: normal(0, 0.02) for Linears and
  embeddings, zero biases, the two residual projections of each block normal(0, 0.02 /
  sqrt(2 * num_layers)).
The step is nanoGPT train.py's without gradient accumulation, through
benchmarks.torch_common (shared with the HF GPT-2 reference): cross-entropy over every
position, backward, clip_grad_norm_(1.0), AdamW with configure_optimizers' two groups (weight
decay 0.1 on rank >= 2 tensors, none on biases and LayerNorm gains), zero_grad(set_to_none=
True). AdamW's kernel: nanoGPT asks for fused=True where PyTorch offers it, which its code
took to mean CUDA only; PyTorch has had a fused AdamW on CPU since 2.4, so `--adamw=auto`
(the default) takes the fused kernel wherever torch says it exists, foreach elsewhere.
`adamw_impl` in the result says which ran.
"""

from __future__ import annotations

import math

from benchmarks import torch_common


def nanogpt_param_count(vocab_size: int, num_layers: int, embed_dim: int, seq_len: int,
                        use_bias: bool = True) -> int:
  """Parameters of nanoGPT's GPT with tied embeddings (position table included)."""
  d, b = embed_dim, int(use_bias)
  per_layer = 12 * d * d + 2 * d + b * (2 * d + 3 * d + d + 4 * d + d)  # LN gains; biases
  return vocab_size * d + seq_len * d + num_layers * per_layer + d + b * d


def build_model(torch, *, vocab_size, num_layers, num_heads, embed_dim, seq_len,
                use_bias=True, dropout=0.0):
  """nanoGPT's architecture as a torch.nn.Module: model(idx, targets) -> mean loss."""
  nn, F = torch.nn, torch.nn.functional
  if embed_dim % num_heads:
    raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")

  class Attention(nn.Module):
    def __init__(self):
      super().__init__()
      self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=use_bias)
      self.out = nn.Linear(embed_dim, embed_dim, bias=use_bias)
      self.drop = nn.Dropout(dropout)

    def forward(self, x):
      batch, length, _ = x.shape
      heads = self.qkv(x).view(batch, length, 3, num_heads, embed_dim // num_heads)
      q, k, v = heads.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, dh]
      y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if self.training else 0.0,
                                         is_causal=True)
      return self.drop(self.out(y.transpose(1, 2).reshape(batch, length, embed_dim)))

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1 = nn.LayerNorm(embed_dim, eps=1e-5, bias=use_bias)
      self.attn = Attention()
      self.norm2 = nn.LayerNorm(embed_dim, eps=1e-5, bias=use_bias)
      self.up = nn.Linear(embed_dim, 4 * embed_dim, bias=use_bias)
      self.down = nn.Linear(4 * embed_dim, embed_dim, bias=use_bias)
      self.drop = nn.Dropout(dropout)

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.drop(self.down(F.gelu(self.up(self.norm2(x)))))

  class NanoGPT(nn.Module):
    def __init__(self):
      super().__init__()
      self.tok = nn.Embedding(vocab_size, embed_dim)
      self.pos = nn.Embedding(seq_len, embed_dim)
      self.drop = nn.Dropout(dropout)
      self.blocks = nn.ModuleList(Block() for _ in range(num_layers))
      self.norm = nn.LayerNorm(embed_dim, eps=1e-5, bias=use_bias)
      self.head = nn.Linear(embed_dim, vocab_size, bias=False)
      self.head.weight = self.tok.weight  # tied
      for module in self.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
          nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
          nn.init.zeros_(module.bias)
      for block in self.blocks:  # residual projections, GPT-2's scaled init
        for proj in (block.attn.out, block.down):
          nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * num_layers))

    def forward(self, idx, targets):
      positions = torch.arange(idx.shape[1], device=idx.device)
      x = self.drop(self.tok(idx) + self.pos(positions))
      for block in self.blocks:
        x = block(x)
      logits = self.head(self.norm(x))
      return F.cross_entropy(logits.float().reshape(-1, vocab_size), targets.reshape(-1))

  return NanoGPT()


def measure_torch_nanogpt(*, vocab_size, num_layers, num_heads, embed_dim, seq_len, batch_size,
                          use_bias=True, dropout=0.0, adamw="auto", **timing) -> dict:
  """Times nanoGPT-architecture train steps at this shape; returns a JSON-able dict.

  `timing`: steps, warmup, lr, device, dtype, compile, threads, seed, fixed_batch, as
  benchmarks.torch_common.measure. `adamw`: torch_common.ADAMW_CHOICES.
  """
  def build(torch, device):
    model = build_model(torch, vocab_size=vocab_size, num_layers=num_layers,
                        num_heads=num_heads, embed_dim=embed_dim, seq_len=seq_len,
                        use_bias=use_bias, dropout=dropout).to(device)
    return model, model, {"framework": "pytorch (nanoGPT architecture)",
                          "activation": "gelu (erf)"}

  return torch_common.measure(build, vocab_size=vocab_size, seq_len=seq_len,
                              batch_size=batch_size, use_bias=use_bias, dropout=dropout,
                              adamw=adamw, **timing)


def main(argv=None) -> None:
  torch_common.main(measure_torch_nanogpt, __doc__, argv, adamw_default="auto")


if __name__ == "__main__":
  main()
