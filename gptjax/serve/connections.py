"""Connections a hostile or broken client cannot hold open: uvicorn's HTTP/1.1 protocol with
a deadline for request headers and caps on open connections, in total and per address.

uvicorn closes an idle keep-alive connection, but a connection that sends half a request
line and waits is kept forever, and it accepts until the process runs out of file
descriptors, after which every client gets an empty reply. Here:

- a connection must complete its request headers within `header_timeout` seconds of opening
  (or of its previous response); otherwise it is closed;
- past `max_connections` open connections, or `max_connections_per_client` from one
  address, a new connection gets a 503 and is closed at once (its file descriptor is freed);
- every refusal is logged to stderr, at most one line per reason every few seconds with the
  count since the last line.

The request body's deadline is the app's (gptjax.serve.server reads the body), because the
ASGI app is what waits for it.
"""

from __future__ import annotations

import collections
import resource
import sys
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
_RESERVED_DESCRIPTORS = 64  # for the model's files, logs and the feedback log


def default_max_connections() -> int:
  """1,000, or fewer where the process may open fewer files."""
  soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
  if soft == resource.RLIM_INFINITY:
    return 1000
  return max(8, min(1000, soft - _RESERVED_DESCRIPTORS))


class RefusalLog:
  """One stderr line per reason at most every `every` seconds, counting what it held back."""

  def __init__(self, every: float = 5.0, stream=None):
    self.every, self.stream = every, stream or sys.stderr
    self.last: dict[str, float] = {}
    self.held = collections.Counter()

  def __call__(self, reason: str, detail: str) -> None:
    now = time.monotonic()
    if now - self.last.get(reason, -self.every) < self.every:
      self.held[reason] += 1
      return
    more = self.held.pop(reason, 0)
    self.last[reason] = now
    print(f"gptjax-serve: {detail}" + (f" (and {more} more since the last such line)"
                                       if more else ""), file=self.stream, flush=True)


class Limits:
  """The settings, the open connections by address, the refusal log and (once the app
  exists) its metrics, which one server shares."""

  def __init__(self, header_timeout: float = 10.0, max_connections: int | None = None,
               max_connections_per_client: int = 256, log: RefusalLog | None = None):
    self.header_timeout = header_timeout
    self.max_connections = max_connections or default_max_connections()
    self.max_connections_per_client = max_connections_per_client
    self.log = log or RefusalLog()
    self.by_client: collections.Counter = collections.Counter()
    self.metrics = None  # gptjax.serve.metrics.ServerMetrics

  def refuse(self, reason: str, detail: str) -> None:
    self.log(reason, detail)
    if self.metrics is not None:
      self.metrics.refusals.labels(reason).inc()

  def opened(self, address: str, change: int) -> None:
    self.by_client[address] += change
    if self.by_client[address] <= 0:
      del self.by_client[address]
    if self.metrics is not None:
      self.metrics.open_connections.inc(change)

  def protocol(self):
    """The protocol class for uvicorn.run(http=...)."""
    limits = self

    class Guarded(GuardedH11):
      pass
    Guarded.limits = limits
    return Guarded


class GuardedH11(H11Protocol):
  limits: Limits

  def connection_made(self, transport) -> None:
    limits = self.limits
    peer = transport.get_extra_info("peername")
    self.address = peer[0] if isinstance(peer, tuple) else str(peer)
    self.refused = self._refusal(len(self.connections), limits.by_client[self.address])
    if self.refused:
      limits.refuse(*self.refused)
      body = (b'{"error": {"message": "the server has too many open connections: retry '
              b'later", "type": "server_busy", "param": null, "code": null}}')
      transport.write(_REFUSAL % (len(body), body))
      transport.close()
      return
    limits.opened(self.address, 1)
    super().connection_made(transport)
    self.header_timer = None
    self._arm_header_timer()

  def _refusal(self, open_total: int, open_here: int) -> tuple[str, str] | None:
    limits = self.limits
    if open_total >= limits.max_connections:
      return "total", (f"refused a connection from {self.address}: {open_total} connections "
                       f"are open (--max_connections={limits.max_connections})")
    if open_here >= limits.max_connections_per_client:
      return "client", (f"refused a connection from {self.address}: {open_here} connections "
                        f"are open from there (--max_connections_per_client="
                        f"{limits.max_connections_per_client})")
    return None

  def connection_lost(self, exc) -> None:
    if self.refused:
      return
    self._cancel_header_timer()
    self.limits.opened(self.address, -1)
    super().connection_lost(exc)

  def data_received(self, data: bytes) -> None:
    cycle = self.cycle
    super().data_received(data)
    if self.cycle is not cycle:  # a request's headers are complete: the app has it now
      self._cancel_header_timer()

  def on_response_complete(self) -> None:
    super().on_response_complete()
    if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
      self._arm_header_timer()  # a kept-alive connection has as long for its next request

  def _arm_header_timer(self) -> None:
    self._cancel_header_timer()
    self.header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

  def _cancel_header_timer(self) -> None:
    if getattr(self, "header_timer", None) is not None:
      self.header_timer.cancel()
      self.header_timer = None

  def _headers_late(self) -> None:
    self.header_timer = None
    waiting = self.cycle is None or self.cycle.response_complete
    if waiting and not self.transport.is_closing():
      self.limits.refuse("headers", f"closed a connection from {self.address}: no complete "
                      f"request headers within {self.limits.header_timeout:g} s "
                      "(--header_timeout)")
      self.transport.close()
