"""Conversations for chat fine-tuning, read from alpaca, Anthropic HH-RLHF or OpenAI-style files.

A conversation is a list of `{"role": "system"|"user"|"assistant", "content": str}` messages.
Files are a JSON list or JSON lines (`.gz` read through gzip); every record becomes one
conversation or, if malformed, one `file:line:` error (skipped and counted with `skip_bad`).
Valid: known roles, string contents, a system message only first, and at least one
assistant message (with nothing to learn otherwise). An empty assistant message is valid:
the model still learns its end-of-turn token, i.e. to answer with nothing (2 alpaca
records, 4 HH dialogues).

HH dialogues split only on `\\n\\nHuman:` / `\\n\\nAssistant:`; contents are stripped, inner
newlines kept. Seen in harmless-base-test (2,312 lines), `chosen` side:
- empty final assistant turn (4): kept as an empty message, since the empty reply is what
  was preferred;
- consecutive assistant turns (8): kept as separate messages, as written;
- "Human:" without the blank line before it, inside a turn (39): text, not a turn marker.
Text before the first marker (none seen) is malformed: it belongs to no speaker.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from gptjax import storage
from gptjax.data.sources import resolve_files
from gptjax.errors import UserError

FORMATS = ("alpaca", "hh", "messages")
ROLES = ("system", "user", "assistant")
FORMAT_FLAG = "--config.data.format"
SKIP_FLAG = "--config.data.skip_bad_records"
FRACTION_FLAG = "--config.data.eval_fraction"
_HH_MARKER = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclasses.dataclass
class Conversations:
  conversations: list[list[dict]]  # in file order, files in sorted order
  skipped: int  # malformed records skipped (only with skip_bad)
  format: str  # the format read (detected or given)


def read_conversations(
    path: str, format: str = "auto", skip_bad: bool = False, file_pattern: str = "*",
    languages: str = ""
) -> Conversations:
  """Every conversation in the file, folder or glob `path`, validated, in order; with format
  "parallel", the sentence pairs of files `path`.SRC and `path`.TGT (`languages`, "SRC,TGT")."""
  if format == "parallel":
    from gptjax.data import parallel
    return Conversations(parallel.read_conversations(path, languages), 0, format)
  if format != "auto" and format not in FORMATS:
    raise UserError(f"{FORMAT_FLAG}={format!r} is unknown: use auto, parallel or one of "
                    f"{', '.join(FORMATS)}")
  conversations, skipped, first = [], 0, None  # first: (format, file) of the first detection
  for file in resolve_files(path, file_pattern):
    fmt = format
    for line, where, record in _records(file):
      if fmt == "auto" and not isinstance(record, ValueError):
        try:
          fmt = detect_format(record)
        except ValueError as e:
          raise UserError(f"{file}:{line}: {where}{e}; fix it, or set {FORMAT_FLAG}") from None
        if first and first[0] != fmt:
          raise UserError(f"{file} is {fmt} but {first[1]} is {first[0]}: give files of one format")
        first = first or (fmt, file)
      try:
        if isinstance(record, ValueError):
          raise record
        conversations.append(validate(_CONVERTERS[fmt](record)))
      except ValueError as e:
        if not skip_bad:
          raise UserError(f"{file}:{line}: {where}{e}; fix the record, or set {SKIP_FLAG}=True "
                          "to skip such records") from None
        skipped += 1
  if not conversations:
    skips = f" ({skipped} bad records skipped)" if skipped else ""
    raise UserError(f"no conversations in {path}{skips}")
  return Conversations(conversations, skipped, format if format != "auto" else first[0])


def read_records(path: str, file_pattern: str, skip_bad: bool, parse, what: str):
  """([(parse(record), record)], skipped) over every record of the JSON / JSON-lines files
  `path` names; a record `parse` rejects (ValueError) is one file:line error, or skipped and
  counted with skip_bad. `what` names the items in the error when none is left."""
  items, skipped = [], 0
  for file in resolve_files(path, file_pattern):
    for line, where, record in _records(file):
      try:
        if isinstance(record, ValueError):
          raise record
        items.append((parse(record), record))
      except ValueError as e:
        if not skip_bad:
          raise UserError(f"{file}:{line}: {where}{e}; fix the record, or set {SKIP_FLAG}=True "
                          "to skip such records") from None
        skipped += 1
  if not items:
    skips = f" ({skipped} bad records skipped)" if skipped else ""
    raise UserError(f"no {what} in {path}{skips}")
  return items, skipped


def detect_format(record) -> str:
  """The format a record is in, from its keys; ValueError if none fits."""
  if isinstance(record, dict):
    if "messages" in record:
      return "messages"
    if "chosen" in record:
      return "hh"
    if "instruction" in record and "output" in record:
      return "alpaca"
  keys = sorted(record) if isinstance(record, dict) else type(record).__name__
  raise ValueError(f"cannot tell the format from the first record ({keys}): expected 'messages' "
                   "(messages), 'chosen' (hh) or 'instruction' and 'output' (alpaca)")


def _open(file: str):
  return storage.open_text(file, encoding="utf-8-sig")  # a local file or an object


def _records(file: str):
  """(line, where, record) for each record of a JSON list or JSON lines file. A JSON line that
  does not parse comes as a ValueError record, so that it can be skipped like any bad record."""
  try:
    with _open(file) as fh:
      head = ""
      while not head and (chunk := fh.read(4096)):
        head = chunk.lstrip()
      fh.seek(0)
      if head.startswith("["):
        yield from _list_records(file, fh.read())
      elif head.startswith("{"):
        for line, text in enumerate(fh, 1):
          if text.strip():
            try:
              yield line, "", json.loads(text)
            except json.JSONDecodeError as e:
              yield line, "", ValueError(f"not valid JSON ({e.msg}, column {e.colno})")
      elif head:
        raise UserError(f"{file} is not JSON (starts {head[:1]!r}): give a JSON list or JSON lines")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else getattr(e, "strerror", 0) or e
    raise UserError(f"cannot read {file} ({why}): fix or exclude it") from None


def _list_records(file: str, text: str):
  """Each element of a JSON list, with the line it starts on. A syntax error ends the file:
  there is no telling where the next element starts."""
  decoder, space = json.JSONDecoder(), re.compile(r"\s*")
  pos, seen, line, index = space.match(text, text.index("[") + 1).end(), 0, 1, 0
  while True:
    line, seen = line + text.count("\n", seen, pos), pos
    if text[pos:pos + 1] == "]" and index == 0:
      break
    try:
      record, pos = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise UserError(f"{file}:{e.lineno}: not valid JSON ({e.msg}): fix the file") from None
    yield line, f"list element {index}: ", record
    pos, index = space.match(text, pos).end(), index + 1
    if text[pos:pos + 1] != ",":
      break
    pos = space.match(text, pos + 1).end()
  if text[pos:pos + 1] != "]" or text[pos + 1:].strip():
    line += text.count("\n", seen, pos)
    raise UserError(f"{file}:{line}: expected ',' or the list's final ']': fix the file")


def validate(conversation: list) -> list[dict]:
  """The conversation, if trainable; ValueError saying why not."""
  for i, m in enumerate(conversation):
    if not isinstance(m, dict) or m.get("role") not in ROLES:
      raise ValueError(f"message {i} has no role out of {', '.join(ROLES)}: {str(m)[:80]}")
    if not isinstance(m.get("content"), str):
      raise ValueError(f"message {i} ({m['role']}) content is not a string")
    if m["role"] == "system" and i:
      raise ValueError(f"message {i} is a system message: only the first may be")
  if not any(m["role"] == "assistant" for m in conversation):
    raise ValueError("no assistant message")
  return conversation


def _alpaca(record) -> list[dict]:
  record = record if isinstance(record, dict) else {}
  for key in ("instruction", "output", "input"):
    if not isinstance(record.get(key, "" if key == "input" else None), str):
      raise ValueError(f"alpaca record needs a string {key!r}")
  user = record["instruction"] + ("\n\n" + record["input"] if record.get("input") else "")
  return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def _hh(record) -> list[dict]:
  if not isinstance(record, dict) or not isinstance(record.get("chosen"), str):
    raise ValueError("hh record needs a string 'chosen'")
  return parse_hh_dialogue(record["chosen"])


def parse_hh_dialogue(text: str) -> list[dict]:
  """`\\n\\nHuman: ...\\n\\nAssistant: ...` as messages (not validated); ValueError if malformed."""
  parts = _HH_MARKER.split("\n\n" + text.lstrip())  # a first marker may lack its blank line
  if len(parts) == 1:
    raise ValueError("no '\\n\\nHuman:' or '\\n\\nAssistant:' turn in the dialogue")
  if parts[0].strip():
    raise ValueError(f"text before the first turn: {parts[0].strip()[:60]!r}")
  turns = zip(parts[1::2], parts[2::2])
  return [{"role": _HH_ROLES[who], "content": said.strip()} for who, said in turns]


def _messages(record) -> list[dict]:
  messages = record.get("messages") if isinstance(record, dict) else None
  if not isinstance(messages, list):
    raise ValueError("messages record needs a list 'messages'")
  return [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
          for m in messages]  # extra keys dropped; validate() reports a non-object


_CONVERTERS = {"alpaca": _alpaca, "hh": _hh, "messages": _messages}


def split_heldout(conversations: list, fraction: float, seed: int) -> tuple[list, list]:
  """(train, heldout): a seeded random `fraction` of whole conversations held out, at least
  one; both keep the original order."""
  n, held = len(conversations), max(1, round(len(conversations) * fraction))
  if held >= n:
    raise UserError(
        f"holding out {held} of {n} conversations leaves none to train on: "
        f"lower {FRACTION_FLAG}={fraction} or add conversations"
    )
  is_held = np.zeros(n, bool)
  is_held[np.random.default_rng(seed).permutation(n)[:held]] = True
  return ([c for c, h in zip(conversations, is_held) if not h],
          [c for c, h in zip(conversations, is_held) if h])
