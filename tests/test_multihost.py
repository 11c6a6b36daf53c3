"""Multi-host training for real: 2 and 4 local processes joined by jax.distributed (gloo
between their CPU devices, 8 in all), against one process with 8 devices.

Each launch costs about half a minute on 2 cores, so each test proves several things.
"""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from gptjax import checkpoint, launch, train as train_lib
from gptjax.data.pipeline import make_lm_datasets
from gptjax.errors import PREEMPTED_EXIT_CODE, Preempted
from gptjax.load import load_workdir
from test_train import assert_same_metrics, kill_at, Killed, load_config

STEPS = 8
OVERRIDES = {"train.steps": STEPS, "checkpoint.every": 4, "eval.every": 4, "train.log_every": 2}
WORKER = str(REPO / "tests" / "multihost_worker.py")


def tiny_config(data_dir):
  config = load_config("tiny")
  config.data.data_dir = str(data_dir)
  for key, value in OVERRIDES.items():
    group, name = key.split(".")
    config[group][name] = value
  return config


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """The data folder every run reads, and the uninterrupted one-process run to match."""
  root = tmp_path_factory.mktemp("multihost")
  config = tiny_config(root / "data")
  train_lib.train(config, str(root / "reference"))
  return root


def global_batches(data_dir) -> np.ndarray:
  """The first STEPS global train batches as one process reads them: [STEPS, B, T+1]."""
  ds = make_lm_datasets(tiny_config(data_dir), process_index=0, process_count=1)
  return np.stack([next(ds.train)["tokens"] for _ in range(STEPS)])


def run_processes(n, workdir, shared, *worker_args, overrides=None, grace=300):
  overrides = {"data.data_dir": str(shared / "data"), **OVERRIDES, **(overrides or {})}
  command = [sys.executable, "-m", "gptjax.launch", f"--processes={n}", f"--grace={grace}",
             "--", sys.executable, WORKER, str(workdir), json.dumps(overrides), *worker_args]
  start = time.monotonic()
  out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
  return out, time.monotonic() - start


def assert_resumed_exactly(reference, workdir, saved_step: int):
  """The metrics of a run resumed at `saved_step` equal the uninterrupted run's, but for the
  one train row whose averaging window the stop split (it averages only the steps after)."""
  every = OVERRIDES["train.log_every"]
  assert_same_metrics(reference, workdir, drop=lambda r: "train/loss" in r
                      and r["step"] - every < saved_step < r["step"])


def assert_reads_only_its_slice(record_dir, n, batches: np.ndarray, first_step: int = 0):
  """Process p fed rows p, p+n, ... of each global batch (grain's per-process slice), and
  nothing else; together the processes fed every row."""
  for p in range(n):
    rows = np.load(os.path.join(record_dir, f"process_{p}.npz"))["tokens"]
    steps = len(batches) - first_step
    assert rows.shape[0] >= steps and rows.shape[1] == batches.shape[1] // n
    np.testing.assert_array_equal(rows[:steps], batches[first_step:, p::n])


def test_two_processes_train_exactly_as_one_process_with_eight_devices(shared, tmp_path):
  """Also: checkpoints every minute by process 0's clock, which runs a minute ahead at each
  reading while process 1's stands still: both save the same steps, the ones process 0's
  clock chose (unagreed, one process would wait in the save for the other)."""
  out, _ = run_processes(2, tmp_path / "w", shared, f"--record={tmp_path / 'rows'}",
                         "--fast_clock", overrides={"checkpoint.every_minutes": 1,
                                                    "checkpoint.keep": 10})
  assert out.returncode == 0, out.stdout + out.stderr
  assert "mesh {'data': 8, 'fsdp': 1, 'tensor': 1}" in out.stdout  # one mesh over both
  assert_same_metrics(shared / "reference", tmp_path / "w")
  assert_reads_only_its_slice(tmp_path / "rows", 2, global_batches(shared / "data"))
  # log steps 2 and 6 by the clock (readings 60, 120: due), 4 and 8 by checkpoint.every
  assert checkpoint.Checkpointer(str(tmp_path / "w")).all_steps() == [2, 4, 6, 8]


def test_four_processes_resume_a_one_process_checkpoint_and_finish_as_uninterrupted(
    shared, tmp_path):
  config = tiny_config(shared / "data")
  with pytest.raises(Killed):
    train_lib.train(config, str(tmp_path / "w"), hooks=[kill_at(6)])  # saved at 4
  assert checkpoint.Checkpointer(str(tmp_path / "w")).latest_step() == 4
  out, _ = run_processes(4, tmp_path / "w", shared, f"--record={tmp_path / 'rows'}")
  assert out.returncode == 0, out.stdout + out.stderr
  assert "resumed from" in out.stdout and "at step 4" in out.stdout
  assert_same_metrics(shared / "reference", tmp_path / "w")
  assert_reads_only_its_slice(tmp_path / "rows", 4, global_batches(shared / "data"), 4)


def test_sigterm_in_one_process_saves_one_agreed_step_then_one_process_resumes_exactly(
    shared, tmp_path):
  """A preemption notice to one process of two: both save the same step (JAX's sync
  point), say so and exit 75; the checkpoint of 2 processes then resumes in 1."""
  out, _ = run_processes(2, tmp_path / "w", shared, "--sigterm_at=2", "--process=1")
  assert out.returncode == PREEMPTED_EXIT_CODE, out.stdout + out.stderr
  said = [line for line in out.stdout.splitlines() if "preempted: SIGTERM" in line]
  assert {line[:3] for line in said} == {"[0]", "[1]"}
  saved = checkpoint.Checkpointer(str(tmp_path / "w")).all_steps()
  assert len(saved) == 1 and 2 < saved[0] < STEPS, saved
  assert f"saved checkpoint step {saved[0]}" in said[0]
  train_lib.train(tiny_config(shared / "data"), str(tmp_path / "w"))  # one process, 8 devices
  assert_resumed_exactly(shared / "reference", tmp_path / "w", saved[0])
  a, b = load_workdir(str(shared / "reference")).params, load_workdir(str(tmp_path / "w")).params
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                         a, b)


# What the survivor says: a worker missed its heartbeats (the coordinator noticed), or the
# coordinator itself (process 0, which hosts JAX's coordination service) is gone.
SURVIVOR_SAYS = {1: ("another task died", "stopped sending heartbeats"),
                 0: ("another task died", "the leader task was preempted/died")}


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_makes_the_other_stop_with_an_error_instead_of_hanging(
    shared, tmp_path, victim):
  out, seconds = run_processes(2, tmp_path / "w", shared, "--die_at=2", f"--process={victim}",
                               overrides={"train.heartbeat_timeout": 5, "train.steps": 400})
  text = out.stdout + out.stderr
  assert out.returncode == 128 + 9  # the first failure: the SIGKILL
  for words in SURVIVOR_SAYS[victim]:
    assert words in text, words
  assert "did not stop within" not in text  # it stopped by itself: the launcher killed none
  assert f"process {victim} exited with code -9 (SIGKILL)" in text
  assert seconds < 240, seconds


def test_sigterm_alone_saves_the_next_step_and_the_rerun_resumes_exactly(shared, tmp_path):
  """One process: the signal handler's flag, read after each step."""
  config = tiny_config(shared / "data")

  def notice(step, _state):
    if step == 3:
      os.kill(os.getpid(), 15)
  with pytest.raises(Preempted, match="after step 3 of 8 and saved checkpoint step 3"):
    train_lib.train(config, str(tmp_path / "w"), hooks=[notice])
  assert checkpoint.Checkpointer(str(tmp_path / "w")).all_steps() == [3]
  train_lib.train(config, str(tmp_path / "w"))
  assert_resumed_exactly(shared / "reference", tmp_path / "w", 3)
  a, b = load_workdir(str(shared / "reference")).params, load_workdir(str(tmp_path / "w")).params
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_launcher_gives_each_process_its_place_and_its_share_of_devices():
  env = launch.process_env(3, 4, 8, 1234, base={"XLA_FLAGS": "--a=1 "
                                                "--xla_force_host_platform_device_count=8"})
  assert env["GPTJAX_COORDINATOR"] == "localhost:1234"
  assert (env["GPTJAX_NUM_PROCESSES"], env["GPTJAX_PROCESS_ID"]) == ("4", "3")
  assert env["XLA_FLAGS"] == "--a=1 --xla_force_host_platform_device_count=2"
  with pytest.raises(SystemExit, match="must divide"):
    launch.launch(["true"], processes=3, devices=8)
