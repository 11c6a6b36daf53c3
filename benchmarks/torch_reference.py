"""PyTorch reference for the throughput benchmark: Hugging Face GPT-2 at a gptjax shape.

    python -m benchmarks.torch_reference --vocab_size=65 --num_layers=4 --num_heads=4 \
        --embed_dim=128 --seq_len=64 --batch_size=12 --steps=100 [--warmup=10] [--threads=1]

What a user would otherwise pick: `transformers.GPT2LMHeadModel(GPT2Config(...))`, built from a
config (no weights are downloaded), its mean next-token cross-entropy computed here from the
logits in float32 (gptjax's objective). The step, the timing, the device/dtype choice, the
command line and the result dict are benchmarks.torch_common's, shared with the
nanoGPT-architecture reference (benchmarks.torch_nanogpt). AdamW here is torch's default
kernel (`--adamw=default`: for-loop on CPU, foreach on CUDA), what a user gets from
torch.optim.AdamW; `adamw_impl` in the result says which ran.

Shape: n_positions=seq_len, n_embd=embed_dim, n_layer, n_head, n_inner=4*embed_dim, tanh GELU
("gelu_new", gptjax's "gelu"), tied embeddings, SDPA attention, all dropouts = `dropout`.
HF GPT-2 always has biases (projections and LayerNorms): `use_bias=False` cannot be
reproduced and is only recorded (`use_bias` / `hf_has_biases` in the result).

torch and transformers are optional benchmark dependencies (`pip install ".[bench]"`);
the gptjax package never imports them.
"""

from __future__ import annotations

from benchmarks import torch_common

INSTALL_HINT = 'the PyTorch reference needs torch and transformers: pip install ".[bench]"'


def _import_transformers():
  try:
    import transformers
  except ImportError as e:
    raise ImportError(f"{INSTALL_HINT} ({e})") from e
  return transformers


def gpt2_param_count(vocab_size: int, num_layers: int, embed_dim: int, seq_len: int) -> int:
  """Parameters of HF GPT-2 with tied embeddings and n_inner = 4d (the lm_head is wte)."""
  d = embed_dim
  per_layer = (2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d
               + (4 * d * d + 4 * d) + (4 * d * d + d))
  return vocab_size * d + seq_len * d + num_layers * per_layer + 2 * d


def measure_torch_gpt2(*, vocab_size, num_layers, num_heads, embed_dim, seq_len, batch_size,
                       use_bias=True, dropout=0.0, adamw="default", **timing) -> dict:
  """Times HF GPT-2 train steps at this shape; returns a JSON-able dict.

  `timing`: steps, warmup, lr, device, dtype, compile, threads, seed, fixed_batch, as
  benchmarks.torch_common.measure. `adamw`: torch_common.ADAMW_CHOICES.
  """
  torch_common.import_torch()
  transformers = _import_transformers()

  def build(torch, device):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=seq_len, n_embd=embed_dim, n_layer=num_layers,
        n_head=num_heads, n_inner=4 * embed_dim, activation_function="gelu_new",
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        tie_word_embeddings=True, use_cache=False, attn_implementation="sdpa",
        bos_token_id=None, eos_token_id=None)  # GPT-2's 50256 would lie outside a small vocab
    model = GPT2LMHeadModel(config).to(device)

    def loss_fn(inputs, targets):
      logits = model(input_ids=inputs).logits
      return torch.nn.functional.cross_entropy(
          logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    return model, loss_fn, {
        "framework": "pytorch (transformers GPT2LMHeadModel)",
        "transformers_version": transformers.__version__,
        "hf_has_biases": True,  # HF GPT-2 cannot drop biases; use_bias=False is not reproduced
    }

  return torch_common.measure(build, vocab_size=vocab_size, seq_len=seq_len,
                              batch_size=batch_size, use_bias=use_bias, dropout=dropout,
                              adamw=adamw, **timing)


def main(argv=None) -> None:
  torch_common.main(measure_torch_gpt2, __doc__, argv, adamw_default="default",
                    no_bias_help="record that the gptjax config has no biases (HF keeps them)")


if __name__ == "__main__":
  main()
