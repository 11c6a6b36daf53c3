"""experiments.sweep: each point is the gptjax-train run its flags name, and the report reads it."""

import json
import math
import subprocess

import pytest

from conftest import REPO
from experiments import sweep
from gptjax import train as train_lib
from gptjax.data.pipeline import make_lm_datasets
from gptjax.metrics import read_metrics
from test_train import assert_same_metrics, load_config

EPOCHS = 0.02  # of the tiny corpus's 180,010 training characters: 15 steps of 8 x 32


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sweep")
  extra = [f"--config.data.data_dir={tmp / 'data'}", "--config.eval.every=5",
           "--config.checkpoint.every=100"]
  argv = [f"--config={REPO / 'configs' / 'tiny.py'}", "--name=t", "--grid=optim.lr=1e-3,3e-3",
          f"--grid=epochs={EPOCHS}", f"--root={tmp / 'runs'}", f"--out={tmp / 'out'}", "--",
          *extra]
  sweep.main(argv)
  return tmp, argv


def test_epochs_become_steps_and_each_point_equals_its_own_gptjax_train(swept):
  tmp, _ = swept
  config = load_config("tiny")
  config.data.data_dir = str(tmp / "data")
  tokens = make_lm_datasets(config).train_tokens
  steps = math.ceil(EPOCHS * tokens / (config.train.batch_size * config.data.seq_len))
  report = json.loads((tmp / "out" / "sweep_t.json").read_text())
  assert [r["point"]["optim.lr"] for r in report["results"]] == ["1e-3", "3e-3"]
  assert all(r["steps"] == steps for r in report["results"]) and steps == 15
  config.optim.lr, config.train.steps = 3e-3, steps
  config.eval.every, config.checkpoint.every = 5, 100
  train_lib.train(config, str(tmp / "direct"))
  point = tmp / "runs" / "t" / f"lr=3e-3,epochs={EPOCHS}"
  assert_same_metrics(tmp / "direct", point)
  final = [r for r in read_metrics(str(point)) if "eval/loss" in r][-1]
  assert report["results"][1]["final_eval_loss"] == final["eval/loss"]


def test_the_report_marks_the_best_point_and_a_rerun_reads_the_runs_back(swept, monkeypatch):
  tmp, argv = swept
  report = json.loads((tmp / "out" / "sweep_t.json").read_text())
  best = min(report["results"], key=lambda r: r["final_eval_loss"])
  table = (tmp / "out" / "sweep_t.md").read_text()
  assert f"**{best['final_eval_loss']:.4f}**" in table and table.count("**") == 2
  assert (tmp / "out" / "sweep_t.png").stat().st_size > 0

  def no_training(*args, **kwargs):
    raise AssertionError(f"a finished point was trained again: {args}")
  monkeypatch.setattr(subprocess, "run", no_training)
  sweep.main(argv)
  again = json.loads((tmp / "out" / "sweep_t.json").read_text())
  assert again["results"] == report["results"]


@pytest.mark.parametrize("grid, says", [
    ("optim.lrr=1e-3", "no such config setting; did you mean --config.optim.lr?"),
    ("train.batch_size=8,x", "invalid literal for int()"),
    ("epochs=one", "'one' is not a number"),
    ("optim.lr", "write KEY=V1,V2,..."),
])
def test_a_bad_grid_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, grid, says):
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a run started"))
  with pytest.raises(SystemExit) as exit_info:
    sweep.main([f"--config={REPO / 'configs' / 'tiny.py'}", "--name=bad", f"--grid={grid}",
                f"--root={tmp_path}", f"--out={tmp_path}", "--",
                f"--config.data.data_dir={tmp_path / 'data'}"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and says in err[0], err
