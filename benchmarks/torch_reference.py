"""PyTorch reference for the throughput benchmark: Hugging Face GPT-2 at a gptjax shape.

    python -m benchmarks.torch_reference --vocab_size=65 --num_layers=4 --num_heads=4 \
        --embed_dim=128 --seq_len=64 --batch_size=12 --steps=100 [--warmup=10] [--threads=1]

What a user would otherwise pick: `transformers.GPT2LMHeadModel(GPT2Config(...))`, built from a
config (no weights are downloaded), trained in PyTorch with a full step: forward, mean
next-token cross-entropy computed here from the logits in float32 (gptjax's objective),
backward, global-norm clipping at 1.0, AdamW (betas 0.9/0.99, weight decay 0.1 on matrices
and embeddings only, as gptjax; the device's default foreach/fused implementation) and
zero_grad(set_to_none=True). Learning rate is constant: a schedule costs nothing measurable.

Shape: n_positions=seq_len, n_embd=embed_dim, n_layer, n_head, n_inner=4*embed_dim, tanh GELU
("gelu_new", gptjax's "gelu"), tied embeddings, SDPA attention, all dropouts = `dropout`.
HF GPT-2 always has biases (projections and LayerNorms): `use_bias=False` cannot be
reproduced and is only recorded (`use_bias` / `hf_has_biases` in the result).

Devices: CUDA when available (bfloat16 autocast by default, torch.compile, TF32 matmuls),
else CPU (eager float32 by default). `dtype` is the compute dtype: "float32", "bfloat16"
(autocast; parameters stay float32, as gptjax) or None for the device default.

Timing: `warmup` untimed steps (torch.compile compiles here), then `steps` steps each
synchronised and timed on its own with time.perf_counter; median, min and max over them.
Batches are random int tokens [batch, seq_len + 1] made on the device before the clock starts.

torch and transformers are optional benchmark dependencies (`pip install ".[bench]"`);
the gptjax package never imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time

INSTALL_HINT = 'the PyTorch reference needs torch and transformers: pip install ".[bench]"'


def _import_torch():
  try:
    import torch
    import transformers
  except ImportError as e:
    raise ImportError(f"{INSTALL_HINT} ({e})") from e
  return torch, transformers


def gpt2_param_count(vocab_size: int, num_layers: int, embed_dim: int, seq_len: int) -> int:
  """Parameters of HF GPT-2 with tied embeddings and n_inner = 4d (the lm_head is wte)."""
  d = embed_dim
  per_layer = (2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d
               + (4 * d * d + 4 * d) + (4 * d * d + d))
  return vocab_size * d + seq_len * d + num_layers * per_layer + 2 * d


def measure_torch_gpt2(*, vocab_size, num_layers, num_heads, embed_dim, seq_len, batch_size,
                       steps=20, warmup=3, use_bias=True, dropout=0.0, lr=1e-3, device=None,
                       dtype="float32", compile=None, threads=None, seed=0,
                       fixed_batch=False) -> dict:
  """Times HF GPT-2 train steps at this shape; returns a JSON-able dict.

  `device`: None = "cuda" when available else "cpu". `dtype`: "float32", "bfloat16"
  (autocast) or None (bfloat16 on CUDA, float32 on CPU). `compile`: None = True on CUDA,
  False on CPU. `threads`: None = torch's default intra-op threads, else set for the run
  (restored after). `fixed_batch`: train every step on one batch (tests: the loss must fall).
  """
  torch, transformers = _import_torch()
  from transformers import GPT2Config, GPT2LMHeadModel

  if steps < 1 or warmup < 0:
    raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps} warmup={warmup}")
  device = torch.device(device if device is not None else
                        ("cuda" if torch.cuda.is_available() else "cpu"))
  on_cuda = device.type == "cuda"
  if dtype is None:
    dtype = "bfloat16" if on_cuda else "float32"
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype must be 'float32', 'bfloat16' or None, got {dtype!r}")
  if compile is None:
    compile = on_cuda

  saved_threads = torch.get_num_threads()
  saved_precision = torch.get_float32_matmul_precision()
  saved_cudnn_tf32 = torch.backends.cudnn.allow_tf32
  try:
    if threads is not None:
      torch.set_num_threads(int(threads))
    if on_cuda:
      torch.set_float32_matmul_precision("high")  # TF32 matmuls
      torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=seq_len, n_embd=embed_dim, n_layer=num_layers,
        n_head=num_heads, n_inner=4 * embed_dim, activation_function="gelu_new",
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        tie_word_embeddings=True, use_cache=False, attn_implementation="sdpa",
        bos_token_id=None, eos_token_id=None)  # GPT-2's 50256 would lie outside a small vocab
    model = GPT2LMHeadModel(config).to(device)
    model.train()
    num_params = sum(p.numel() for p in model.parameters())  # the tied lm_head counts once

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.99), eps=1e-8)

    def loss_fn(inputs, targets):
      logits = model(input_ids=inputs).logits
      return torch.nn.functional.cross_entropy(
          logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    forward = torch.compile(loss_fn) if compile else loss_fn
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if dtype == "bfloat16" else contextlib.nullcontext())

    def train_step(tokens):
      with autocast:
        loss = forward(tokens[:, :-1], tokens[:, 1:])
      loss.backward()
      torch.nn.utils.clip_grad_norm_(params, 1.0)
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)
      return loss.detach()

    def sync():
      if on_cuda:
        torch.cuda.synchronize(device)

    generator = torch.Generator().manual_seed(seed)
    num_batches = 1 if fixed_batch else warmup + steps
    batches = [torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=generator)
               .to(device) for _ in range(num_batches)]
    sync()

    first_loss = None
    t0 = time.perf_counter()
    for i in range(warmup):
      loss = train_step(batches[0 if fixed_batch else i])
      if i == 0:
        first_loss = float(loss)
    sync()
    warmup_s = time.perf_counter() - t0

    times = []
    for i in range(steps):
      tokens = batches[0 if fixed_batch else warmup + i]
      t0 = time.perf_counter()
      loss = train_step(tokens)
      sync()
      times.append(time.perf_counter() - t0)
      if first_loss is None:
        first_loss = float(loss)
    final_loss = float(loss)
    measured_threads = torch.get_num_threads()
  finally:
    torch.set_num_threads(saved_threads)
    torch.set_float32_matmul_precision(saved_precision)
    torch.backends.cudnn.allow_tf32 = saved_cudnn_tf32

  if not math.isfinite(final_loss):
    raise FloatingPointError(f"PyTorch GPT-2 reference: non-finite loss {final_loss}")
  median = statistics.median(times)
  return {
      "framework": "pytorch (transformers GPT2LMHeadModel)",
      "torch_version": torch.__version__,
      "transformers_version": transformers.__version__,
      "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
      "compile": bool(compile),
      "dtype": dtype,
      "threads": measured_threads,
      "use_bias": use_bias,
      "hf_has_biases": True,  # HF GPT-2 cannot drop biases; use_bias=False is not reproduced
      "dropout": dropout,
      "num_params": num_params,
      "vocab_size": vocab_size,
      "steps": steps, "warmup": warmup,
      "warmup_s": warmup_s,
      "step_time_median_s": median,
      "step_time_min_s": min(times),
      "step_time_max_s": max(times),
      "tokens_per_sec": batch_size * seq_len / median,
      "first_loss": first_loss,
      "final_loss": final_loss,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  for name in ("vocab_size", "num_layers", "num_heads", "embed_dim", "seq_len", "batch_size"):
    parser.add_argument(f"--{name}", type=int, required=True)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--threads", type=int, default=None, help="default: torch's own")
  parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
  parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                      help="default: bfloat16 on cuda, float32 on cpu")
  parser.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                      help="torch.compile (default: on for cuda, off for cpu)")
  parser.add_argument("--dropout", type=float, default=0.0)
  parser.add_argument("--no_bias", action="store_true",
                      help="record that the gptjax config has no biases (HF keeps them)")
  args = parser.parse_args(argv)
  result = measure_torch_gpt2(
      vocab_size=args.vocab_size, num_layers=args.num_layers, num_heads=args.num_heads,
      embed_dim=args.embed_dim, seq_len=args.seq_len, batch_size=args.batch_size,
      steps=args.steps, warmup=args.warmup, threads=args.threads, device=args.device,
      dtype=args.dtype, compile=args.compile, dropout=args.dropout, use_bias=not args.no_bias)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
