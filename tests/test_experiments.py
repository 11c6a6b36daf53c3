"""Experiment modules on a tiny trained run."""

import importlib.util

import pytest

from conftest import REPO
from gptjax import train as train_lib
from gptjax.evaluate import evaluate_workdir
from experiments import nanogpt_estimate


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
  spec = importlib.util.spec_from_file_location("tiny", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  tmp = tmp_path_factory.mktemp("tiny")
  config.data.data_dir = str(tmp / "data")
  # Long enough to use its context, so a misaligned window scores visibly worse.
  config.train.steps = config.eval.every = config.checkpoint.every = 150
  train_lib.train(config, str(tmp / "w"))
  return str(tmp / "w")


def test_nanogpt_estimate_is_centred_on_the_whole_split_loss(trained_tiny):
  """Random windows scored like nanoGPT average out to the whole-split loss: a window shifted
  by one token, or inputs scored against themselves, would miss it by far more than 0.05."""
  whole = evaluate_workdir(trained_tiny)["eval/loss"]
  result = nanogpt_estimate.estimate(trained_tiny, draws=40, eval_iters=4, batch_size=8,
                                     bar=whole)
  assert abs(result["estimate_mean"] - whole) < 0.05, (result, whole)
  assert result["estimate_min"] <= result["estimate_mean"] <= result["estimate_max"]
  assert 0 < result[f"fraction_at_or_below_{whole}"] < 1
  assert result["estimate_std"] > 0
