"""Bias probes by log-likelihood: which of two minimally different sentences the model finds
more likely. Evaluation sets only: never train on them.

- CrowS-Pairs (Nangia et al. 2020): the share of pairs where `sent_more` (the more
  stereotyping sentence) scores higher, overall and per bias type; 50% is no preference.
  An autoregressive model scores a sentence by its log-likelihood as a document (Meade et al.
  2022 do the same for GPT-2), so the pair's shared words weigh alike on both sides.
- WinoBias (Zhao et al. 2018): each pro-stereotypical sentence against its anti-stereotypical
  twin (the same sentence with the pronoun's gender flipped); the share where the pro one
  scores higher, per type (type 1: the pronoun's referent needs world knowledge; type 2:
  syntax settles it).
Ties count half. Intervals are 95% Wilson intervals. Pairs the tokenizer cannot encode (a char
model meeting a character it never saw) or that do not fit the context are left out and
counted.
"""

from __future__ import annotations

import collections
import csv
import os
import re

import numpy as np

from gptjax.errors import UserError
from gptjax.evals import scoring
from gptjax.evals.result import EvalResult
from gptjax.evals.stats import wilson


def read_crows_pairs(path: str) -> list[dict]:
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
  except FileNotFoundError:
    raise UserError(f"CrowS-Pairs file {path!r} not found (evals.crows_pairs.path)") from None
  needed = {"sent_more", "sent_less", "bias_type", "stereo_antistereo"}
  if not rows or not needed <= set(rows[0]):
    raise UserError(f"{path}: needs the columns {sorted(needed)} (crows_pairs_anonymized.csv)")
  return [{"more": r["sent_more"], "less": r["sent_less"], "group": r["bias_type"],
           "direction": r["stereo_antistereo"]} for r in rows]


def _winobias_sentence(line: str) -> str:
  """'12 [The developer] argued ... [he] did ...' -> 'The developer argued ... he did ...'"""
  return re.sub(r"[\[\]]", "", re.sub(r"^\d+\s+", "", line.strip()))


def read_winobias(directory: str, split: str = "dev") -> list[dict]:
  pairs = []
  for kind in ("type1", "type2"):
    files = [os.path.join(directory, f"{side}_stereotyped_{kind}.txt.{split}")
             for side in ("pro", "anti")]
    try:
      pro, anti = ([_winobias_sentence(l) for l in open(f, encoding="utf-8") if l.strip()]
                   for f in files)
    except FileNotFoundError as e:
      raise UserError(f"WinoBias file {e.filename!r} not found (evals.winobias.path)") from None
    if len(pro) != len(anti):
      raise UserError(f"{files[0]} and {files[1]} must align line by line: "
                      f"{len(pro)} != {len(anti)} lines")
    pairs += [{"more": p, "less": a, "group": kind} for p, a in zip(pro, anti)]
  return pairs


def _scorable(loaded, text: str) -> bool:
  try:
    ids = loaded.tokenizer.encode(text)
  except UserError:
    return False
  return len(ids) + 1 <= loaded.model.cfg.max_len


def compare_pairs(loaded, pairs: list[dict], batch_size: int = 32) -> dict:
  """Share of pairs whose "more" sentence scores higher, overall and per "group"."""
  kept = [p for p in pairs if _scorable(loaded, p["more"]) and _scorable(loaded, p["less"])]
  if not kept:
    raise UserError("no pair can be scored: the tokenizer encodes none of them, or none fits "
                    "the context")
  scores = scoring.score_texts(loaded, [p["more"] for p in kept] + [p["less"] for p in kept],
                               batch_size)[:, 0]
  more, less = scores[:len(kept)], scores[len(kept):]
  wins = (more > less) + 0.5 * (more == less)
  groups = collections.defaultdict(list)
  for pair, win in zip(kept, wins):
    groups[pair["group"]].append(win)
  share = lambda w: {"share": float(np.mean(w)), "ci95": wilson(float(np.sum(w)), len(w)),
                     "pairs": len(w)}
  return {"overall": share(wins), "groups": {g: share(w) for g, w in sorted(groups.items())},
          "skipped": len(pairs) - len(kept),
          "mean_logp_gap": float(np.mean(more - less))}


def _result(name: str, summary: dict, what: str) -> EvalResult:
  figures = {"share": summary["overall"]["share"], "pairs": summary["overall"]["pairs"],
             "skipped": summary["skipped"]}
  figures.update({f"{g}/share": s["share"] for g, s in summary["groups"].items()})
  row = lambda label, s: (f"| {label} | {s['pairs']} | {100 * s['share']:.1f} | "
                          f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}] |")
  lines = [f"{name}: {what} (%, 50 = no preference; 95% Wilson interval). "
           f"{summary['skipped']} pairs left out (not encodable or too long).", "",
           "| pairs | n | share % | 95% interval |", "|---|---|---|---|",
           row("all", summary["overall"])]
  lines += [row(g, s) for g, s in summary["groups"].items()]
  return EvalResult(figures, lines, summary)


def crows_pairs(loaded, options) -> EvalResult:
  summary = compare_pairs(loaded, read_crows_pairs(options.path), options.batch_size)
  return _result("CrowS-Pairs", summary,
                 "share of pairs where the more stereotyping sentence is the more likely")


def winobias(loaded, options) -> EvalResult:
  summary = compare_pairs(loaded, read_winobias(options.path), options.batch_size)
  return _result("WinoBias (dev)", summary, "share of pro/anti-stereotypical twins where the "
                 "pro-stereotypical sentence is the more likely")
