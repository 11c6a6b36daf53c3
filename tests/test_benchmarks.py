"""The throughput harness measures the real train step and writes its table."""

import json

from gptjax.metrics import flops_per_token
from test_train import load_config


def test_flops_per_token_is_palm_formula():
  # GPT-2 124M at T=1024: 6N + 12*L*T*d with N = 124M - 786k position table = 123.6M.
  n, L, T, d = 85_000_000 + 38_597_376, 12, 1024, 768
  assert flops_per_token(n, L, T, d) == 6 * n + 12 * L * T * d
  assert flops_per_token(n, L, T, d, causal=True) == 6 * n + 6 * L * T * d


def test_harness_times_the_real_step_and_writes_the_table(tmp_path, monkeypatch):
  from benchmarks import throughput
  config = load_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  result = throughput.measure_gptjax(config, windows=2, steps=2, warmup=1)
  assert result["tokens_per_sec"] > 0 and result["compile_s"] > 0
  assert result["step_time_min_s"] <= result["step_time_median_s"] <= result["step_time_max_s"]
  assert result["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
  assert result["mfu"] is None  # no peak FLOP/s is known for a CPU

  monkeypatch.setattr(throughput, "RESULTS", str(tmp_path))
  shape = {"num_layers": 2, "num_heads": 4, "embed_dim": 32, "seq_len": 32, "batch_size": 8}
  with open(tmp_path / "tiny.json", "w") as f:
    json.dump({"gptjax": result, "shape": shape,
               "torch": {"tokens_per_sec": result["tokens_per_sec"] / 2}}, f)
  table = throughput.write_table()
  row = [line for line in table.splitlines() if line.startswith("| tiny ")][0]
  assert "2.00x" in row and "2 x 32, 32, 8" in row


def test_model_flops_leave_out_lookup_tables_only():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from gptjax.metrics import model_flops_per_token
  from gptjax.model import GPT, GPTConfig, count_params
  for tied in (True, False):
    cfg = GPTConfig(vocab_size=50, num_layers=2, num_heads=2, embed_dim=16, max_len=8,
                    tie_embeddings=tied)
    params = nn.unbox(GPT(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    matmul = count_params(params) - 8 * 16 - (0 if tied else 50 * 16)  # wpe; untied wte
    assert model_flops_per_token(params, cfg, 8) == flops_per_token(matmul, 2, 8, 16)


def test_shape_only_build_lowers_the_same_step_as_the_trainer(tmp_path):
  """benchmarks.memory compiles without reading data; it must be the trainer's own step."""
  from benchmarks.memory import lower_step
  from gptjax.train import build_run
  config = load_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  with_data = build_run(config)
  config.model.vocab_size = with_data.model_cfg.vocab_size
  shape_only = build_run(config, with_data=False)
  assert shape_only.datasets is None
  assert lower_step(shape_only, config).as_text() == lower_step(with_data, config).as_text()


def test_every_ablation_flip_is_a_valid_override():
  """A typo here would surface only on a lent GPU, where device time is scarce."""
  from benchmarks import ablate
  from gptjax.config import base_config
  config = base_config()
  for piece, flip, kind in ablate.PIECES + ablate.CPU_PIECES + ablate.GPU_PIECES:
    key, value = flip.removeprefix("--config.").split("=")
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    assert leaf in node, f"{piece}: no config key {key}"
    value = value.replace("CHUNK", "16")
    node[leaf] = type(node[leaf])(value == "true" if isinstance(node[leaf], bool) else value)
    assert kind in ("step", "loop")
