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
