"""What a run does with damaged checkpoints, changed shapes, shortened runs and odd vocabularies."""

import math
import pathlib
import shutil

import jax
import numpy as np
import pytest

from gptjax import checkpoint, optim, train as train_lib
from gptjax.config import base_config
from gptjax.errors import UserError
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics
from test_train import assert_same_metrics, load_config


def tiny_config(data_dir, steps=50):
  c = load_config("tiny")
  c.data.data_dir = str(data_dir)
  c.train.steps = steps
  c.checkpoint.every = 10  # keep=2: the newest two of 10, 20, ...
  return c


class Stop(Exception):
  pass


def snapshot(folder) -> dict:
  """Every file's bytes under `folder`, by relative path: to show nothing was changed."""
  root = pathlib.Path(folder)
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def damage(path: pathlib.Path) -> None:
  """Flip four bytes in the middle of a file, as a bad disk or a partial copy would."""
  data = bytearray(path.read_bytes())
  mid = len(data) // 2
  for i in range(mid, min(mid + 4, len(data))):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def damage_step(workdir, step: int, kind: str) -> None:
  step_dir = pathlib.Path(workdir) / "checkpoints" / str(step)
  if kind == "metadata":  # the JSON Orbax reads first: the config
    damage(step_dir / "config" / "metadata")
  else:  # array bytes: every chunk file big enough to hold a weight matrix
    chunks = [p for p in (step_dir / "state").rglob("d/*") if p.stat().st_size > 10_000]
    assert chunks
    for p in chunks:
      damage(p)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A straight 50-step run, and the same run stopped after its step-40 checkpoint."""
  root = tmp_path_factory.mktemp("runs")
  config = tiny_config(root / "data")
  train_lib.train(config, str(root / "straight"))

  def stop_at_40(s, state):
    if s == 40:
      raise Stop()
  with pytest.raises(Stop):
    train_lib.train(config, str(root / "stopped"), hooks=[stop_at_40])
  assert checkpoint.Checkpointer(str(root / "stopped")).all_steps() == [30, 40]
  return root, config


def stopped_copy(runs, tmp_path, damaged: dict) -> pathlib.Path:
  """A copy of the stopped run with {step: kind of damage} done to it."""
  workdir = tmp_path / "w"
  shutil.copytree(runs[0] / "stopped", workdir)
  for step, kind in damaged.items():
    damage_step(workdir, step, kind)
  return workdir


@pytest.mark.parametrize("kind", ["metadata", "arrays"])
def test_damaged_newest_checkpoint_is_skipped_moved_aside_and_the_run_resumes_exactly(
    runs, tmp_path, capsys, kind):
  root, config = runs
  workdir = stopped_copy(runs, tmp_path, {40: kind})
  damaged = snapshot(workdir / "checkpoints" / "40")

  train_lib.train(config, str(workdir))
  err = capsys.readouterr().err
  assert "checkpoint step 40 is damaged" in err and "using checkpoint step 30" in err
  # Moved aside byte for byte, never deleted or rewritten; the run re-made step 40 itself.
  assert snapshot(workdir / "damaged_checkpoints" / "40") == damaged
  assert checkpoint.Checkpointer(str(workdir)).all_steps() == [40, 50]
  # Resumed from step 30, it logs what the uninterrupted run logged.
  assert_same_metrics(root / "straight", workdir)


@pytest.mark.parametrize("kind", ["metadata", "arrays"])
def test_eval_and_sample_skip_a_damaged_checkpoint_and_leave_it_in_place(
    runs, tmp_path, capsys, kind):
  root, _ = runs
  workdir = stopped_copy(runs, tmp_path, {40: kind})
  before = snapshot(workdir)
  loaded = load_workdir(str(workdir))
  assert loaded.step == 30
  err = capsys.readouterr().err
  assert "checkpoint step 40 is damaged" in err and "left in place" in err
  assert snapshot(workdir) == before
  intact = load_workdir(str(root / "stopped"), step=30).params
  jax.tree_util.tree_map(np.testing.assert_array_equal, intact, loaded.params)
  with pytest.raises(UserError, match=r"step 40 is damaged.*checkpoints \[30, 40\] as --step"):
    load_workdir(str(workdir), step=40)


def test_every_checkpoint_damaged_is_one_error_and_nothing_moves(runs, tmp_path):
  _, config = runs
  workdir = stopped_copy(runs, tmp_path, {40: "metadata", 30: "arrays"})
  before = snapshot(workdir)
  with pytest.raises(UserError, match=r"every checkpoint .* is damaged \(steps \[40, 30\]"):
    train_lib.train(config, str(workdir))
  with pytest.raises(UserError, match="every checkpoint"):
    load_workdir(str(workdir))
  assert snapshot(workdir) == before


def test_a_half_written_checkpoint_is_not_a_step(runs, tmp_path):
  workdir = stopped_copy(runs, tmp_path, {})
  shutil.copytree(workdir / "checkpoints" / "40",
                  workdir / "checkpoints" / "50.orbax-checkpoint-tmp-123")
  assert checkpoint.Checkpointer(str(workdir)).all_steps() == [30, 40]
  assert load_workdir(str(workdir)).step == 40


def test_resuming_with_another_context_length_is_refused_before_any_array_is_read(
    tmp_path, monkeypatch):
  config = tiny_config(tmp_path / "data", steps=20)
  workdir = str(tmp_path / "w")
  train_lib.train(config, workdir)
  before = snapshot(workdir)

  def no_reads(*args, **kwargs):
    raise AssertionError("arrays were read")
  monkeypatch.setattr(checkpoint.Checkpointer, "restore_state", no_reads)
  config.data.seq_len = 16  # model.max_len = 0 follows it: the position table would shrink
  with pytest.raises(UserError, match=r"model\.max_len \(from data\.seq_len\): 32 saved vs 16"):
    train_lib.train(config, workdir)
  assert snapshot(workdir) == before


def test_a_shortened_run_caps_its_warmup_at_half_the_run(tmp_path, capsys):
  o = base_config().optim
  o.warmup_steps, o.lr = 100, 1e-3
  assert optim.effective_warmup(o, 30) == 15
  schedule = optim.learning_rate_schedule(o, 30)
  assert float(schedule(0)) == 0.0 and math.isclose(float(schedule(15)), 1e-3, rel_tol=1e-6)
  assert float(schedule(29)) < float(schedule(16)) < 1e-3  # then it decays
  assert optim.effective_warmup(o, 2000) == 100  # a long run keeps its warm-up
  o.decay_steps = 60  # the cap follows the decay length when it is set
  assert optim.effective_warmup(o, 30) == 30

  config = tiny_config(tmp_path / "data", steps=6)
  config.optim.warmup_steps = 100
  train_lib.train(config, str(tmp_path / "w"))
  assert "optim.warmup_steps=100 capped at 3" in capsys.readouterr().err
  # Logged at step 5: the mean over steps 0-4 of the capped schedule (peak at step 3).
  lr = [r["train/lr"] for r in read_metrics(str(tmp_path / "w")) if "train/lr" in r][0]
  capped = optim.learning_rate_schedule(config.optim, 6)
  np.testing.assert_allclose(lr, np.mean([float(capped(s)) for s in range(5)]), rtol=1e-5)


SHIPPED = [("default", None), ("tiny", None), ("shakespeare_char", "cpu"),
           ("shakespeare_char", None), ("gpt2", "124m"), ("gpt2", "774m"), ("gpt2", "smoke"),
           ("llama", "1b"), ("llama", "7b"), ("llama", "smoke")]


@pytest.mark.parametrize("name, arg", SHIPPED)
def test_shipped_schedules_are_unchanged_by_the_warmup_cap(name, arg):
  c = load_config(name, arg)
  assert optim.effective_warmup(c.optim, c.train.steps) == c.optim.warmup_steps


def test_the_vocabulary_pads_to_the_tensor_axis(tmp_path, capsys):
  symbols = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # 62
  rng = np.random.default_rng(0)
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("".join(rng.choice(list(symbols), 40_000)) + "\n")
  config = tiny_config(tmp_path / "data", steps=2)
  config.data.path, config.data.file_pattern = str(corpus), "*"
  config.model.num_heads = 8
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 8
  config.eval.max_batches = 1
  workdir = str(tmp_path / "w")
  train_lib.train(config, workdir)
  loaded = load_workdir(workdir)
  vocab = loaded.tokenizer.vocab_size
  assert vocab % 8  # the corpus' own vocabulary would not split 8 ways
  rows = loaded.params["wte"].shape[0]
  assert rows == 8 * math.ceil(vocab / 8)
  assert f"vocabulary padded from {vocab} to {rows}" in capsys.readouterr().err

  from gptjax.generate import generate
  tokens = generate(loaded.model, loaded.params, np.zeros((4, 1), np.int32), 50,
                    jax.random.key(0), temperature=2.0, valid_vocab=vocab)
  assert tokens.max() < vocab  # padded ids are never sampled
