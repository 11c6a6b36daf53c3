"""A run whose workdir and corpus are in a bucket (gs://), against a local GCS emulator.

gcp-storage-emulator (through tests/gcs_emulator.py, which adds a header it leaves out) serves Cloud Storage's JSON API on localhost. Every client a run uses is
pointed at it the way each documents: gcsfs (metrics.jsonl, the corpus, init.json, plots,
eval results) and google-cloud-storage (tensorboardX's events) by STORAGE_EMULATOR_HOST,
tensorstore (Orbax's checkpoints) by TENSORSTORE_GCS_HTTP_URL. What the emulator cannot
show (real credentials, a bucket's throughput, its one-update-a-second limit per object)
is listed in the README's "Run on a TPU pod".
"""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import sysconfig
import time

import jax
import numpy as np
import pytest

from gptjax import checkpoint, evaluate, generate, metrics as metrics_lib, plots, storage
from gptjax import train as train_lib
from gptjax.errors import UserError
from gptjax.load import load_workdir
from test_train import Killed, assert_same_metrics, kill_at, load_config

BUCKET = "gptjax-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
  """A GCS emulator with one empty bucket, and this process's clients pointed at it."""
  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, str(pathlib.Path(__file__).with_name("gcs_emulator.py")), str(port),
       BUCKET],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://localhost:{port}"
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         # gcsfs's newer file system first asks a gRPC control API for the bucket's layout,
         # which the emulator does not serve; the plain JSON-API one is what it falls back to.
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "GOOGLE_CLOUD_PROJECT": "test"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    deadline = time.time() + 30
    while True:
      try:
        socket.create_connection(("localhost", port), timeout=1).close()
        break
      except OSError:
        if time.time() > deadline or server.poll() is not None:
          raise RuntimeError("the GCS emulator did not start") from None
        time.sleep(0.2)
    yield f"gs://{BUCKET}"
  finally:
    server.terminate()
    server.wait(timeout=10)
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _corpus_files():
  """Twenty files of Python's own library: the tiny config's kind of corpus, kept small."""
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  return sorted(stdlib.glob("*.py"))[:20]


def _tiny(tmp_path, data_path):
  c = load_config("tiny")
  c.data.path = data_path
  c.data.data_dir = str(tmp_path / "data")
  c.model.dropout = 0.1  # the dropout stream must resume too
  return c


@pytest.fixture(scope="module")
def runs(gcs, tmp_path_factory):
  """The same run twice: on disk straight through; in the bucket (corpus too) killed after
  step 15 and resumed from its step-10 checkpoint there."""
  tmp = tmp_path_factory.mktemp("runs")
  local_corpus = tmp / "corpus"
  local_corpus.mkdir()
  for f in _corpus_files():
    shutil.copy(f, local_corpus / f.name)
    storage.write_text(f"{gcs}/corpus/{f.name}", f.read_text(encoding="utf-8"))
  local = str(tmp / "local")
  train_lib.train(_tiny(tmp / "a", str(local_corpus)), local)
  remote = f"{gcs}/runs/tiny"
  config = _tiny(tmp / "b", f"{gcs}/corpus")
  in_bucket_at_checkpoint = {}

  def look_in_the_bucket(step, state):  # hooks run right after the step's checkpoint
    if step == 10:
      in_bucket_at_checkpoint.update(
          rows=[r["step"] for r in metrics_lib.read_metrics(remote)],
          events=storage.glob(f"{remote}/tensorboard/events.out.tfevents.*"))
  with pytest.raises(Killed):
    train_lib.train(config, remote, hooks=[look_in_the_bucket, kill_at(15)])
  assert checkpoint.Checkpointer(remote).latest_step() == 10
  train_lib.train(config, remote)
  return local, remote, in_bucket_at_checkpoint


def test_a_run_in_a_bucket_resumes_there_and_equals_the_same_run_on_disk(runs):
  local, remote, at_checkpoint = runs
  # Rows are uploaded in batches, but every row up to a checkpoint is there when it is saved
  # (a run killed outright resumes from it and finds them all).
  assert at_checkpoint["rows"] == [5, 10, 10] and at_checkpoint["events"]
  assert_same_metrics(local, remote)
  a, b = load_workdir(local), load_workdir(remote)
  assert (a.step, b.step) == (20, 20)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)
  assert b.workdir == remote and b.config.data.path.startswith("gs://")
  assert not os.path.exists("gs:"), "a gs:// path was taken for a local folder"
  events = storage.glob(f"{remote}/tensorboard/events.out.tfevents.*")
  assert events and all(len(storage.read_bytes(e)) > 0 for e in events)


def test_plots_eval_and_sampling_read_and_write_a_bucket_workdir(runs):
  local, remote, _ = runs
  curve = plots.plot_loss_curve(remote)
  assert curve == f"{remote}/loss_curve.png"
  assert storage.read_bytes(curve).startswith(b"\x89PNG")
  on_disk, in_bucket = (evaluate.evaluate_workdir(w, max_batches=2) for w in (local, remote))
  assert in_bucket == on_disk
  evaluate.evaluate_workdir(remote, max_batches=2)
  assert len(metrics_lib.read_lines(f"{remote}/eval_results.jsonl")) == 2  # appended
  prompt = "def "
  assert (generate.sample_from_workdir(remote, prompt, max_new_tokens=12)
          == generate.sample_from_workdir(local, prompt, max_new_tokens=12))


def test_a_run_starts_from_a_checkpoint_in_a_bucket(runs, tmp_path):
  _, remote, _ = runs
  config = load_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  config.init.workdir = remote
  config.train.steps = config.checkpoint.every = config.eval.every = 2
  config.eval.at_start = True
  train_lib.train(config, str(tmp_path / "w"))
  start = [r for r in metrics_lib.read_metrics(str(tmp_path / "w")) if r["step"] == 0]
  source = [r for r in metrics_lib.read_metrics(remote) if "eval/loss" in r][-1]
  assert start and start[0]["eval/loss"] == pytest.approx(source["eval/loss"], rel=1e-5)
  recorded = storage.read_text(str(tmp_path / "w" / "init.json"))
  assert f'"workdir": "{remote}"' in recorded


def test_a_profile_trace_of_a_bucket_run_is_uploaded_there(gcs, tmp_path):
  config = _tiny(tmp_path, str(tmp_path))
  config.data.path = load_config("tiny").data.path
  config.train.steps = config.checkpoint.every = config.eval.every = 2
  config.train.profile_start, config.train.profile_steps = 0, 1
  train_lib.train(config, f"{gcs}/runs/profiled")
  assert storage.glob(f"{gcs}/runs/profiled/profile/**/*.xplane.pb")


def test_metrics_reach_the_bucket_in_batches_and_in_full_at_each_flush(gcs):
  path = f"{gcs}/metrics_unit/metrics.jsonl"
  writer = metrics_lib.MetricsWriter(f"{gcs}/metrics_unit", upload_secs=3600)
  writer.write(1, {"train/loss": 2.0})
  writer.write(2, {"train/loss": 1.5})
  assert not storage.exists(path)  # within upload_secs: nothing sent yet
  writer.flush()
  assert [r["step"] for r in metrics_lib.read_metrics(f"{gcs}/metrics_unit")] == [1, 2]
  writer.write(3, {"train/loss": 1.0})
  writer.close()
  assert [r["step"] for r in metrics_lib.read_metrics(f"{gcs}/metrics_unit")] == [1, 2, 3]
  again = metrics_lib.MetricsWriter(f"{gcs}/metrics_unit", upload_secs=0)
  again.truncate_after(2)  # a run resumed from step 2 redoes step 3
  again.write(3, {"train/loss": 0.5})
  again.close()
  rows = metrics_lib.read_metrics(f"{gcs}/metrics_unit")
  assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 2.0), (2, 1.5), (3, 0.5)]


def test_bucket_paths_that_cannot_work_are_one_line(gcs, tmp_path):
  config = _tiny(tmp_path, f"{gcs}/no_such_corpus")
  with pytest.raises(UserError, match=r"--config.data.path=gs://.*does not exist"):
    train_lib.train(config, str(tmp_path / "w"))
  config = _tiny(tmp_path, str(tmp_path))
  config.data.data_dir = f"{gcs}/cache"
  with pytest.raises(UserError, match="must be a local folder"):
    train_lib.train(config, str(tmp_path / "w"))
  with pytest.raises(UserError, match="nosuch:// is not a storage fsspec knows"):
    storage.exists("nosuch://bucket/run")
