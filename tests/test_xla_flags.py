"""The GPU flag preset: every flag parses on the installed jaxlib; user flags win."""

import os
import subprocess
import sys

from gptjax import xla_flags


def test_the_installed_jaxlib_parses_every_preset_flag():
  # XLA aborts at start-up on a flag it does not know; GPU flags parse on any jaxlib.
  env = dict(os.environ, XLA_FLAGS=xla_flags.merged_flags("", xla_flags.GPU_PRESET),
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
                       env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  bad = dict(env, XLA_FLAGS="--xla_gpu_no_such_flag=true")  # the check can fail
  assert subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1)"], env=bad,
                        capture_output=True, timeout=120).returncode != 0


def test_flags_the_user_set_are_kept():
  merged = xla_flags.merged_flags("--xla_gpu_enable_latency_hiding_scheduler=false --foo=1",
                                  xla_flags.GPU_PRESET)
  assert merged.count("xla_gpu_enable_latency_hiding_scheduler") == 1
  assert "--xla_gpu_enable_latency_hiding_scheduler=false" in merged and "--foo=1" in merged
  assert "--xla_gpu_all_reduce_combine_threshold_bytes=134217728" in merged


def test_preset_applies_only_on_gpu_hosts_and_when_asked(monkeypatch):
  env = {"XLA_FLAGS": "--x=1"}
  monkeypatch.setattr(xla_flags, "cuda_plugin_installed", lambda: False)
  assert not xla_flags.apply_preset("auto", env) and env == {"XLA_FLAGS": "--x=1"}
  monkeypatch.setattr(xla_flags, "cuda_plugin_installed", lambda: True)
  assert not xla_flags.apply_preset("none", env) and env == {"XLA_FLAGS": "--x=1"}
  assert xla_flags.apply_preset("auto", env)
  assert env["XLA_FLAGS"].startswith("--x=1 --xla_gpu_enable_latency_hiding_scheduler=true")
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.90"
