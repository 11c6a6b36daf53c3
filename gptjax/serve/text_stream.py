"""Token ids to text as they arrive: incremental detokenization and stop sequences.

The streamed pieces concatenate to exactly the non-streamed text: both come from here.
A piece is held back while it could still change: a token that ends inside a multi-byte
character decodes to U+FFFD until the rest arrives, and the tail of the text that could be
the start of a stop sequence waits until it is not (or the completion ends).
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class TextStream:

  def __init__(self, tokenizer, stop: list[str] = ()):
    self.tokenizer = tokenizer
    self.stop = [s for s in stop if s]
    self.ids: list[int] = []
    self.text = ""  # decoded text so far, cut at a stop sequence once one appears
    self.emitted = 0  # characters of self.text already handed out
    self.stopped = False  # a stop sequence appeared: the completion ends here

  def _decoded(self) -> str:
    text = self.tokenizer.decode(self.ids)
    # An incomplete character at the end: wait for the tokens that complete it.
    return text[:-1] if text.endswith(REPLACEMENT) else text

  def add(self, token_id: int) -> str:
    """The text that `token_id` makes final (maybe ""); sets `stopped` at a stop sequence."""
    if self.stopped:
      return ""
    self.ids.append(int(token_id))
    self.text = self._decoded()
    hold = 0
    cuts = [i for i in (self.text.find(s, max(0, self.emitted - len(s))) for s in self.stop)
            if i >= 0]
    if cuts:
      self.text, self.stopped = self.text[:min(cuts)], True
    elif self.stop:  # the longest tail that is the start of some stop sequence
      hold = max((k for s in self.stop for k in range(1, len(s))
                  if self.text.endswith(s[:k])), default=0)
    return self._take(len(self.text) - hold)

  def finish(self) -> str:
    """The rest, once no more tokens come (an incomplete character is written as U+FFFD)."""
    if not self.stopped:
      full = self.tokenizer.decode(self.ids)
      self.text = full if full.startswith(self.text) else self.text
    return self._take(len(self.text))

  def _take(self, end: int) -> str:
    piece = self.text[self.emitted:end] if end > self.emitted else ""
    self.emitted = max(self.emitted, end)
    return piece
