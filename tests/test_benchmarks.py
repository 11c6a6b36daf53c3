"""The throughput harness measures the real train step and writes its table."""

import json

import pytest

from benchmarks import results_files
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
  host = results_files.host_info()
  tps = result["tokens_per_sec"]
  with open(tmp_path / "tiny.json", "w") as f:
    json.dump({"gptjax": result, "shape": shape, "host": host,
               "torch_nanogpt": {"tokens_per_sec": tps / 4, "adamw_impl": "fused"},
               "torch_hf": {"tokens_per_sec": tps / 2, "adamw_impl": "for-loop"}}, f)
  with open(tmp_path / "old.json", "w") as f:  # before the nanoGPT reference and host_info
    json.dump({"gptjax": result, "shape": shape, "host": "x86_64, 2 cores",
               "torch": {"tokens_per_sec": tps / 2}}, f)
  table = throughput.write_table()
  header = [line for line in table.splitlines() if line.startswith("| run ")][0]
  assert header.index("nanoGPT") < header.index("HF GPT-2")
  row = [line for line in table.splitlines() if line.startswith("| tiny ")][0]
  assert "2 x 32, 32, 8" in row and results_files.host_line(host) in row
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[-4:] == [f"{tps / 4:,.0f} (fused)", "4.00x", f"{tps / 2:,.0f} (for-loop)", "2.00x"]
  old = [line for line in table.splitlines() if line.startswith("| old ")][0]
  cells = [c.strip() for c in old.strip("|").split("|")]
  assert cells[1] == "x86_64, 2 cores" and cells[-4:] == ["-", "-", f"{tps / 2:,.0f}", "2.00x"]


def test_torch_flag_takes_a_bare_switch_or_a_list():
  from absl import flags

  from benchmarks import throughput
  fv = flags.FlagValues()
  flags.DEFINE_integer("rounds", 1, "", flag_values=fv)
  orig = flags.DEFINE_flag
  try:
    flags.DEFINE_flag = lambda flag: orig(flag, flag_values=fv)
    throughput._define_torch_flag(flags)
  finally:
    flags.DEFINE_flag = orig
  for argv, refs in ([], []), (["--torch"], ["nanogpt", "hf"]), (["--notorch"], []), (
      ["--torch=hf"], ["hf"]), (["--torch=hf,nanogpt"], ["hf", "nanogpt"]):
    fv.unparse_flags()
    fv(["prog", *argv])
    assert fv.torch == refs, argv
  fv.unparse_flags()
  with pytest.raises(flags.IllegalFlagValueError):
    fv(["prog", "--torch=tf"])


def test_host_is_recorded_with_cpu_name_and_cores():
  host = results_files.host_info()
  assert host["cpu"] and host["cpu"] != "unknown CPU" and host["cores"] >= 1
  assert host["accelerator"] is None
  line = results_files.host_line(host)
  assert host["cpu"] in line and "cores" in line
  gpu = results_files.host_info("1 x NVIDIA H100 80GB HBM3")
  assert results_files.host_line(gpu).endswith("; 1 x NVIDIA H100 80GB HBM3")
  assert results_files.host_line(None) == "not recorded"
  from benchmarks import throughput
  assert throughput._accelerator("2 x cpu") is None
  assert throughput._accelerator("8 x NVIDIA H100 80GB HBM3") == "8 x NVIDIA H100 80GB HBM3"


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


def test_ablation_table_shows_the_host(tmp_path, monkeypatch):
  from benchmarks import ablate
  monkeypatch.setattr(ablate, "RESULTS", str(tmp_path / "ablations"))
  host = results_files.host_info("1 x NVIDIA H100 80GB HBM3")
  row = {"piece": "remat full", "flip": "--config.model.remat=full", "timed_by": "step",
         "baseline": 200.0, "flipped": 100.0}
  results_files.save(str(tmp_path / "ablations"), "gpu", {"command": "c", "host": host,
                                                          "pieces": [row]})
  results_files.save(str(tmp_path / "ablations"), "old", {"command": "c", "pieces": [row]})
  table = ablate.write_table()
  assert f"Host: {results_files.host_line(host)}" in table and "Host: not recorded" in table
  assert "| 2.00x |" in table and (tmp_path / "ablations.md").exists()
