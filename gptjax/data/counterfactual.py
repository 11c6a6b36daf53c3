"""Counterfactual data augmentation (Lu et al. 2018; Zhao et al. 2018's WinoBias swaps): every
gendered word of a list replaced by its counterpart, both ways (he <-> she), so a corpus shows
each context with either gender.

The swap list is one pair a line, tab- or space-separated (WinoBias's generalized_swaps.txt).
Two-sided means a bijection: a pair is kept when neither word is already paired with another
word (file order), so swapping twice gives back the text. A later line that reuses a taken
word (WinoBias lists "him her" and then "his her") stays a one-way swap ("his" -> "her"; "her"
goes back to "him"), and `one_way` names those words. Matching is on whole words, any case;
the replacement takes the matched word's case (he -> she, He -> She, HE -> SHE).
"""

from __future__ import annotations

import dataclasses
import re

from gptjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Swaps:
  mapping: dict[str, str]  # lowercased word -> lowercased counterpart
  one_way: tuple[str, ...]  # words whose counterpart maps back to another word

  def __post_init__(self):
    words = sorted(self.mapping, key=len, reverse=True)  # longest first: "mr." before "mr"
    # Word boundaries by hand: "mr." and "ma'am" end or hold non-word characters, where \b
    # would not match after the dot.
    pattern = r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)"
    object.__setattr__(self, "_pattern", re.compile(pattern, re.IGNORECASE))

  def __call__(self, text: str) -> str:
    return self._pattern.sub(lambda m: _same_case(m.group(0), self.mapping[m.group(0).lower()]),
                             text)


def _same_case(matched: str, replacement: str) -> str:
  if matched.isupper() and len(matched) > 1:
    return replacement.upper()
  if matched[0].isupper():
    return replacement[0].upper() + replacement[1:]
  return replacement


def parse_swaps(lines, source: str = "swap list") -> Swaps:
  mapping, one_way = {}, []
  for number, line in enumerate(lines, 1):
    words = line.split()
    if not words:
      continue
    if len(words) != 2:
      raise UserError(f"{source}:{number}: expected two words (a pair), got {line.strip()!r}")
    a, b = (w.lower() for w in words)
    if a == b:
      raise UserError(f"{source}:{number}: {a!r} is paired with itself")
    if a not in mapping and b not in mapping:
      mapping[a], mapping[b] = b, a
    elif a not in mapping:  # b is taken: a still swaps to b, b keeps its first partner
      mapping[a] = b
      one_way.append(a)
    elif b not in mapping:
      mapping[b] = a
      one_way.append(b)
  if not mapping:
    raise UserError(f"{source}: no word pairs")
  return Swaps(mapping, tuple(one_way))


def read_swaps(path: str) -> Swaps:
  try:
    with open(path, encoding="utf-8") as f:
      return parse_swaps(f, path)
  except FileNotFoundError:
    raise UserError(f"swap list {path!r} does not exist (data.counterfactual_swaps)") from None
