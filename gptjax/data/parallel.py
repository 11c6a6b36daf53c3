"""Parallel text (one sentence a line, two files aligned by line, as Multi30k and WMT ship it)
as conversations: the source sentence is the user's turn, its translation the assistant's.

    data.path = ".../multi30k/train", data.languages = "en,de"
      -> .../multi30k/train.en(.gz) and .../multi30k/train.de(.gz)

So a translation model is a decoder-only LM trained like any chat model (task.name=sft):
the source, the chat template's turn tokens as the separator, the target, with the loss on
the target only, and it translates by answering (gptjax.evals.translation).
"""

from __future__ import annotations


from gptjax import storage
from gptjax.errors import UserError

LANGUAGES_FLAG = "--config.data.languages"


def languages(spec: str) -> tuple[str, str]:
  parts = [p.strip() for p in spec.split(",")]
  if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
    raise UserError(f"{LANGUAGES_FLAG}={spec!r}: give the source and target suffixes, e.g. en,de")
  return parts[0], parts[1]


def _lines(prefix: str, language: str) -> list[str]:
  for path in (f"{prefix}.{language}", f"{prefix}.{language}.gz"):
    if storage.exists(path):
      with storage.open_text(path) as f:
        return [line.rstrip("\n") for line in f]
  raise UserError(f"no {prefix}.{language} or {prefix}.{language}.gz: data.path is the files' "
                  f"common prefix and {LANGUAGES_FLAG} their suffixes")


def read_pairs(prefix: str, spec: str) -> list[tuple[str, str]]:
  """(source, target) sentence pairs; a pair with an empty side is an error naming its line."""
  source_language, target_language = languages(spec)
  sources, targets = _lines(prefix, source_language), _lines(prefix, target_language)
  if len(sources) != len(targets):
    raise UserError(f"{prefix}.{source_language} has {len(sources)} lines but "
                    f"{prefix}.{target_language} has {len(targets)}: they must align line by line")
  for line, (s, t) in enumerate(zip(sources, targets), 1):
    if not s.strip() or not t.strip():
      raise UserError(f"{prefix}: line {line} is empty on one side; remove it from both files")
  return list(zip(sources, targets))


def as_conversation(source: str, target: str | None = None) -> list[dict]:
  turns = [{"role": "user", "content": source}]
  return turns + ([{"role": "assistant", "content": target}] if target is not None else [])


def read_conversations(prefix: str, spec: str) -> list[list[dict]]:
  return [as_conversation(s, t) for s, t in read_pairs(prefix, spec)]
