"""Log-likelihood of whole texts under a loaded model, in batches: what the probes and the
multiple-choice evaluators compare.

A text is scored as a document start, as training saw one: after the token a document
begins with (the tokenizer's BOS where the model expects one, else the end-of-text separator
that precedes every document in training, else "\\n", which joins documents for tokenizers
without one), so its first token is scored too. `continuation` scores only the tokens of a
continuation after a context (multiple choice), with the same start.

Rows are padded to a power-of-two length and a fixed batch, so a whole evaluation compiles
once per length bucket; the sums come from gptjax.logprobs.sequence_logprobs, the log-prob
function every objective uses.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from gptjax import logprobs, sharding
from gptjax.errors import UserError


def document_start(tokenizer) -> list[int]:
  for token in (getattr(tokenizer, "bos_id", None), tokenizer.eos_id):
    if token is not None:
      return [int(token)]
  return list(tokenizer.encode("\n"))


@functools.partial(jax.jit, static_argnums=0)
def _sums(model, params, tokens_BT1, mask_BT):
  return logprobs.sequence_logprobs(model, params, tokens_BT1, mask_BT)


def score_rows(loaded, rows: list[tuple[list[int], int]], batch_size: int = 32) -> np.ndarray:
  """rows: (token ids, how many leading targets to skip); returns float64 [N, 2]: the sum of
  log p over the scored tokens and their count."""
  limit = loaded.model.cfg.max_len
  out = np.zeros((len(rows), 2))
  by_bucket: dict[int, list[int]] = {}
  for index, (ids, skip) in enumerate(rows):
    if len(ids) - 1 > limit:
      raise UserError(f"a text of {len(ids) - 1} tokens does not fit the model's context "
                      f"of {limit}; shorten it or use a model with a longer context")
    if len(ids) - 1 <= skip:
      raise UserError("a text has no tokens to score (empty text or continuation)")
    by_bucket.setdefault(min(limit, 1 << max(3, (len(ids) - 2).bit_length())), []).append(index)
  with sharding.rules_context(loaded.mesh):
    for length, indices in sorted(by_bucket.items()):
      for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        tokens = np.zeros((batch_size, length + 1), np.int32)
        mask = np.zeros((batch_size, length), np.float32)
        for row, index in enumerate(chunk):
          ids, skip = rows[index]
          tokens[row, :len(ids)] = ids
          mask[row, skip:len(ids) - 1] = 1.0
        sums = np.asarray(_sums(loaded.model, loaded.params, tokens, mask), np.float64)
        out[chunk, 0] = sums[:len(chunk)]
        out[chunk, 1] = mask[:len(chunk)].sum(1)
  return out


def score_texts(loaded, texts: list[str], batch_size: int = 32) -> np.ndarray:
  """[N, 2]: log-likelihood of each text as a document, and its token count."""
  start = document_start(loaded.tokenizer)
  return score_rows(loaded, [(start + list(loaded.tokenizer.encode(t)), 0) for t in texts],
                    batch_size)


def score_continuations(loaded, pairs: list[tuple[str, str]], batch_size: int = 32):
  """[N, 2]: log-likelihood of each continuation after its context, and its token count.
  Context and continuation are encoded apart, so the continuation's tokens are its own."""
  start, encode = document_start(loaded.tokenizer), loaded.tokenizer.encode
  rows = []
  for context, continuation in pairs:
    head = start + list(encode(context))
    rows.append((head + list(encode(continuation)), len(head) - 1))
  return score_rows(loaded, rows, batch_size)
