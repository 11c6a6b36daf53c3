"""Bias probes report what a model prefers: on a hand-made unigram model the answer is known
in closed form; a run's periodic probe equals gptjax-eval's on the same checkpoint."""

import csv
import json

import pytest

from gptjax import evaluate, train as train_lib
from gptjax.errors import UserError
from gptjax.evals import bias_probes, registry
from gptjax.metrics import read_metrics
from conftest import unigram_loaded
from test_train import load_config

CHARS = "\n abcdefghijklmnopqrstuvwxyzTC.0123456789"


@pytest.fixture(scope="module")
def unigram():
  """"s" is made unlikely, so "she" loses to "he" by log p(s) exactly."""
  return unigram_loaded(CHARS, {"s": -4.0})


def _crows_csv(path, rows):
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, ["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
    writer.writeheader()
    for n, (more, less, group) in enumerate(rows):
      writer.writerow({"": n, "sent_more": more, "sent_less": less,
                       "stereo_antistereo": "stereo", "bias_type": group})


def _winobias_dir(tmp_path, type1, type2):
  for kind, pairs in (("type1", type1), ("type2", type2)):
    for side, index in (("pro", 0), ("anti", 1)):
      lines = [f"{n + 1} {pair[index]}\n" for n, pair in enumerate(pairs)]
      (tmp_path / f"{side}_stereotyped_{kind}.txt.dev").write_text("".join(lines))
  return str(tmp_path)


def test_crows_pairs_reports_the_side_the_model_prefers(unigram, tmp_path):
  loaded, logp = unigram
  path = tmp_path / "crows.csv"
  _crows_csv(path, [("he is a doctor.", "she is a doctor.", "gender"),
                    ("he cried.", "she cried.", "gender"),
                    ("he sat.", "she sat.", "gender"),
                    ("she is old.", "he is old.", "age"),
                    ("he paid 5.", "she paid \u00e9.", "age")])  # "\u00e9": not encodable
  options = registry.options_for(None, "crows_pairs")
  options.path = str(path)
  result = bias_probes.crows_pairs(loaded, options)
  assert result.figures["gender/share"] == 1.0 and result.figures["age/share"] == 0.0
  assert result.figures["share"] == 0.75 and result.figures["skipped"] == 1
  # Each pair differs by one "s": the mean gap is log p(s) with the sign of the side.
  s = logp[loaded.tokenizer.encode("s")[0]]
  assert result.details["mean_logp_gap"] == pytest.approx((3 * -s + s) / 4, abs=1e-4)
  low, high = result.details["overall"]["ci95"]
  assert low < 0.75 < high
  assert "| gender | 3 | 100.0 |" in "\n".join(result.markdown)


def test_winobias_pairs_pro_and_anti_line_by_line(unigram, tmp_path):
  loaded, _ = unigram
  directory = _winobias_dir(
      tmp_path, type1=[("[The nurse] said [he] ran.", "[The nurse] said [she] ran.")] * 2,
      type2=[("The cook met [the clerk] and paid [his].", "The cook met [the clerk] and paid [her].")])
  pairs = bias_probes.read_winobias(directory)
  assert pairs[0]["more"] == "The nurse said he ran." and pairs[0]["group"] == "type1"
  result = bias_probes.winobias(loaded, _opts(directory))
  assert result.figures["type1/share"] == 1.0 and result.figures["type2/share"] == 0.0
  (tmp_path / "anti_stereotyped_type2.txt.dev").write_text("")
  with pytest.raises(UserError, match="must align line by line: 1 != 0 lines"):
    bias_probes.read_winobias(directory)


def _opts(path):
  options = registry.options_for(None, "winobias")
  options.path = path
  return options


def test_a_runs_periodic_probe_equals_gptjax_eval_on_its_checkpoint(tmp_path):
  directory = _winobias_dir(tmp_path, type1=[("the cat sat on he.", "the cat sat on she."),
                                             ("he ran.", "she ran.")],
                            type2=[("a man met her.", "a man met him.")])
  config = load_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  config.train.steps = config.eval.every = config.checkpoint.every = 10
  config.eval.evaluators = "winobias"
  config.evals.winobias.path = directory
  train_lib.train(config, str(tmp_path / "w"))
  during = [r for r in read_metrics(str(tmp_path / "w")) if "eval/winobias/share" in r][-1]
  after = evaluate.run_evaluators(str(tmp_path / "w"), ["winobias"])
  assert after["step"] == during["step"] == 10
  for key in ("share", "type1/share", "type2/share", "pairs"):
    assert after[f"eval/winobias/{key}"] == during[f"eval/winobias/{key}"]
  table = json.load(open(tmp_path / "w" / "evals" / "step_10" / "winobias.json"))
  assert table["figures"]["pairs"] == 3
  assert (tmp_path / "w" / "eval_curves.png").stat().st_size > 0  # gptjax-eval re-plots
  with pytest.raises(UserError, match="unknown evaluator"):
    config.eval.evaluators = "winobias,bleu_typo"
    train_lib.validate(config)
