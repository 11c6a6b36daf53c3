"""Task accuracy from JSON lines: multiple choice by log-likelihood, and exact match of
generated answers.

multiple_choice: {"context": str, "choices": [str, ...], "answer": index} a line (also
  "question" for "context"). Each choice is scored as a continuation of the context (after
  `separator`); the model picks the highest sum of log-probs ("accuracy") and the highest
  per-byte log-prob ("accuracy_norm", lm-evaluation-harness's acc_norm, which does not favour
  short choices).
exact_match: {"prompt": str, "answer": str} a line (GRPO's verifiable-reward format). The
  model answers greedily (a chat model: the prompt as the user's turn, up to its end of turn;
  a base model: a continuation up to the end of the line); the answer counts when it equals
  the reference after SQuAD's normalisation (lower case, no punctuation, no articles,
  whitespace collapsed).
Intervals: 95% Wilson.
"""

from __future__ import annotations

import json
import re
import string

import numpy as np

from gptjax.data import chat_template
from gptjax.errors import UserError
from gptjax.evals import decoding, scoring
from gptjax.evals.result import EvalResult
from gptjax.evals.stats import wilson


def read_jsonl(path: str, required: tuple[str, ...]) -> list[dict]:
  records = []
  try:
    with open(path, encoding="utf-8") as f:
      for line, text in enumerate(f, 1):
        if not text.strip():
          continue
        try:
          record = json.loads(text)
        except json.JSONDecodeError as e:
          raise UserError(f"{path}:{line}: not valid JSON ({e.msg})") from None
        if "question" in record and "context" not in record:
          record["context"] = record["question"]
        missing = [k for k in required if k not in record]
        if missing:
          raise UserError(f"{path}:{line}: needs {', '.join(required)}; missing {missing}")
        records.append(record)
  except FileNotFoundError:
    raise UserError(f"{path!r} not found (evals.NAME.path)") from None
  if not records:
    raise UserError(f"{path}: no records")
  return records


def _share(hits: np.ndarray) -> dict:
  return {"share": float(hits.mean()), "ci95": wilson(float(hits.sum()), len(hits))}


def multiple_choice(loaded, options) -> EvalResult:
  records = read_jsonl(options.path, ("context", "choices", "answer"))
  pairs, owner = [], []
  for n, r in enumerate(records):
    if not (isinstance(r["answer"], int) and 0 <= r["answer"] < len(r["choices"])):
      raise UserError(f"{options.path}: record {n + 1}'s answer {r['answer']!r} is not an "
                      f"index into its {len(r['choices'])} choices")
    pairs += [(r["context"], options.separator + c) for c in r["choices"]]
    owner += [n] * len(r["choices"])
  scores = scoring.score_continuations(loaded, pairs, options.batch_size)
  owner = np.asarray(owner)
  per_byte = scores[:, 0] / np.asarray([max(len(c.encode("utf-8")), 1) for _, c in pairs])
  picks = {"accuracy": scores[:, 0], "accuracy_norm": per_byte}
  out = {}
  for key, values in picks.items():
    chosen = np.asarray([np.argmax(values[owner == n]) for n in range(len(records))])
    out[key] = _share(chosen == np.asarray([r["answer"] for r in records]))
  chance = float(np.mean([1 / len(r["choices"]) for r in records]))
  lines = [f"{options.path}: {len(records)} questions, multiple choice by log-likelihood "
           f"(chance {100 * chance:.1f}%; 95% Wilson interval).", "",
           "| choice by | accuracy % | 95% interval |", "|---|---|---|"]
  for key, label in (("accuracy", "sum of log-probs"), ("accuracy_norm", "log-prob per byte")):
    low, high = out[key]["ci95"]
    lines.append(f"| {label} | {100 * out[key]['share']:.1f} | [{100 * low:.1f}, {100 * high:.1f}] |")
  figures = {k: v["share"] for k, v in out.items()}
  figures.update(questions=len(records), chance=chance)
  return EvalResult(figures, lines, out)


def normalize_answer(text: str) -> str:
  text = "".join(c for c in text.lower() if c not in string.punctuation)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match(loaded, options) -> EvalResult:
  records = read_jsonl(options.path, ("prompt", "answer"))
  prompts = [r["prompt"] for r in records]
  chat = chat_template.has_chat_tokens(loaded.tokenizer) or chat_template.has_own_format(
      loaded.tokenizer)
  answer = decoding.chat_answers if chat else decoding.text_continuations
  outputs = answer(loaded, prompts, max_new_tokens=options.max_new_tokens,
                   batch_size=options.batch_size)
  hits = np.asarray([normalize_answer(o) == normalize_answer(str(r["answer"]))
                     for o, r in zip(outputs, records)])
  share = _share(hits)
  low, high = share["ci95"]
  how = "as a chat turn" if chat else "as a continuation"
  lines = [f"{options.path}: {len(records)} prompts answered greedily {how}; exact match "
           f"{100 * share['share']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (95% Wilson).", "",
           "| prompt | reference | model |", "|---|---|---|"]
  cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
  lines += [f"| {cell(r['prompt'])} | {cell(r['answer'])} | {cell(o)} |"
            for r, o in list(zip(records, outputs))[:options.samples]]
  return EvalResult({"accuracy": share["share"], "prompts": len(records)}, lines,
                    {**share, "answers": [{"prompt": r["prompt"], "reference": r["answer"],
                                           "model": o} for r, o in zip(records, outputs)]})
