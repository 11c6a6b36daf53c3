"""The BLEU wrapper reports sacrebleu's own numbers and signature."""

import pytest
import sacrebleu

from gptjax.errors import UserError
from gptjax.evals.bleu import bleu_line, corpus_bleu

HYPS = ["Ein Mann fährt Fahrrad .", "zwei Hunde spielen im Schnee", "Eine Frau liest ein Buch."]
REFS = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch."]


def test_the_scores_are_sacrebleus_own():
  result = corpus_bleu(HYPS * 5, REFS * 5, n_bootstrap=200)
  assert result["bleu"] == sacrebleu.corpus_bleu(HYPS * 5, [REFS * 5]).score
  assert result["bleu_lowercase"] == sacrebleu.corpus_bleu(HYPS * 5, [REFS * 5],
                                                           lowercase=True).score
  assert result["bleu_lowercase"] > result["bleu"]  # "zwei" matches "Zwei" only lowercased
  assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
  assert "case:lc" in result["bleu_lowercase_signature"]
  assert 0 < result["bleu_ci95"] < 50
  assert "tok:13a" in bleu_line(result)


def test_identical_text_scores_100_and_mismatched_lengths_are_refused():
  assert corpus_bleu(REFS, REFS, n_bootstrap=0)["bleu"] == pytest.approx(100.0)
  with pytest.raises(UserError, match="2 hypotheses for 3 references"):
    corpus_bleu(HYPS[:2], REFS)
