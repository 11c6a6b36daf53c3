"""The PyTorch GPT-2 reference of the throughput benchmark (skipped without torch/transformers)."""

import math
import pathlib
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = str(pathlib.Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # benchmarks/ is not an installed package
  sys.path.insert(0, REPO)

from benchmarks import torch_common  # noqa: E402
from benchmarks.torch_reference import measure_torch_gpt2  # noqa: E402

TINY = dict(vocab_size=65, num_layers=2, num_heads=4, embed_dim=32, seq_len=16, batch_size=4)


def expected_gpt2_params(vocab_size, num_layers, embed_dim, seq_len, **_):
  d = embed_dim
  layer = (2 * d                  # ln_1
           + d * 3 * d + 3 * d    # attn.c_attn
           + d * d + d            # attn.c_proj
           + 2 * d                # ln_2
           + d * 4 * d + 4 * d    # mlp.c_fc
           + 4 * d * d + d)       # mlp.c_proj
  return vocab_size * d + seq_len * d + num_layers * layer + 2 * d  # wte (tied head), wpe, ln_f


def test_tiny_shape_measures():
  r = measure_torch_gpt2(**TINY, steps=3, warmup=1, device="cpu", threads=1)
  assert math.isfinite(r["final_loss"])
  assert r["tokens_per_sec"] > 0
  assert 0 < r["step_time_min_s"] <= r["step_time_median_s"] <= r["step_time_max_s"]
  assert r["num_params"] == expected_gpt2_params(**TINY) == 28064
  assert r["device"] == "cpu" and r["dtype"] == "float32" and r["compile"] is False
  assert r["threads"] == 1 and r["use_bias"] is True and r["hf_has_biases"] is True
  for key in ("torch_version", "transformers_version"):
    assert isinstance(r[key], str) and r[key]
  # The same result keys as the nanoGPT reference (throughput reads them from both).
  assert set(torch_common.RESULT_KEYS) <= set(r)
  assert r["adamw_impl"] == "for-loop"  # torch.optim.AdamW's own choice for CPU tensors


def test_step_updates_the_model():
  r = measure_torch_gpt2(**TINY, steps=30, warmup=0, device="cpu", threads=1, fixed_batch=True)
  # Random tokens start near ln(65) = 4.17; memorising one batch must bring the loss down.
  assert abs(r["first_loss"] - math.log(65)) < 0.5
  assert r["final_loss"] < r["first_loss"] - 0.5


def test_use_bias_is_recorded_not_reproduced():
  r = measure_torch_gpt2(**TINY, steps=1, warmup=0, device="cpu", use_bias=False)
  assert r["use_bias"] is False and r["hf_has_biases"] is True
  assert r["num_params"] == expected_gpt2_params(**TINY)


def test_gpt2_closed_form_matches_the_helper():
  from benchmarks.torch_reference import gpt2_param_count
  assert gpt2_param_count(65, 2, 32, 16) == expected_gpt2_params(**TINY)
