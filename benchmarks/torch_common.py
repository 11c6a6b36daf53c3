"""What the PyTorch references of the throughput benchmark share.

Each reference (benchmarks.torch_reference: Hugging Face GPT-2; benchmarks.torch_nanogpt:
nanoGPT's architecture) only builds its model and its loss; everything else is here, so the
two are timed the same way:

  device / dtype  CUDA when available (bfloat16 autocast, torch.compile, TF32 matmuls by
                  default), else CPU (eager float32). `dtype` is the compute dtype; parameters
                  stay float32 (autocast), as in gptjax.
  step            forward + loss under autocast, backward, global-norm clipping at 1.0, AdamW
                  (betas 0.9/0.99, eps 1e-8, weight decay 0.1 on tensors of rank >= 2 only:
                  matrices and embeddings, as nanoGPT's configure_optimizers and gptjax),
                  zero_grad(set_to_none=True). Constant learning rate: a schedule costs nothing
                  measurable.
  AdamW kernel    `adamw`: "fused" (one fused kernel; PyTorch has it on CPU too since 2.4),
                  "foreach" (multi-tensor), "for-loop" (one tensor at a time), "default" (what
                  torch.optim.AdamW picks when not told: foreach on CUDA, for-loop on CPU), or
                  "auto" (fused where the device has it, else foreach). The kernel that ran is
                  recorded as `adamw_impl`.
  timing          `warmup` untimed steps (torch.compile compiles here), then `steps` steps each
                  synchronised and timed on its own with time.perf_counter; median, min, max.
                  Batches are random int tokens [batch, seq_len + 1] made on the device before
                  the clock starts (`fixed_batch`: one batch for every step; tests).
  result          one JSON-able dict, the same keys for every reference (below), plus
                  what the reference adds; `host` as benchmarks.results_files.host_info.
  command line    the shape flags, --steps/--warmup/--threads/--device/--dtype/--compile/
                  --dropout/--no_bias/--adamw, and the result printed as JSON.

torch (and transformers, for the HF reference) are optional benchmark dependencies
(`pip install ".[bench]"`); the gptjax package never imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from typing import Callable

from benchmarks import results_files

INSTALL_HINT = 'the PyTorch references need torch (and transformers): pip install ".[bench]"'
SHAPE_ARGS = ("vocab_size", "num_layers", "num_heads", "embed_dim", "seq_len", "batch_size")
ADAMW_CHOICES = ("auto", "fused", "foreach", "for-loop", "default")
# Keys every reference's result has (benchmarks.throughput reads these).
RESULT_KEYS = ("framework", "torch_version", "device", "host", "compile", "dtype", "threads",
               "adamw_impl", "use_bias", "dropout", "num_params", "vocab_size", "steps",
               "warmup", "warmup_s", "step_time_median_s", "step_time_min_s",
               "step_time_max_s", "tokens_per_sec", "first_loss", "final_loss")


def import_torch():
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"{INSTALL_HINT} ({e})") from e
  return torch


def fused_adamw_devices(torch) -> list[str]:
  """Device types with a fused AdamW kernel in this PyTorch ('cpu' from 2.4 on)."""
  try:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    return list(_get_fused_kernels_supported_devices())
  except ImportError:  # an older or newer layout: the documented CUDA only
    return ["cuda"]


def resolve_adamw(torch, adamw: str, device_type: str, params) -> str:
  """The AdamW kernel that `adamw` means on this device: 'fused', 'foreach' or 'for-loop'."""
  if adamw not in ADAMW_CHOICES:
    raise ValueError(f"adamw must be one of {ADAMW_CHOICES}, got {adamw!r}")
  if adamw == "auto":
    return "fused" if device_type in fused_adamw_devices(torch) else "foreach"
  if adamw == "default":  # what torch.optim.AdamW decides when given neither flag
    try:
      from torch.optim.optimizer import _default_to_fused_or_foreach
      fused, foreach = _default_to_fused_or_foreach(list(params), False, False)
    except ImportError:
      fused, foreach = False, device_type == "cuda"
    return "fused" if fused else "foreach" if foreach else "for-loop"
  if adamw == "fused" and device_type not in fused_adamw_devices(torch):
    raise ValueError(f"this PyTorch has no fused AdamW for {device_type!r}")
  return adamw


def make_adamw(torch, model, *, lr: float, adamw: str, device_type: str,
               weight_decay: float = 0.1, betas=(0.9, 0.99), eps: float = 1e-8):
  """AdamW over two groups (decay rank >= 2 tensors, not the rest); returns (opt, kernel)."""
  params = [p for p in model.parameters() if p.requires_grad]  # a tied tensor comes once
  impl = resolve_adamw(torch, adamw, device_type, params)
  groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
  kernel = {"fused": {"fused": True}, "foreach": {"foreach": True},
            "for-loop": {"foreach": False, "fused": False}}[impl]
  return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kernel), impl


Build = Callable[..., tuple]  # build(torch, device) -> (model, loss_fn(inputs, targets), extra)


def measure(build: Build, *, vocab_size, seq_len, batch_size, steps=20, warmup=3,
            use_bias=True, dropout=0.0, lr=1e-3, device=None, dtype="float32", compile=None,
            threads=None, seed=0, fixed_batch=False, adamw="auto") -> dict:
  """Times `build`'s model's train steps; returns the result dict (RESULT_KEYS + extra).

  `build(torch, device)` makes the model on `device` (after torch.manual_seed(seed)) and
  returns (model, loss_fn, extra): loss_fn(inputs, targets) is the mean next-token loss,
  `extra` is merged into the result (it must set "framework"). `device`: None = "cuda" when
  available else "cpu". `dtype`: "float32", "bfloat16" (autocast) or None (bfloat16 on CUDA,
  float32 on CPU). `compile`: None = True on CUDA, False on CPU. `threads`: None = torch's
  default intra-op threads, else set for the run (restored after). `adamw`: ADAMW_CHOICES.
  """
  torch = import_torch()
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
    model, loss_fn, extra = build(torch, device)
    model.train()
    num_params = sum(p.numel() for p in model.parameters())  # a tied tensor counts once
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, adamw_impl = make_adamw(torch, model, lr=lr, adamw=adamw,
                                       device_type=device.type)

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
    raise FloatingPointError(f"{extra.get('framework')}: non-finite loss {final_loss}")
  device_name = torch.cuda.get_device_name(device) if on_cuda else "cpu"
  median = statistics.median(times)
  result = {
      "framework": None,
      "torch_version": torch.__version__,
      "device": device_name,
      "host": results_files.host_info(None if device_name == "cpu" else f"1 x {device_name}"),
      "compile": bool(compile),
      "dtype": dtype,
      "threads": measured_threads,
      "adamw_impl": adamw_impl,
      "use_bias": use_bias,
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
  result.update(extra)
  return result


def main(measure_fn: Callable[..., dict], doc: str, argv=None, *, adamw_default="auto",
         no_bias_help="train without biases") -> None:
  """The command line every reference has: parse, call measure_fn(**args), print JSON."""
  parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  for name in SHAPE_ARGS:
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
  parser.add_argument("--no_bias", action="store_true", help=no_bias_help)
  parser.add_argument("--adamw", default=adamw_default, choices=ADAMW_CHOICES,
                      help=f"AdamW kernel (default: {adamw_default})")
  args = vars(parser.parse_args(argv))
  args["use_bias"] = not args.pop("no_bias")
  print(json.dumps(measure_fn(**args), indent=2))
