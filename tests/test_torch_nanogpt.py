"""The nanoGPT-architecture PyTorch reference and the harness both references share
(benchmarks.torch_nanogpt, benchmarks.torch_common); skipped only without torch."""

import json
import math
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")

REPO = str(pathlib.Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # benchmarks/ is not an installed package
  sys.path.insert(0, REPO)

from benchmarks import torch_common  # noqa: E402
from benchmarks.torch_nanogpt import (build_model, main, measure_torch_nanogpt,  # noqa: E402
                                      nanogpt_param_count)
from benchmarks.torch_reference import gpt2_param_count  # noqa: E402

TINY = dict(vocab_size=65, num_layers=2, num_heads=4, embed_dim=32, seq_len=16, batch_size=4)
MODEL_SHAPE = {k: v for k, v in TINY.items() if k != "batch_size"}


def count(model):
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("use_bias", [True, False])
def test_param_count_is_nanogpts_closed_form(use_bias):
  d, L, V, T = 32, 2, 65, 16
  layer = 12 * d * d + 2 * d + (11 * d if use_bias else 0)  # 4 matrices, 2 LN gains, biases
  expected = V * d + T * d + L * layer + d + (d if use_bias else 0)  # tied head, wpe, ln_f
  model = build_model(torch, **MODEL_SHAPE, use_bias=use_bias)
  assert count(model) == expected == nanogpt_param_count(V, L, d, T, use_bias)
  # With biases nanoGPT is GPT-2's parameter set; without, gptjax's shakespeare_char:cpu.
  if use_bias:
    assert expected == gpt2_param_count(V, L, d, T)
  assert nanogpt_param_count(65, 4, 128, 64, use_bias=False) == 804_096


def test_architecture_is_tied_causal_and_scaled():
  model = build_model(torch, **MODEL_SHAPE, use_bias=False)
  assert model.head.weight is model.tok.weight
  assert all(m.bias is None for m in model.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm)))
  stds = {name: p.std().item() for name, p in model.named_parameters() if p.dim() == 2}
  assert abs(stds["blocks.0.attn.qkv.weight"] - 0.02) < 0.003
  assert abs(stds["blocks.0.down.weight"] - 0.02 / math.sqrt(4)) < 0.002  # 0.02/sqrt(2L)

  logits = {}
  model.head.register_forward_hook(lambda m, i, out: logits.__setitem__("x", out))
  idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(0))
  targets = torch.zeros_like(idx)
  model.eval()
  with torch.no_grad():
    model(idx, targets)
    before = logits["x"].clone()
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 65
    model(changed, targets)
  torch.testing.assert_close(logits["x"][:, :-1], before[:, :-1])  # no peeking ahead
  assert not torch.allclose(logits["x"][:, -1], before[:, -1])


def test_result_has_what_throughput_reads_and_loss_starts_at_log_vocab():
  r = measure_torch_nanogpt(**TINY, steps=2, warmup=1, device="cpu", threads=1)
  assert set(torch_common.RESULT_KEYS) <= set(r)
  assert r["framework"] == "pytorch (nanoGPT architecture)"
  assert r["device"] == "cpu" and r["dtype"] == "float32" and r["compile"] is False
  assert r["threads"] == 1 and r["use_bias"] is True and r["dropout"] == 0.0
  assert r["num_params"] == nanogpt_param_count(65, 2, 32, 16)
  assert r["tokens_per_sec"] > 0
  assert 0 < r["step_time_min_s"] <= r["step_time_median_s"] <= r["step_time_max_s"]
  assert r["host"]["cores"] >= 1 and r["host"]["cpu"] and r["host"]["accelerator"] is None
  # Small init: the first loss on random tokens is the uniform one, ln(65) = 4.17.
  assert abs(r["first_loss"] - math.log(65)) < 0.15
  json.dumps(r)


def test_steps_on_one_batch_bring_the_loss_down():
  r = measure_torch_nanogpt(**TINY, steps=30, warmup=0, device="cpu", threads=1,
                            fixed_batch=True, use_bias=False)
  assert r["final_loss"] < r["first_loss"] - 0.5


def test_adamw_kernel_is_chosen_and_recorded():
  fused_on_cpu = "cpu" in torch_common.fused_adamw_devices(torch)
  model = build_model(torch, **MODEL_SHAPE)
  opt, impl = torch_common.make_adamw(torch, model, lr=1e-3, adamw="auto", device_type="cpu")
  assert impl == ("fused" if fused_on_cpu else "foreach")
  assert opt.defaults["fused"] is (True if fused_on_cpu else None)
  # nanoGPT's configure_optimizers: decay rank >= 2 tensors (matrices, the tied embedding
  # once), nothing else.
  decay, no_decay = opt.param_groups
  assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
  assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2
                                                           for p in no_decay["params"])
  assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == count(model)
  # torch's own default on CPU is the for-loop kernel (no foreach kernels for CPU tensors).
  assert torch_common.resolve_adamw(torch, "default", "cpu", model.parameters()) == "for-loop"
  with pytest.raises(ValueError):
    torch_common.resolve_adamw(torch, "fast", "cpu", [])

  # The kernel changes speed, not the arithmetic.
  losses = {}
  for adamw in ("fused", "foreach", "for-loop") if fused_on_cpu else ("foreach", "for-loop"):
    r = measure_torch_nanogpt(**TINY, steps=3, warmup=0, device="cpu", threads=1,
                              fixed_batch=True, adamw=adamw)
    assert r["adamw_impl"] == adamw
    losses[adamw] = r["final_loss"]
  assert max(losses.values()) - min(losses.values()) < 1e-4, losses


def test_command_line_prints_the_result(capsys):
  main(["--vocab_size=65", "--num_layers=1", "--num_heads=2", "--embed_dim=16",
        "--seq_len=8", "--batch_size=2", "--steps=1", "--warmup=0", "--threads=1",
        "--no_bias", "--adamw=foreach"])
  r = json.loads(capsys.readouterr().out)
  assert r["use_bias"] is False and r["adamw_impl"] == "foreach"
  assert r["num_params"] == nanogpt_param_count(65, 1, 16, 8, use_bias=False)
