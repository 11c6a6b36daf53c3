"""The trainer end to end on the tiny config: resume, checkpoints, errors, CLIs, configs."""

import glob
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from gptjax import checkpoint, train as train_lib
from gptjax.errors import UserError
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics


def load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture
def tiny(tmp_path):
  c = load_config("tiny")
  c.data.data_dir = str(tmp_path / "data")
  return c


def without_perf(rows):
  return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def assert_same_metrics(expected_workdir, workdir, drop=lambda row: False):
  """Both runs logged the same rows (throughput aside, and rows `drop` picks): resumed ==
  uninterrupted."""
  a = without_perf([r for r in read_metrics(str(expected_workdir)) if not drop(r)])
  b = without_perf([r for r in read_metrics(str(workdir)) if not drop(r)])
  assert [r["step"] for r in a] == [r["step"] for r in b]
  assert any("eval/loss" in r for r in a) and any("train/loss" in r for r in a)
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for k in ra:
      np.testing.assert_allclose(rb[k], ra[k], rtol=1e-6, err_msg=f"{k} at step {ra['step']}")


class Killed(Exception):
  pass


def kill_at(step):
  def hook(s, state):
    if s == step:
      raise Killed(f"simulated kill after step {s}")
  return hook


def test_killed_then_resumed_run_logs_the_same_losses_as_an_uninterrupted_run(tiny, tmp_path):
  tiny.model.dropout = 0.1  # the dropout stream must resume too
  straight = tmp_path / "straight"
  train_lib.train(tiny, str(straight))
  resumed = tmp_path / "resumed"
  with pytest.raises(Killed):
    train_lib.train(tiny, str(resumed), hooks=[kill_at(15)])  # checkpoint at 10, dies at 15
  assert checkpoint.Checkpointer(str(resumed)).latest_step() == 10
  train_lib.train(tiny, str(resumed))
  assert_same_metrics(straight, resumed)
  pa, pb = load_workdir(str(straight)).params, load_workdir(str(resumed)).params
  jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)


def test_wall_clock_checkpoints_are_saved_on_time_and_resume_exactly(tiny, tmp_path,
                                                                     monkeypatch):
  """checkpoint.every_minutes=4 with a clock that reads one minute per step: besides steps
  10 and 20 (checkpoint.every), saves at the logging steps 5 and 15 (train.log_every=5),
  the first at which 4 minutes have passed since the last save; a run killed after 16
  resumes from 15 and ends as the uninterrupted run."""
  from gptjax import checkpoint_cadence
  straight = tmp_path / "straight"
  train_lib.train(tiny, str(straight))
  minutes = [0]
  monkeypatch.setattr(checkpoint_cadence, "clock", lambda: 60.0 * minutes[0])

  def tick(s, state):
    minutes[0] = s
  tiny.checkpoint.every_minutes, tiny.checkpoint.keep = 4.0, 10
  resumed = tmp_path / "resumed"
  with pytest.raises(Killed):
    train_lib.train(tiny, str(resumed), hooks=[tick, kill_at(16)])
  assert checkpoint.Checkpointer(str(resumed)).all_steps() == [5, 10, 15]
  assert not (resumed / train_lib.FINISHED).exists()  # what tpu_scripts/watch.sh reads
  train_lib.train(tiny, str(resumed), hooks=[tick])
  assert json.loads((resumed / train_lib.FINISHED).read_text())["step"] == 20
  tiny.train.steps = 25  # extended: not finished until it has run the 5 more
  with pytest.raises(Killed):
    train_lib.train(tiny, str(resumed), hooks=[kill_at(22)])
  assert not (resumed / train_lib.FINISHED).exists()
  tiny.train.steps = 20
  assert_same_metrics(straight, resumed, drop=lambda r: r["step"] > 20)
  pa, pb = load_workdir(str(straight)).params, load_workdir(str(resumed)).params
  jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)


def test_eval_at_start_scores_the_starting_weights_and_a_rerun_keeps_one_such_row(tiny, tmp_path):
  """eval.at_start on a run that starts from another run's final weights logs, at step 0,
  exactly that run's final held-out figures; a fresh restart drops the stale rows."""
  source = tmp_path / "source"
  train_lib.train(tiny, str(source))
  final = [r for r in read_metrics(str(source)) if "eval/loss" in r][-1]
  tiny.init.workdir, tiny.eval.at_start = str(source), True
  tiny.train.steps = 3
  workdir = tmp_path / "continued"
  with pytest.raises(Killed):  # dies before its first checkpoint: the rerun starts afresh
    train_lib.train(tiny, str(workdir), hooks=[kill_at(2)])
  train_lib.train(tiny, str(workdir))
  start = [r for r in read_metrics(str(workdir)) if r["step"] == 0]
  assert len(start) == 1
  np.testing.assert_allclose(start[0]["eval/loss"], final["eval/loss"], rtol=1e-6)


@pytest.mark.slow  # fast beside it: test_train_donate_decides_whether_the_old_state_is_consumed
def test_fast_path_switches_do_not_change_training(tiny, tmp_path):
  """Donation and late metrics are speed only: off, the run logs the same numbers."""
  train_lib.train(tiny, str(tmp_path / "on"))
  tiny.train.donate, tiny.train.async_metrics, tiny.data.prefetch = False, False, 0
  train_lib.train(tiny, str(tmp_path / "off"))
  on, off = (without_perf(read_metrics(str(tmp_path / w))) for w in ("on", "off"))
  assert on == off and len(on) > 4


@pytest.mark.parametrize("donate", [True, False])
def test_train_donate_decides_whether_the_old_state_is_consumed(tiny, donate):
  from gptjax import sharding, state as state_lib
  tiny.train.donate = donate
  run = train_lib.build_run(tiny)
  state = state_lib.init_state(run.model, run.tx, run.mesh, run.shardings, tiny.seed)
  batch = sharding.shard_batch(next(run.datasets.train), run.mesh)
  with sharding.rules_context(run.mesh):
    train_lib.jitted_step(run)(state, batch, run.frozen)
  assert jax.tree_util.tree_leaves(state.params)[0].is_deleted() == donate


def test_checkpoint_restores_onto_a_different_mesh(tiny, tmp_path):
  tiny.mesh.data, tiny.mesh.fsdp, tiny.mesh.tensor = 8, 1, 1
  tiny.model.vocab_multiple = 8  # the vocabulary must split over tensor=2 below
  workdir = str(tmp_path / "w")
  train_lib.train(tiny, workdir)
  written = load_workdir(workdir).params

  tiny.mesh.data, tiny.mesh.fsdp, tiny.mesh.tensor = 2, 2, 2
  run = train_lib.build_run(tiny)
  target = checkpoint.abstract_with_shardings(run.abstract, run.shardings)
  state, data_state = checkpoint.Checkpointer(workdir).restore_state(20, target)
  wq = state.params["block_0"]["attn"]["wq"]
  assert wq.sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
  assert wq.addressable_shards[0].data.shape == (16, 2, 8)  # embed over fsdp, heads over tensor
  jax.tree_util.tree_map(np.testing.assert_array_equal, written, jax.device_get(state.params))
  assert data_state == {"next_index": 20}  # batches consumed

  tiny.train.steps = 21  # and training goes on from there on the new mesh
  train_lib.train(tiny, workdir)
  assert checkpoint.Checkpointer(workdir).latest_step() == 21


def test_non_finite_loss_stops_keeps_the_last_good_checkpoint_and_a_rerun_resumes_from_it(
    tiny, tmp_path, monkeypatch):
  tiny.train.steps = 40
  straight = str(tmp_path / "straight")
  train_lib.train(tiny, straight)
  real = train_lib.make_train_step

  def exploding(*args, **kwargs):
    step_fn = real(*args, **kwargs)

    def wrapped(state, batch, frozen):
      new_state, metrics = step_fn(state, batch, frozen)
      bad = state.step >= 25  # mid-run, after the checkpoints at 10 and 20
      metrics["train/loss"] = jnp.where(bad, jnp.nan, metrics["train/loss"])
      return new_state, metrics
    return wrapped

  monkeypatch.setattr(train_lib, "make_train_step", exploding)
  workdir = str(tmp_path / "w")
  with pytest.raises(train_lib.NonFiniteLossError, match="step 26.*last good checkpoint, step 20"):
    train_lib.train(tiny, workdir)
  assert checkpoint.Checkpointer(workdir).all_steps() == [10, 20]
  assert load_workdir(workdir).step == 20

  monkeypatch.setattr(train_lib, "make_train_step", real)  # the cause fixed: re-run
  train_lib.train(tiny, workdir)
  assert_same_metrics(straight, workdir)


def test_resuming_a_workdir_of_another_model_is_refused(tiny, tmp_path):
  train_lib.train(tiny, str(tmp_path / "w"))
  tiny.model.embed_dim = 64
  with pytest.raises(UserError, match="different model.*model.embed_dim: 32 saved vs 64"):
    train_lib.train(tiny, str(tmp_path / "w"))
  assert checkpoint.Checkpointer(str(tmp_path / "w")).latest_step() == 20  # nothing lost


@pytest.mark.parametrize("key, value, match", [
    ("train.batch_size", 6, "must divide by mesh.data\\*mesh.fsdp=8"),
    ("train.grad_accum", 3, "train.batch_size=8 must divide by train.grad_accum=3"),
    ("mesh.tensor", 3, "mesh"),
    ("optim.warmup_steps", -1, "optim.warmup_steps must be >= 0"),
    ("task.name", "nope", "task.name='nope'"),
    ("model.num_heads", 5, "model.embed_dim=32 must divide by model.num_heads=5"),
    ("checkpoint.every_minutes", -1.0, "checkpoint.every_minutes must be 0 \\(off\\)"),
])
def test_bad_config_values_give_clear_errors(tiny, tmp_path, key, value, match):
  group, name = key.split(".")
  tiny[group][name] = value
  with pytest.raises(UserError, match=match):
    train_lib.train(tiny, str(tmp_path / "w"))


def cli(*args, cwd=REPO):
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


def test_cli_trains_evaluates_and_samples_on_the_tiny_config(tmp_path):
  workdir, data = str(tmp_path / "w"), str(tmp_path / "data")
  out = cli("gptjax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
            f"--config.data.data_dir={data}", "--config.train.sample_prompt=def ",
            "--config.train.profile_start=3", "--config.train.profile_steps=2")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = read_metrics(workdir)
  assert rows[-1]["step"] == 20 and "eval/loss" in rows[-1] and "eval/perplexity" in rows[-1]
  assert os.path.exists(os.path.join(workdir, "loss_curve.png"))
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.*"))
  assert glob.glob(os.path.join(workdir, "profile", "**", "*.xplane.pb"), recursive=True)
  assert "sample:\ndef " in out.stdout

  out = cli("gptjax.evaluate", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["step"] == 20
  # eval.max_batches=4 during training; the CLI evaluates the whole split, so only its
  # order of magnitude can be compared, but the perplexity must be exp(loss).
  assert abs(result["eval/loss"] - rows[-1]["eval/loss"]) < 0.5
  np.testing.assert_allclose(result["eval/perplexity"], np.exp(result["eval/loss"]), rtol=1e-6)
  assert os.path.exists(os.path.join(workdir, "eval_results.jsonl"))

  out = cli("gptjax.generate", f"--workdir={workdir}", "--prompt=import ",
            "--max_new_tokens=40", "--temperature=0")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("import ")
  assert len(out.stdout) == len("import ") + 40 + 1  # 40 characters (char tokenizer) + newline


def test_cli_user_mistakes_are_one_line_errors(tmp_path):
  out = cli("gptjax.train", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}",
            "--config.data.path=/no/such/corpus.txt", f"--config.data.data_dir={tmp_path}")
  assert out.returncode == 2
  assert "--config.data.path" in out.stderr and "Traceback" not in out.stderr
  out = cli("gptjax.train", "--config=configs/tiny.py", "--config.trian.steps=3")
  assert out.returncode != 0 and "trian" in out.stderr
  out = cli("gptjax.generate", f"--workdir={tmp_path / 'empty'}", "--prompt=x")
  assert out.returncode == 2 and "no checkpoint" in out.stderr and "Traceback" not in out.stderr


CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))
RUNNABLE = [("tiny", None), ("shakespeare_char", "cpu"), ("gpt2_124m", "smoke"), ("sft", "smoke"),
            ("reward", "smoke"), ("dpo", "smoke"), ("grpo", "smoke")]
SHARED_FILES = {"sft": "alpaca/alpaca_5000.json", "reward": "hh-rlhf/harmless-base-test.jsonl.gz",
                "dpo": "hh-rlhf/harmless-base-test.jsonl.gz",
                "grpo": "hh-rlhf/harmless-base-test.jsonl.gz"}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_and_is_complete(name):
  from gptjax.config import base_config
  for arg in (None, "cpu", "smoke", "350m", "774m", "1558m", "1b", "7b"):
    try:
      c = load_config(name, arg)
    except ValueError:
      continue
    assert set(c.to_dict()) == set(base_config().to_dict()), f"{name}:{arg} changed the key set"


@pytest.mark.parametrize("name, arg", RUNNABLE)
def test_configs_with_a_cpu_or_smoke_arg_run_two_steps(name, arg, tmp_path, shakespeare_path):
  c = load_config(name, arg)
  c.data.data_dir = str(tmp_path / "data")
  if name == "shakespeare_char":
    c.data.path = shakespeare_path
  if name in SHARED_FILES:  # conversations, pairs, prompts: from wherever the tests run
    c.data.path = str(pathlib.Path(shakespeare_path).parents[1] / SHARED_FILES[name])
  c.train.steps, c.eval.every, c.checkpoint.every, c.eval.max_batches = 2, 2, 2, 2
  c.optim.warmup_steps, c.train.progress = 1, False
  c.train.batch_size = 8 * c.train.grad_accum  # one row per simulated device
  final = train_lib.train(c, str(tmp_path / "w"))
  assert np.isfinite(final["eval/loss" if "eval/loss" in final else "eval/greedy/reward"])
