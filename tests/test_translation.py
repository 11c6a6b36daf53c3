"""Translation as chat: parallel text in, beam-searched answers out, BLEU from sacrebleu."""

import gzip
import json
import os

import numpy as np
import pytest
import sacrebleu

from gptjax import evaluate, train as train_lib
from gptjax.data import chat_data, parallel
from gptjax.errors import UserError
from gptjax.evals import registry, translation
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics
from test_train import load_config

SOURCES = ["A man rides a bike.", "Two dogs play in the snow.", "A woman reads a book.",
           "Children run on the beach at sunset.", "A cat sleeps."]
TARGETS = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.",
           "Eine Frau liest ein Buch.", "Kinder rennen bei Sonnenuntergang am Strand.",
           "Eine Katze schläft."]


def _write(prefix, sources, targets, gz=True):
  for suffix, lines in (("en", sources), ("de", targets)):
    path = f"{prefix}.{suffix}" + (".gz" if gz else "")
    with (gzip.open if gz else open)(path, "wt", encoding="utf-8") as f:
      f.write("".join(line + "\n" for line in lines))
  return str(prefix)


def test_parallel_files_become_conversations_and_mistakes_are_named(tmp_path):
  prefix = _write(tmp_path / "train", SOURCES, TARGETS)
  conversations = parallel.read_conversations(prefix, "en,de")
  assert conversations[1] == [{"role": "user", "content": SOURCES[1]},
                              {"role": "assistant", "content": TARGETS[1]}]
  with pytest.raises(UserError, match="5 lines but .* has 4: they must align"):
    parallel.read_pairs(_write(tmp_path / "bad", SOURCES, TARGETS[:4], gz=False), "en,de")
  with pytest.raises(UserError, match="line 2 is empty on one side"):
    parallel.read_pairs(_write(tmp_path / "gap", SOURCES, ["x", " ", "y", "z", "w"]), "en,de")
  with pytest.raises(UserError, match="languages='en'"):
    parallel.read_pairs(prefix, "en")
  with pytest.raises(UserError, match="no .*train.fr or .*train.fr.gz"):
    parallel.read_pairs(prefix, "en,fr")


def test_eval_path_holds_out_exactly_that_file(tmp_path):
  config = load_config("translate_multi30k", "smoke")
  config.data.path = _write(tmp_path / "train", SOURCES * 8, TARGETS * 8)
  config.data.eval_path = _write(tmp_path / "val", SOURCES[:2], TARGETS[:2])
  config.data.tokenizer.kind = "char"
  config.data.packing = False
  data = chat_data.make_chat_datasets(config, 0, 1)
  held_out = [row for batch in data.eval_splits["validation"]()
              for row, mask in zip(batch["tokens"], batch["mask"]) if mask.any()]
  decoded = [data.tokenizer.decode(row.tolist()) for row in held_out]
  assert len(held_out) == 2  # unpacked: one row per held-out conversation
  assert all(s in text and t in text for s, t, text in zip(SOURCES, TARGETS, decoded))
  config.task.name = "lm"
  with pytest.raises(UserError, match="read by task.name=sft"):
    train_lib.validate(config)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """configs/translate_multi30k.py:smoke on the real Multi30k, with its periodic BLEU."""
  tmp = tmp_path_factory.mktemp("multi30k")
  config = load_config("translate_multi30k", "smoke")
  if not os.path.exists(config.data.path + ".en.gz"):
    pytest.skip("../shared/data/multi30k not found beside the repo")
  config.data.data_dir = str(tmp / "data")
  train_lib.train(config, str(tmp / "w"))
  return str(tmp / "w")


def test_batched_translation_equals_one_sentence_at_a_time(smoke_run):
  loaded = load_workdir(smoke_run)
  batched = translation.translate(loaded, SOURCES, beams=3, max_new_tokens=8, batch_size=4)
  alone = [translation.translate(loaded, [s], beams=3, max_new_tokens=8, batch_size=1)[0]
           for s in SOURCES]
  assert batched == alone  # five sources in batches of four: the last one filled with copies


def test_the_runs_bleu_curve_and_gptjax_eval_agree_and_are_sacrebleus(smoke_run, tmp_path):
  during = [r for r in read_metrics(smoke_run) if "eval/bleu/bleu" in r]
  assert [r["step"] for r in during] == [10]
  after = evaluate.run_evaluators(smoke_run, ["bleu"])
  assert after["eval/bleu/bleu"] == during[0]["eval/bleu/bleu"]
  curve = [r for r in read_metrics(smoke_run) if "eval/bleu/bleu" in r]
  prefix = _write(tmp_path / "test", SOURCES, TARGETS)
  other = evaluate.run_evaluators(smoke_run, ["bleu"], overrides=[
      f"path={prefix}", "beams=2", "limit=0", "n_bootstrap=50"])
  label = "bleu[path=test,beams=2,limit=0,n_bootstrap=50]"  # another test set: filed apart
  saved = json.load(open(os.path.join(smoke_run, "evals", "step_10", f"{label}.json")))
  hypotheses = [t["model"] for t in saved["details"]["translations"]]
  assert len(hypotheses) == 5
  assert other[f"eval/{label}/bleu"] == sacrebleu.corpus_bleu(hypotheses, [TARGETS]).score
  assert [r for r in read_metrics(smoke_run) if "eval/bleu/bleu" in r] == curve
  assert registry.label_for("bleu", ["path=../d/test_2016_flickr/", "beams=5"]) == (
      "bleu[path=test_2016_flickr,beams=5]")
  assert "beam search, 2 beams" in open(other["tables"][label]).read()
  assert np.isfinite(other[f"eval/{label}/bleu_ci95"])
  with pytest.raises(UserError, match="beams='x' is not a int"):
    registry.with_overrides(registry.options_for(None, "bleu"), "bleu", ["beams=x"])
