"""The engine on a thread of its own, and each request's tokens as an async stream.

The HTTP server's event loop submits and cancels; one background thread runs the engine's
steps while there is work and sleeps when there is none. A request's TokenEvents cross to
the event loop through `call_soon_threadsafe`, so a slow client never holds up a step, and
`Stream.cancel()` (a finished choice, a client that went away) frees the slot before the
next step.
"""

from __future__ import annotations

import asyncio
import threading
import traceback

from gptjax.serve.engine import Engine, SamplingParams

_END = object()


class Stream:
  """Async iterator over one request's TokenEvents; ends after the finishing one."""

  def __init__(self, runner: "Runner", request_id: int, loop: asyncio.AbstractEventLoop):
    self.runner, self.request_id, self.loop = runner, request_id, loop
    self.queue: asyncio.Queue = asyncio.Queue()
    self.closed = False

  def deliver(self, item) -> None:  # from the engine's thread
    try:
      self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
    except RuntimeError:  # the event loop is gone: nobody is listening
      pass

  def cancel(self) -> None:
    if not self.closed:
      self.closed = True
      self.runner.cancel(self.request_id)
      self.queue.put_nowait(_END)

  def __aiter__(self):
    return self

  async def __anext__(self):
    if self.closed and self.queue.empty():
      raise StopAsyncIteration
    item = await self.queue.get()
    if item is _END:
      self.closed = True
      raise StopAsyncIteration
    if isinstance(item, BaseException):
      raise item
    if item.finished:
      self.closed = True
      self.queue.put_nowait(_END)
    if item.error:
      raise RuntimeError(item.error)
    return item


class Runner:

  def __init__(self, engine: Engine):
    self.engine = engine
    self._lock = threading.Lock()
    self._work = threading.Event()
    self._streams: dict[int, Stream] = {}
    self._thread = threading.Thread(target=self._loop, name="gptjax-engine", daemon=True)
    self._thread.start()

  # what the server's /metrics shows
  num_slots = property(lambda self: self.engine.num_slots)
  queue_depth = property(lambda self: self.engine.queue_depth)
  slots_in_use = property(lambda self: self.engine.slots_in_use)
  compilations = property(lambda self: self.engine.compilations)

  def stream(self, prompt_ids, params: SamplingParams) -> Stream:
    """Queues a request (QueueFull, PromptTooLong: refused, nothing queued)."""
    loop = asyncio.get_running_loop()
    with self._lock:
      request_id = self.engine.submit(prompt_ids, params)
      stream = self._streams[request_id] = Stream(self, request_id, loop)
    self._work.set()
    return stream

  def cancel(self, request_id: int) -> None:
    with self._lock:
      self.engine.cancel(request_id)
      self._streams.pop(request_id, None)

  def _loop(self) -> None:
    while True:
      self._work.wait()
      with self._lock:
        if not self.engine.has_work():
          self._work.clear()
          continue
        try:
          events = self.engine.step()
        except Exception as e:  # noqa: BLE001: fail the requests in flight, keep serving
          traceback.print_exc()
          failed = list(self._streams.values())
          for stream in failed:
            self.engine.cancel(stream.request_id)
          self._streams.clear()
          for stream in failed:
            stream.deliver(RuntimeError(f"generation failed: {e}"))
          continue
        targets = [(self._streams.get(e.request_id), e) for e in events]
        for event in events:
          if event.finished:
            self._streams.pop(event.request_id, None)
      for stream, event in targets:
        if stream is not None:
          stream.deliver(event)
