"""Corpus BLEU as papers report it, through sacrebleu (Post, 2018).

The score is sacrebleu's default BLEU on detokenized text (cased, tok:13a, exp smoothing)
with its signature, so a reader can reproduce it; the lowercased score sits beside it for
comparison with papers that lowercase. The 95% interval is sacrebleu's bootstrap resampling
of the test sentences (its `n_bootstrap`): mean ± half the 2.5-97.5 percentile spread.
"""

from __future__ import annotations

from sacrebleu.metrics import BLEU

from gptjax.errors import UserError


def corpus_bleu(hypotheses: list[str], references: list[str], n_bootstrap: int = 1000) -> dict:
  """BLEU of one hypothesis against one reference per sentence."""
  if len(hypotheses) != len(references):
    raise UserError(f"{len(hypotheses)} hypotheses for {len(references)} references")
  if not hypotheses:
    raise UserError("no sentences to score")
  out = {"sentences": len(hypotheses)}
  for key, lowercase in (("bleu", False), ("bleu_lowercase", True)):
    metric = BLEU(lowercase=lowercase)
    score = metric.corpus_score(hypotheses, [references])
    # The signature without the bootstrap's bs/seed fields: the score is the plain one.
    out[key], out[f"{key}_signature"] = score.score, str(metric.get_signature())
    if n_bootstrap > 1:
      resampled = BLEU(lowercase=lowercase).corpus_score(hypotheses, [references],
                                                         n_bootstrap=n_bootstrap)
      out[f"{key}_bootstrap_mean"], out[f"{key}_ci95"] = resampled._mean, resampled._ci
  out["brevity_penalty"], out["length_ratio"] = score.bp, score.sys_len / max(score.ref_len, 1)
  return out


def bleu_line(result: dict) -> str:
  """One line for a table: the cased score with its interval and signature, then lowercased."""
  ci = f" ± {result['bleu_ci95']:.2f}" if "bleu_ci95" in result else ""
  return (f"BLEU {result['bleu']:.2f}{ci} ({result['bleu_signature']}); lowercased "
          f"{result['bleu_lowercase']:.2f}")
