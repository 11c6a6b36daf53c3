"""Human review: a blinded pack out, synthetic raters' files in, known figures back."""

import csv
import json
import os

import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.evals import review_import, review_pack

PROMPTS = [f"Question {n}: what is {n} plus {n}?" for n in range(12)]
OUTPUTS = {"runs/model_one": [f"It is {2 * n}." for n in range(12)],
           "runs/model_two": [f"{n} and {n} make {2 * n}, I think." for n in range(12)]}


def _fill(pack_dir, rater, value_of):
  """A rater's CSV: pack.csv with each rating column set by value_of(item key, column)."""
  key = json.load(open(os.path.join(pack_dir, "key.json")))
  with open(os.path.join(pack_dir, "pack.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    for column in review_pack.rating_columns(key["kind"], len(key["models"])):
      row[column] = value_of(key["items"][row["item"]], column)
  path = os.path.join(pack_dir, f"{rater}.csv")
  return review_pack.write_sheet(path, rows)


def test_the_key_is_the_only_link_from_items_to_models(tmp_path):
  review_pack.write_pack(str(tmp_path), PROMPTS, OUTPUTS, "pairwise", seed=3)
  key = json.load(open(tmp_path / "key.json"))
  for name in ("pack.csv", "pack.html"):
    text = open(tmp_path / name).read()
    assert "model_one" not in text and "model_two" not in text
    assert all(item in text for item in key["items"])
  sides = [entry["A"] for entry in key["items"].values()]
  assert 0 < sides.count("runs/model_one") < len(sides)  # A/B drawn per item
  rows = list(csv.DictReader(open(tmp_path / "pack.csv")))
  assert [r["item"] for r in rows] != sorted(key["items"])  # items shuffled
  for row in rows:  # the texts sit on the side the key says
    entry = key["items"][row["item"]]
    assert row["output_A"] == OUTPUTS[entry["A"]][entry["prompt_index"]]
    assert row["prompt"] == PROMPTS[entry["prompt_index"]]


def test_likert_means_intervals_and_perfect_agreement(tmp_path):
  review_pack.write_pack(str(tmp_path), PROMPTS, OUTPUTS, "likert", seed=0)
  score = lambda entry, column: "4" if entry[column[-1]] == "runs/model_one" else "2"
  paths = [_fill(str(tmp_path), r, score) for r in ("alice", "bob")]
  summary = review_import.import_ratings(str(tmp_path / "key.json"), paths)
  for criterion in review_pack.CRITERIA:
    assert summary[criterion]["runs/model_one"]["mean"] == 4.0
    assert summary[criterion]["runs/model_two"]["ci95"] == (2.0, 2.0)
    assert summary[criterion]["runs/model_one"]["ratings"] == 24
    assert summary[criterion]["alpha_ordinal"] == pytest.approx(1.0)
  assert os.path.exists(tmp_path / "summary.md")


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: four observers,
# twelve units, missing values; alpha 0.743 nominal, 0.815 ordinal.
CLASSIC = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
           [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
           [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
           [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]


def test_disagreeing_raters_give_krippendorffs_published_alpha(tmp_path):
  review_pack.write_pack(str(tmp_path), PROMPTS, {"m": OUTPUTS["runs/model_one"]}, "likert",
                         seed=1)
  paths = []
  for rater, values in zip("wxyz", CLASSIC):
    value = lambda entry, column, values=values: (
        "" if values[entry["prompt_index"]] is None else str(values[entry["prompt_index"]]))
    paths.append(_fill(str(tmp_path), rater, value))
  summary = review_import.import_ratings(str(tmp_path / "key.json"), paths)
  observed = [v for row in CLASSIC for v in row if v is not None]
  assert summary["fluency"]["m"]["mean"] == pytest.approx(np.mean(observed))
  assert summary["fluency"]["m"]["ratings"] == len(observed) == 41
  assert summary["fluency"]["alpha_ordinal"] == pytest.approx(0.8154, abs=1e-4)
  low, high = summary["fluency"]["m"]["ci95"]
  assert low < np.mean(observed) < high


def test_pairwise_win_rate_and_nominal_alpha_by_hand(tmp_path):
  prompts, outputs = PROMPTS[:4], {k: v[:4] for k, v in OUTPUTS.items()}
  review_pack.write_pack(str(tmp_path), prompts, outputs, "pairwise", seed=5)
  first = "runs/model_one"
  # Rater 1 prefers model one on prompts 0 and 1, rater 2 on prompt 0 only.
  wins = {"r1": {0, 1}, "r2": {0}}
  paths = []
  for rater, preferred in wins.items():
    pick = lambda entry, column, p=preferred: next(
        s for s in "AB" if (entry[s] == first) == (entry["prompt_index"] in p))
    paths.append(_fill(str(tmp_path), rater, pick))
  summary = review_import.import_ratings(str(tmp_path / "key.json"), paths)
  assert summary["win_rate"][first]["rate"] == pytest.approx(3 / 8)
  assert summary["win_rate"]["runs/model_two"]["rate"] == pytest.approx(5 / 8)
  # Coincidences o01 = o10 = 1 of n = 8 pairable values (3 of one kind, 5 of the other):
  # alpha = 1 - (n - 1) (o01 + o10) / (2 n0 n1) = 1 - 7 * 2 / 30.
  assert summary["alpha_nominal"] == pytest.approx(1 - 14 / 30)


def test_a_bad_rating_names_the_file_line_and_what_to_use(tmp_path):
  review_pack.write_pack(str(tmp_path), PROMPTS, OUTPUTS, "pairwise", seed=0)
  path = _fill(str(tmp_path), "carol", lambda entry, column: "C")
  with pytest.raises(UserError, match=r"carol.csv:2: preferred='C'; use one of A, B, tie"):
    review_import.import_ratings(str(tmp_path / "key.json"), [path])


def test_human_export_of_two_checkpoints_then_import(sft_run, tmp_path):
  """gptjax-eval --eval=human_export on a chat model against a copy of itself: the pack holds
  each model's greedy answers, the key names both workdirs, and ratings come back per model."""
  import shutil
  from gptjax import evaluate
  from gptjax.evals import human_export, registry
  from gptjax.load import load_workdir
  other = str(tmp_path / "other")
  shutil.copytree(sft_run, other)
  prompts = ["Name a colour.", "Give me a word for happy.", "What is the capital of France?"]
  (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n"
                                                  for p in prompts))
  out = str(tmp_path / "pack")
  row = evaluate.run_evaluators(sft_run, ["human_export"], overrides=[
      f"path={tmp_path / 'prompts.jsonl'}", f"compare={other}", "kind=pairwise", f"out={out}",
      "max_new_tokens=12"])
  assert row["eval/human_export[path=prompts.jsonl,compare=other,kind=pairwise,out=pack,"
             "max_new_tokens=12]/items"] == 3
  key = json.load(open(os.path.join(out, "key.json")))
  assert set(key["models"]) == {sft_run, other} and key["settings"]["beams"] == 1
  options = registry.options_for(None, "human_export")
  options.max_new_tokens = 12
  expected = human_export.outputs_of(load_workdir(sft_run), prompts, options)
  rows = list(csv.DictReader(open(os.path.join(out, "pack.csv"))))
  for r in rows:
    entry = key["items"][r["item"]]
    assert r["output_A"] == r["output_B"] == expected[entry["prompt_index"]]
  prefer_first = lambda entry, column: next(s for s in "AB" if entry[s] == sft_run)
  summary = review_import.import_ratings(os.path.join(out, "key.json"),
                                         [_fill(out, "ann", prefer_first)])
  assert summary["win_rate"][sft_run]["rate"] == 1.0


HOSTILE = ["<!--<script>", "</script>", "<!--", "-->", "]]>", "&amp;", "line\u2028sep\u2029",
           "\"quoted\" 'single' back\\slash \\u003c", "__TITLE__ __DATA__", "</SCRIPT >x<!-- <script"]


def test_the_form_shows_any_text(tmp_path):
  """Texts that would end the data element early or push the HTML tokenizer into its script
  "escaped" states (where the page's main script gets swallowed into the data) come back
  exactly when the page reads its data."""
  outputs = {"a": [t[::-1] for t in HOSTILE], "b": [t + "<script>" for t in HOSTILE]}
  review_pack.write_pack(str(tmp_path), HOSTILE, outputs, "pairwise", seed=0)
  page = open(tmp_path / "pack.html", encoding="utf-8").read()
  opening = '<script id="data" type="application/json">'
  start = page.index(opening) + len(opening)
  data = page[start:page.lower().index("</script", start)]
  # In the tokenizer's script data state only "<" can start anything (HTML spec 13.2.5.4), so
  # with none in the data the element ends at its own closing tag, whatever the texts are.
  assert "<" not in data, f"raw < in the data: ...{data[data.find('<') - 12:][:32]}..."
  assert page.lower().count("</script") == 2  # the data's closing tag and the main script's
  key = json.load(open(tmp_path / "key.json"))
  items = json.loads(data)["items"]
  assert len(items) == len(HOSTILE)
  for item in items:
    entry = key["items"][item["item"]]
    assert item["prompt"] == HOSTILE[entry["prompt_index"]]
    for side in "AB":
      assert item[f"output_{side}"] == outputs[entry[side]][entry["prompt_index"]]
