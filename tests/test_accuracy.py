"""Accuracy evaluators on a hand-made unigram model, where every answer is known."""

import json

import pytest

from gptjax.errors import UserError
from gptjax.evals import accuracy, registry
from conftest import unigram_loaded

CHARS = "\n abcdefghijklmnopqrstuvwxyz.?"


def _jsonl(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def _options(name, path, **kw):
  options = registry.options_for(None, name)
  options.path = path
  options.update(kw)
  return options


def test_multiple_choice_sum_and_per_byte_pick_as_computed_by_hand(tmp_path):
  loaded, logp = unigram_loaded(CHARS, {"s": -4.0})
  # " s": two unlikely-ish characters beat " aaaa"'s five in sum, lose per byte.
  records = [{"context": "pick", "choices": ["aaaa", "s"], "answer": 0},
             {"question": "again?", "choices": ["sss", "ab"], "answer": 1},
             {"context": "x", "choices": ["s", "b", "c"], "answer": 2}]
  result = accuracy.multiple_choice(loaded, _options("multiple_choice",
                                                      _jsonl(tmp_path / "mc.jsonl", records)))
  u, s = logp[loaded.tokenizer.encode("a")[0]], logp[loaded.tokenizer.encode("s")[0]]
  assert u + s > 5 * u and (u + s) / 2 < u  # the premise: sum and per byte disagree
  # Record 1: sum picks "s" (wrong), per byte "aaaa" (right). Record 2: "ab" both ways.
  # Record 3: "b" and "c" tie; argmax takes the first, "b" (wrong) both ways.
  assert result.figures["accuracy"] == pytest.approx(1 / 3)
  assert result.figures["accuracy_norm"] == pytest.approx(2 / 3)
  assert result.figures["chance"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
  with pytest.raises(UserError, match="answer 5 is not an index into its 2 choices"):
    accuracy.multiple_choice(loaded, _options("multiple_choice", _jsonl(
        tmp_path / "bad.jsonl", [{"context": "c", "choices": ["a", "b"], "answer": 5}])))


def test_exact_match_normalises_like_squad(tmp_path):
  loaded, _ = unigram_loaded(CHARS, {"a": 4.0, "\n": 2.0})  # greedy: "aaa..." forever
  records = [{"prompt": "say it?", "answer": "AAA"},
             {"prompt": "again.", "answer": "The aaa."},
             {"prompt": "once more", "answer": "aa"}]
  result = accuracy.exact_match(loaded, _options(
      "exact_match", _jsonl(tmp_path / "em.jsonl", records), max_new_tokens=3))
  assert [a["model"] for a in result.details["answers"]] == ["aaa"] * 3
  assert result.figures["accuracy"] == pytest.approx(2 / 3)
  assert accuracy.normalize_answer("  The  Cat, an apple!") == "cat apple"
  with pytest.raises(UserError, match=r"em2.jsonl:1: needs prompt, answer; missing \['answer'\]"):
    accuracy.exact_match(loaded, _options("exact_match", _jsonl(tmp_path / "em2.jsonl",
                                                                [{"prompt": "p"}])))
