"""Token ids to text as they arrive: incremental detokenization and stop sequences.

The streamed pieces concatenate to exactly the non-streamed text: both come from here.
A piece is held back while it could still change: a token that ends inside a multi-byte
character decodes to U+FFFD until the rest arrives, and the tail of the text that could be
the start of a stop sequence waits until it is not (or the completion ends).

Stop sequences are matched as the text grows (Knuth-Morris-Pratt), so each new character
costs O(1) amortised whatever the stop's length: the text ends before the first stop
sequence to be completed. (Matching each stop against the text anew, as before, cost the
square of its length for every token, on the server's event loop.)
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class StopMatcher:
  """How much of a growing text's tail is a prefix of `stop`, one character at a time."""

  def __init__(self, stop: str):
    self.stop = stop
    # fallback[k]: the longest proper prefix of stop[:k + 1] that is also its suffix
    self.fallback = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
      while k and stop[i] != stop[k]:
        k = self.fallback[k - 1]
      if stop[i] == stop[k]:
        k += 1
      self.fallback[i] = k
    self.matched = 0  # the text's tail equals stop[:matched]

  def feed(self, char: str) -> bool:
    """True when `char` completes the stop sequence."""
    k = self.matched
    while k and char != self.stop[k]:
      k = self.fallback[k - 1]
    if char == self.stop[k]:
      k += 1
    if k == len(self.stop):
      self.matched = self.fallback[k - 1]
      return True
    self.matched = k
    return False


class TextStream:

  def __init__(self, tokenizer, stop: list[str] = ()):
    self.tokenizer = tokenizer
    self.matchers = [StopMatcher(s) for s in dict.fromkeys(stop) if s]
    self.ids: list[int] = []
    self.text = ""  # decoded text so far, cut at a stop sequence once one appears
    self.matched_to = 0  # characters of self.text the matchers have seen
    self.emitted = 0  # characters of self.text already handed out
    self.stopped = False  # a stop sequence appeared: the completion ends here

  def _decoded(self) -> str:
    # Incomplete characters at the end: wait for the tokens that complete them.
    return self.tokenizer.decode(self.ids).rstrip(REPLACEMENT)

  def add(self, token_id: int) -> str:
    """The text that `token_id` makes final (maybe ""); sets `stopped` at a stop sequence."""
    if self.stopped:
      return ""
    self.ids.append(int(token_id))
    self.text = self._decoded()
    for at in range(self.matched_to, len(self.text)):
      char = self.text[at]
      done = [m for m in self.matchers if m.feed(char)]
      if done:  # the earliest to complete; if two end here, the longer started first
        self.text = self.text[:at + 1 - max(len(m.stop) for m in done)]
        self.stopped = True
        return self._take(len(self.text))
    self.matched_to = len(self.text)
    hold = max((m.matched for m in self.matchers), default=0)
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
