"""The retraining loop's data: served conversations and users' feedback, logged to JSONL, and
turned into SFT conversations and preference pairs the sft and dpo tasks read.

    DIR/conversations.jsonl  {"id", "created", "model", "messages": [...],
                                  "choices": [reply, ...], "sampling": {...}}
    DIR/feedback.jsonl       {"id", "created", "rating": number | null,
                                  "preferred": choice index | null, "comment": str}

A rating is a finite number in [-10, 10] (a thumbs up/down as +1/-1, stars as 1 to 5); a
comment is at most 4,000 characters. The two logs together stop growing at `max_bytes`:
feedback past it is refused (the server's 507) and replies are no longer logged, with one
line saying so.

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
import math
import os
import sys
import threading
import time
from typing import Iterator

from gptjax.errors import UserError

CONVERSATIONS, FEEDBACK = "conversations.jsonl", "feedback.jsonl"
RATING_RANGE = (-10, 10)
MAX_COMMENT_CHARS = 4000


class BadFeedback(ValueError):
  """Feedback the log refuses (the server's 400), naming the field."""

  def __init__(self, message: str, param: str):
    super().__init__(message)
    self.param = param


class LogFull(Exception):
  """The logs reached their size limit (the server's 507)."""


def rating_problem(rating) -> str | None:
  """Why `rating` is not a rating (None: it is one)."""
  lo, hi = RATING_RANGE
  if isinstance(rating, bool) or not isinstance(rating, (int, float)):
    return f"rating must be a number in [{lo}, {hi}]"
  if not (math.isfinite(rating) and lo <= rating <= hi):
    return f"rating must be a finite number in [{lo}, {hi}], got {rating}"
  return None


class FeedbackLog:
  """Appends records, one JSON line each, from the server's threads, up to `max_bytes`."""

  def __init__(self, log_dir: str, max_bytes: int = 1 << 30):
    self.log_dir, self.max_bytes = log_dir, max_bytes
    os.makedirs(log_dir, exist_ok=True)
    self._lock = threading.Lock()
    self._warned_full = False
    # id -> number of choices, for checking feedback against what was served
    self.choices = {r["id"]: len(r["choices"]) for r in _read(os.path.join(log_dir, CONVERSATIONS))}
    self.size = sum(os.path.getsize(p) for p in map(self._path, (CONVERSATIONS, FEEDBACK))
                    if os.path.exists(p))

  def _path(self, name: str) -> str:
    return os.path.join(self.log_dir, name)

  def _append(self, name: str, record: dict) -> None:
    line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()
    with self._lock:
      if self.size + len(line) > self.max_bytes:
        raise LogFull(f"the feedback log in {self.log_dir} is full ({self.size} bytes; "
                      "gptjax-serve --feedback_max_bytes): move it aside or raise the limit")
      with open(self._path(name), "ab") as f:
        f.write(line)
      self.size += len(line)

  def log_completion(self, completion_id: str, model: str, messages: list[dict],
                     choices: list[str], sampling: dict) -> None:
    try:
      self._append(CONVERSATIONS, {"id": completion_id, "created": int(time.time()),
                                   "model": model, "messages": messages, "choices": choices,
                                   "sampling": sampling})
    except LogFull as e:  # the reply is served all the same; say once that it is not kept
      if not self._warned_full:
        self._warned_full = True
        print(f"gptjax-serve: {e}; replies are no longer logged", file=sys.stderr, flush=True)
      return
    self.choices[completion_id] = len(choices)

  def log_feedback(self, completion_id: str, rating=None, preferred=None,
                   comment="") -> None:
    """KeyError (the server's 404) for an id never served, BadFeedback (400) for feedback
    that names no rating, no choice, a choice that was not served, a rating out of range or
    a comment that is not text or too long; LogFull (507) once the logs are full."""
    if completion_id not in self.choices:
      raise KeyError(f"no logged completion has id {completion_id!r}")
    if rating is None and preferred is None:
      raise BadFeedback("feedback needs a rating or a preferred choice", "rating")
    if rating is not None and rating_problem(rating):
      raise BadFeedback(rating_problem(rating), "rating")
    choices = self.choices[completion_id]
    if preferred is not None and (isinstance(preferred, bool) or not isinstance(preferred, int)
                                  or not 0 <= preferred < choices):
      raise BadFeedback(f"preferred must be a choice index below {choices}", "preferred")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
      raise BadFeedback(f"comment must be text of at most {MAX_COMMENT_CHARS} characters",
                        "comment")
    try:
      comment.encode("utf-8")
    except UnicodeEncodeError:
      raise BadFeedback("comment holds a lone UTF-16 surrogate: send valid Unicode text",
                        "comment") from None
    self._append(FEEDBACK, {"id": completion_id, "created": int(time.time()), "rating": rating,
                            "preferred": preferred, "comment": comment})


def _not_json(name: str):
  raise ValueError(f"{name} is not a JSON value")


def _read(path: str) -> Iterator[dict]:
  """The records of a log; a line that is not a JSON object (NaN and Infinity, which older
  servers wrote, included) is one error naming it."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          record = json.loads(line, parse_constant=_not_json)
        except (ValueError, RecursionError) as e:
          raise UserError(f"{path}:{number}: not a JSON line ({e}): fix or remove the line")
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
          raise UserError(f"{path}:{number}: not a record with an id: fix or remove the line")
        yield record


def _checked_feedback(path: str) -> Iterator[dict]:
  for number, record in enumerate(_read(path), 1):
    rating = record.get("rating")
    if rating is not None and rating_problem(rating):
      raise UserError(f"{path}: record {number} ({record['id']}): {rating_problem(rating)}: "
                      "fix or remove it")
    preferred = record.get("preferred")
    if preferred is not None and (isinstance(preferred, bool) or not isinstance(preferred, int)):
      raise UserError(f"{path}: record {number} ({record['id']}): preferred must be a choice "
                      "index: fix or remove it")
    yield record


def _assistant(text: str) -> dict:
  return {"role": "assistant", "content": text}


def training_data(log_dir: str, min_rating: float) -> tuple[list[dict], list[dict]]:
  """(SFT conversations, preference pairs) from a log folder; the newest feedback on a
  completion wins."""
  served = {r["id"]: r for r in _read(os.path.join(log_dir, CONVERSATIONS))}
  if not served:
    raise UserError(f"--feedback_dir={log_dir} has no {CONVERSATIONS}: serve with "
                    "gptjax-serve --feedback_dir first")
  verdict = {f["id"]: f for f in _checked_feedback(os.path.join(log_dir, FEEDBACK))
             if f["id"] in served}
  sft, pairs = [], []
  rated = {}  # messages (as JSON) -> [(rating, reply)]
  for cid, fb in verdict.items():
    record = served[cid]
    prompt, choices = record["messages"], record["choices"]
    if fb.get("preferred") is not None:
      if not 0 <= fb["preferred"] < len(choices):
        raise UserError(f"{log_dir}/{FEEDBACK}: feedback on {cid} prefers choice "
                        f"{fb['preferred']} of {len(choices)}: fix or remove it")
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
