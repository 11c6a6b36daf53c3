"""The retraining loop's data: served conversations and users' feedback, logged to JSONL, and
turned into SFT conversations and preference pairs the sft and dpo tasks read.

    DIR/conversations.jsonl  {"id", "created", "model", "messages": [...],
                                  "choices": [reply, ...], "sampling": {...}}
    DIR/feedback.jsonl       {"id", "created", "rating": number | null,
                                  "preferred": choice index | null, "comment": str}

    gptjax-feedback --feedback_dir=DIR --out=OUT [--min_rating=1]
      OUT/sft.jsonl    {"messages": conversation + the reply}, one per reply rated at least
                       --min_rating or preferred (data.format=messages)
      OUT/pairs.jsonl  {"messages": prompt, "chosen": reply, "rejected": reply}: the preferred
                       choice over each other choice of its request, and between requests with
                       the same messages, a higher-rated reply over a lower-rated one

Logging is opt-in (gptjax-serve --feedback_dir); nothing is written without it.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import Iterator

from gptjax.errors import UserError

CONVERSATIONS, FEEDBACK = "conversations.jsonl", "feedback.jsonl"


class FeedbackLog:
  """Appends records, one JSON line each, from the server's threads."""

  def __init__(self, log_dir: str):
    self.log_dir = log_dir
    os.makedirs(log_dir, exist_ok=True)
    self._lock = threading.Lock()
    # id -> number of choices, for checking feedback against what was served
    self.choices = {r["id"]: len(r["choices"]) for r in _read(os.path.join(log_dir, CONVERSATIONS))}

  def _append(self, name: str, record: dict) -> None:
    with self._lock, open(os.path.join(self.log_dir, name), "a") as f:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")

  def log_completion(self, completion_id: str, model: str, messages: list[dict],
                     choices: list[str], sampling: dict) -> None:
    self._append(CONVERSATIONS, {"id": completion_id, "created": int(time.time()),
                                 "model": model, "messages": messages, "choices": choices,
                                 "sampling": sampling})
    self.choices[completion_id] = len(choices)

  def log_feedback(self, completion_id: str, rating=None, preferred=None,
                   comment: str = "") -> None:
    """KeyError (the server's 404) for an id never served, ValueError (400) for feedback
    that names no rating, no choice, or a choice that was not served."""
    if completion_id not in self.choices:
      raise KeyError(f"no logged completion has id {completion_id!r}")
    if rating is None and preferred is None:
      raise ValueError("feedback needs a rating or a preferred choice")
    if rating is not None and not isinstance(rating, (int, float)):
      raise ValueError("rating must be a number")
    if preferred is not None and not (isinstance(preferred, int)
                                      and 0 <= preferred < self.choices[completion_id]):
      raise ValueError(f"preferred must be a choice index below {self.choices[completion_id]}")
    self._append(FEEDBACK, {"id": completion_id, "created": int(time.time()), "rating": rating,
                            "preferred": preferred, "comment": comment})


def _read(path: str) -> Iterator[dict]:
  if not os.path.exists(path):
    return
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError:
          raise UserError(f"{path}:{number}: not a JSON line") from None


def _assistant(text: str) -> dict:
  return {"role": "assistant", "content": text}


def training_data(log_dir: str, min_rating: float) -> tuple[list[dict], list[dict]]:
  """(SFT conversations, preference pairs) from a log folder; the newest feedback on a
  completion wins."""
  served = {r["id"]: r for r in _read(os.path.join(log_dir, CONVERSATIONS))}
  if not served:
    raise UserError(f"--feedback_dir={log_dir} has no {CONVERSATIONS}: serve with "
                    "gptjax-serve --feedback_dir first")
  verdict = {f["id"]: f for f in _read(os.path.join(log_dir, FEEDBACK)) if f["id"] in served}
  sft, pairs = [], []
  rated = {}  # messages (as JSON) -> [(rating, reply)]
  for cid, fb in verdict.items():
    record = served[cid]
    prompt, choices = record["messages"], record["choices"]
    if fb.get("preferred") is not None:
      best = choices[fb["preferred"]]
      sft.append({"messages": prompt + [_assistant(best)]})
      pairs += [{"messages": prompt, "chosen": best, "rejected": other}
                for k, other in enumerate(choices) if k != fb["preferred"] and other != best]
    if fb.get("rating") is not None:
      if fb["rating"] >= min_rating and fb.get("preferred") is None:
        sft += [{"messages": prompt + [_assistant(c)]} for c in choices]
      rated.setdefault(json.dumps(prompt, sort_keys=True), []).extend(
          (fb["rating"], c) for c in choices)
  for key, replies in rated.items():
    for (r1, c1), (r2, c2) in itertools.combinations(replies, 2):
      if r1 != r2 and c1 != c2:
        chosen, rejected = (c1, c2) if r1 > r2 else (c2, c1)
        pairs.append({"messages": json.loads(key), "chosen": chosen, "rejected": rejected})
  return sft, pairs


def write_training_data(log_dir: str, out_dir: str, min_rating: float = 1.0) -> dict:
  sft, pairs = training_data(log_dir, min_rating)
  os.makedirs(out_dir, exist_ok=True)
  for name, rows in (("sft.jsonl", sft), ("pairs.jsonl", pairs)):
    with open(os.path.join(out_dir, name), "w") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return {"sft": len(sft), "pairs": len(pairs)}


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("feedback_dir", None, "gptjax-serve's --feedback_dir", required=True)
  flags.DEFINE_string("out", None, "folder for sft.jsonl and pairs.jsonl", required=True)
  flags.DEFINE_float("min_rating", 1.0, "a rated reply joins the SFT data at this rating")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      counts = write_training_data(FLAGS.feedback_dir, FLAGS.out, FLAGS.min_rating)
      print(f"{counts['sft']} SFT conversations and {counts['pairs']} preference pairs "
            f"written to {FLAGS.out}")
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
