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


def test_addition_rl_holds_out_problems_that_no_training_file_contains(tmp_path):
  """The prompts the GRPO run holds out (split by gptjax.data.prompts itself) appear in
  neither the pretraining text nor the SFT conversations, and every answer is the sum
  written least-significant digit first."""
  import json

  from experiments import addition_rl
  from gptjax.config import sibling_config
  from gptjax.data import chat_template, prompts
  from gptjax.data.tokenizers import CharTokenizer
  config = sibling_config(str(REPO / "configs" / "addition.py"), "addition.py", "grpo")
  config.data.path = str(tmp_path / "prompts.jsonl")
  addition_rl.write_data(str(tmp_path), config.data.eval_fraction, config.data.split_seed)
  data = prompts.make_prompt_datasets(
      config, chat_template.with_chat_tokens(CharTokenizer("0123456789+=\n")), 0, 1)
  heldout = {r["prompt"] for r in data.eval_records}
  assert len(heldout) == 500 and not heldout & {r["prompt"] for r in data.train_records}
  pretrain = (tmp_path / "pretrain.txt").read_text().splitlines()
  sft = [json.loads(line)["messages"] for line in open(tmp_path / "sft.jsonl")]
  seen = {line.split("=")[0] for line in pretrain} | {m[0]["content"] for m in sft}
  assert len(seen) > 70_000 and not heldout & seen
  for line in pretrain[:100]:
    a, b, answer = line.replace("+", "=").split("=")
    assert answer == str(int(a) + int(b))[::-1]
