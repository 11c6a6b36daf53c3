"""Pure text cleaning and splitting: normalise, drop empty/duplicate documents, cap, cut.

Everything here is a function of its inputs, so the same corpus and settings always give the
same documents, the same held-out split and the same stored chunks.
"""

import hashlib
import unicodedata
from typing import Iterable, Iterator


def normalize(text: str, form: str) -> str:
  """Unicode normalisation (NFC, NFKC, ...); "" leaves the text untouched."""
  return unicodedata.normalize(form, text) if form else text


def clean_documents(
    docs: Iterable[str], *, form: str, dedup: bool, max_chars: int
) -> Iterator[str]:
  """Normalised documents, without whitespace-only ones and (optionally) exact duplicates.

  `max_chars` > 0 stops after that many characters, cutting the last document.
  """
  seen = set()  # digests, not texts: memory stays small on big corpora
  total = 0
  for doc in docs:
    doc = normalize(doc, form)
    if not doc.strip():
      continue
    if dedup:
      digest = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=16).digest()
      if digest in seen:
        continue
      seen.add(digest)
    if max_chars:
      doc = doc[: max_chars - total]
    total += len(doc)
    yield doc
    if max_chars and total >= max_chars:
      return


def split_point(num_chars: int, eval_fraction: float) -> int:
  """Characters in the train split; nanoGPT's `int(n * 0.9)` for eval_fraction=0.1."""
  return int(num_chars * (1 - eval_fraction))


def split_pieces(
    docs: Iterable[str], num_train_chars: int, split: str
) -> Iterator[tuple[str, bool]]:
  """(text, starts_document) pieces of one split of the concatenated documents.

  The first `num_train_chars` characters are "train", the rest "validation"; a document that
  straddles the boundary is cut there, and its validation part starts that split.
  """
  pos = 0
  for doc in docs:
    start, end = pos, pos + len(doc)
    pos = end
    if split == "train":
      if start >= num_train_chars:
        return
      yield doc[: num_train_chars - start], True
    elif end > num_train_chars:
      yield doc[max(0, num_train_chars - start):], True


def chunk_text(text: str, max_chars: int) -> list[str]:
  """Consecutive chunks of at most `max_chars`, cut after a newline where there is one.

  Cutting after "\\n" keeps tokenization of the chunks identical to tokenizing the whole text,
  since newlines are token boundaries for every tokenizer here.
  """
  chunks = []
  start = 0
  while len(text) - start > max_chars:
    cut = text.rfind("\n", start, start + max_chars) + 1
    if cut <= start:  # no newline in reach: hard cut
      cut = start + max_chars
    chunks.append(text[start:cut])
    start = cut
  chunks.append(text[start:])
  return chunks
