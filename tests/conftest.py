"""Tests run on CPU with 8 simulated devices; the flag must be set before jax is imported."""

import os

os.environ["XLA_FLAGS"] = (  # and wait out a starved device, as gptjax.sharding does
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_cpu_collective_call_terminate_timeout_seconds=1800"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"


@pytest.fixture
def shakespeare_path():
  if not SHAKESPEARE.exists():
    pytest.skip(f"{SHAKESPEARE} not found (../shared/data beside the repo)")
  return str(SHAKESPEARE)


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory):
  """A small chat model (configs/sft.py:smoke: sentencepiece with the chat tokens) trained
  briefly on alpaca_5000, with a 512-position context so a reply can run long."""
  from test_train import load_config
  from gptjax import train as train_lib
  alpaca = SHARED_DATA / "alpaca" / "alpaca_5000.json"
  if not alpaca.exists():
    pytest.skip(f"{alpaca} not found (../shared/data beside the repo)")
  tmp = tmp_path_factory.mktemp("sft_run")
  config = load_config("sft", "smoke")
  config.data.path = str(alpaca)
  config.data.data_dir = str(tmp / "data")
  config.model.max_len = 512
  config.train.steps = config.checkpoint.every = config.eval.every = 12
  config.eval.max_batches = 1
  train_lib.train(config, str(tmp / "w"))
  return str(tmp / "w")
