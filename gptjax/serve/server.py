"""gptjax-serve: an OpenAI-compatible HTTP server over the continuous-batching engine.

    gptjax-serve --workdir=W [--host=127.0.0.1 --port=8000 --api_key=KEY --slots=8
                 --max_queue=64 --feedback_dir=DIR --step=N --header_timeout=10
                 --body_timeout=30 --max_connections=1000 --max_connections_per_client=256]

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,
GET /metrics (Prometheus text), and with --feedback_dir POST /v1/feedback
({"id": completion id, "rating": number, "preferred": choice index, "comment": text}).
Chat requests are rendered with the model's chat template and end at its end-of-turn token.

Safe by default: binds 127.0.0.1; with --api_key (or GPTJAX_API_KEY) every /v1 request needs
"Authorization: Bearer KEY" (401 otherwise); bodies over --max_body_bytes are a 413; a
prompt that does not fit the context is a 400 that says so (never truncated); a full queue
is a 429; a client that disconnects frees its decode slot at once. Slow or half-open
connections are timed out and capped (gptjax.serve.connections); a request that fails in
the engine gets an error, never a cut-short success. docs/SECURITY.md lists every limit.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import os
import sys
import time

from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gptjax.errors import UserError
from gptjax.serve import openai_protocol as api
from gptjax.serve.feedback import LogFull
from gptjax.serve.metrics import ServerMetrics
from gptjax.serve.text_stream import TextStream


class ServerError(Exception):
  def __init__(self, status: int, message: str, kind: str, param: str | None = None):
    super().__init__(message)
    self.status, self.kind, self.param = status, kind, param


def _error_response(e: ServerError) -> JSONResponse:
  return JSONResponse(api.error(str(e), e.kind, e.param), status_code=e.status)


class Completion:
  """One choice of a request as it is generated: text pieces, log-probs, finish reason."""

  def __init__(self, index: int, tokenizer, stop: list[str], stop_ids: set[int]):
    self.index, self.tokenizer, self.stop_ids = index, tokenizer, stop_ids
    self.text = TextStream(tokenizer, stop)
    self.tokens = 0
    self.logprobs: list = []
    self.finish_reason = None
    self.error: str | None = None  # generation failed: the client gets an error, not text

  def piece(self, token_id: int, logprob: float | None, top: list, want_logprobs: bool,
            finished: str | None) -> tuple[str, list]:
    """(new text, new log-prob entries) for one generated token."""
    self.tokens += 1
    entries = []
    if token_id not in self.stop_ids:
      text = self.text.add(token_id)
      if want_logprobs:
        entries = [(self.tokenizer.decode([token_id]), float(logprob),
                    [(self.tokenizer.decode([t]), float(lp)) for t, lp in top])]
    else:
      text = ""
    if self.text.stopped:
      self.finish_reason = "stop"
    elif finished:
      self.finish_reason = finished
    if self.finish_reason:
      text += self.text.finish()
    self.logprobs += entries
    return text, entries


class App:
  """The HTTP layer: checks requests, renders prompts, runs choices on the engine."""

  def __init__(self, loaded, engine, *, model_name: str, api_key: str | None = None,
               max_body_bytes: int = 1 << 20, body_timeout: float = 30.0, feedback_log=None):
    from gptjax.data import chat_template
    self.loaded, self.engine, self.model_name = loaded, engine, model_name
    self.tokenizer = loaded.tokenizer
    self.api_key, self.max_body_bytes, self.feedback_log = api_key, max_body_bytes, feedback_log
    self.body_timeout = body_timeout
    self.metrics = ServerMetrics()
    self.metrics.slots_total.set(engine.num_slots)
    self.no_chat = None  # why chat requests are refused (a pretrained model: completions only)
    try:
      self.end_of_turn = [chat_template.end_of_turn_id(self.tokenizer)]
    except UserError as e:
      self.end_of_turn, self.no_chat = None, str(e)
    self.eos = [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
    routes = [Route("/v1/chat/completions", self.chat, methods=["POST"]),
              Route("/v1/completions", self.completions, methods=["POST"]),
              Route("/v1/models", self.models, methods=["GET"]),
              Route("/v1/feedback", self.feedback, methods=["POST"]),
              Route("/health", self.health, methods=["GET"]),
              Route("/metrics", self.prometheus, methods=["GET"])]
    self.app = Starlette(routes=routes)

  # ---- plumbing
  def _authorize(self, request: HTTPRequest) -> None:
    if not self.api_key:
      return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
      raise ServerError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                        "authentication_error")

  async def _body(self, request: HTTPRequest):
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
      raise ServerError(413, f"the body is over {self.max_body_bytes} bytes", "invalid_request_error")

    async def read() -> bytes:
      body = bytearray()
      async for chunk in request.stream():
        body += chunk
        if len(body) > self.max_body_bytes:
          raise ServerError(413, f"the body is over {self.max_body_bytes} bytes",
                            "invalid_request_error")
      return bytes(body)
    try:  # a body shorter than its Content-Length would hold the connection for good
      body = await asyncio.wait_for(read(), self.body_timeout)
    except asyncio.TimeoutError:
      client = request.client.host if request.client else "?"
      self.metrics.refusals.labels("body").inc()
      print(f"gptjax-serve: gave up on a request body from {client} after "
            f"{self.body_timeout:g} s (--body_timeout)", file=sys.stderr, flush=True)
      raise ServerError(408, f"the request body did not arrive within {self.body_timeout:g} s",
                        "invalid_request_error") from None
    return api.load_json(body)

  def _refresh_gauges(self) -> None:
    m, e = self.metrics, self.engine
    m.queue_depth.set(e.queue_depth)
    m.slots_in_use.set(e.slots_in_use)
    m.compilations.set(e.compilations)

  async def _handle(self, endpoint: str, request: HTTPRequest, handler):
    try:
      if endpoint.startswith("/v1"):
        self._authorize(request)
      response = handler(request)
      if inspect.isawaitable(response):
        response = await response
    except ServerError as e:
      response = _error_response(e)
    except api.BadRequest as e:
      response = _error_response(ServerError(400, str(e), "invalid_request_error", e.param))
    except UserError as e:  # the text cannot be tokenized, a setting the engine refuses
      response = _error_response(ServerError(400, str(e), "invalid_request_error"))
    self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
    return response

  # ---- endpoints
  async def health(self, request):
    return await self._handle("/health", request,
                              lambda r: _json({"status": "ok", "model": self.model_name}))

  async def prometheus(self, request):
    self._refresh_gauges()
    return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

  async def models(self, request):
    card = {"id": self.model_name, "object": "model", "created": int(time.time()),
            "owned_by": "gptjax", "max_model_len": self.loaded.model.cfg.max_len}
    return await self._handle("/v1/models", request,
                              lambda r: _json({"object": "list", "data": [card]}))

  async def chat(self, request):
    return await self._handle("/v1/chat/completions", request,
                              lambda r: self._complete(r, chat=True))

  async def completions(self, request):
    return await self._handle("/v1/completions", request,
                              lambda r: self._complete(r, chat=False))

  async def feedback(self, request):
    async def handler(r):
      if self.feedback_log is None:
        raise ServerError(404, "feedback is off: start gptjax-serve with --feedback_dir",
                          "invalid_request_error")
      body = await self._body(r)
      if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise api.BadRequest("feedback needs the completion's id", "id")
      try:
        self.feedback_log.log_feedback(body["id"], body.get("rating"), body.get("preferred"),
                                       body.get("comment") or "")
      except KeyError as e:
        raise ServerError(404, str(e.args[0]), "invalid_request_error", "id") from None
      except LogFull as e:
        raise ServerError(507, str(e), "server_error") from None
      except ValueError as e:
        raise api.BadRequest(str(e), getattr(e, "param", None)) from None
      return _json({"status": "recorded", "id": body["id"]})
    return await self._handle("/v1/feedback", request, handler)

  # ---- completions
  def _prompt_ids(self, req: api.Request) -> list[int]:
    from gptjax.data import chat_template
    if req.chat:
      if self.end_of_turn is None:
        raise ServerError(400, f"this model cannot chat ({self.no_chat}): use "
                          "/v1/completions", "invalid_request_error", "messages")
      return [int(i) for i in chat_template.render_prompt(req.messages, self.tokenizer)]
    ids = [int(i) for i in self.tokenizer.encode(req.prompt)]
    bos = getattr(self.tokenizer, "bos_id", None)
    if bos is not None:
      ids = [bos] + ids
    if not ids:  # an empty prompt starts a fresh document, as gptjax-sample does
      ids = self.eos or [int(i) for i in self.tokenizer.encode("\n")]
    return ids

  def _sampling(self, req: api.Request, index: int, prompt_len: int):
    from gptjax.serve.engine import SamplingParams
    context = self.loaded.model.cfg.max_len
    room = context - prompt_len
    if room < 1:
      raise ServerError(400, f"the prompt is {prompt_len} tokens but the model's context is "
                        f"{context}: shorten it to at most {context - 1} tokens",
                        "invalid_request_error", "messages" if req.chat else "prompt")
    max_tokens = room if req.max_tokens is None else req.max_tokens
    if max_tokens > room:
      raise ServerError(400, f"max_tokens={max_tokens} and the {prompt_len}-token prompt do not "
                        f"fit the model's context of {context}: ask for at most {room}",
                        "invalid_request_error", "max_tokens")
    seed = req.seed if req.seed is not None else int.from_bytes(os.urandom(4), "little")
    stops = (self.end_of_turn if req.chat else []) + self.eos
    top_k = req.top_k if 0 < req.top_k < self.tokenizer.vocab_size else 0  # else: all tokens
    return SamplingParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                          top_k=top_k,
                          seed=(seed + index) % 2**32,  # any client integer: a uint32 key
                          stop_token_ids=tuple(stops),
                          logprobs=req.top_logprobs if req.logprobs else 0)

  async def _complete(self, request: HTTPRequest, chat: bool):
    req = api.parse(await self._body(request), chat, self.model_name)
    # Off the event loop: a long prompt takes a while to tokenize (the tokenizer lets go of
    # the GIL), and /health and the other streams must not wait for it.
    prompt_ids = await asyncio.to_thread(self._prompt_ids, req)
    sampling = [self._sampling(req, i, len(prompt_ids)) for i in range(req.n)]
    arrived = time.perf_counter()
    streams = []
    try:
      for params in sampling:  # all choices are admitted, or none: a 429 leaves nothing behind
        streams.append(self.engine.stream(prompt_ids, params))
    except Exception as e:
      for s in streams:
        s.cancel()
      raise self._engine_error(e) from None
    self.metrics.prompt_tokens.inc(len(prompt_ids) * req.n)
    cid = api.completion_id(chat)
    stop_ids = set(sampling[0].stop_token_ids)
    choices = [Completion(i, self.tokenizer, req.stop, stop_ids) for i in range(req.n)]
    events = self._merged(streams, choices, req, arrived)
    if req.stream:
      return StreamingResponse(self._sse(events, streams, choices, req, cid, len(prompt_ids)),
                               media_type="text/event-stream")
    try:
      async for _ in self._until_disconnect(events, request):
        pass
    finally:
      for s in streams:
        s.cancel()
    failed = next((c.error for c in choices if c.error), None)
    if failed:
      raise ServerError(500, failed, "server_error")
    out = [api.choice(chat, c.index, c.text.text, c.finish_reason,
                      api.logprob_entries(chat, c.logprobs) if req.logprobs else None)
           for c in choices]
    total = sum(c.tokens for c in choices)
    self._log(cid, req, prompt_ids, [c.text.text for c in choices])
    return _json(api.envelope(chat, cid, req.model, out, chunk=False,
                              usage_=api.usage(len(prompt_ids), total)))

  def _engine_error(self, e: Exception) -> ServerError:
    from gptjax.serve import engine as engine_lib
    if isinstance(e, engine_lib.QueueFull):
      return ServerError(429, "the server's queue is full: retry later", "rate_limit_error")
    if isinstance(e, engine_lib.PromptTooLong):
      return ServerError(400, str(e), "invalid_request_error")
    raise e

  async def _merged(self, streams, choices, req, arrived):
    """(choice, text piece, log-prob entries) from every choice's stream as tokens come."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(stream, completion):
      last = None
      try:
        async for event in stream:
          now = time.perf_counter()
          if last is None:
            self.metrics.time_to_first_token.observe(now - arrived)
          else:
            self.metrics.inter_token_latency.observe(now - last)
          last = now
          self.metrics.generated_tokens.inc()
          text, entries = completion.piece(event.token_id, event.logprob,
                                           event.top_logprobs or [], req.logprobs,
                                           event.finished)
          await queue.put((completion, text, entries))
          if completion.finish_reason:
            stream.cancel()  # a stop sequence ends it here, and frees its slot now
            break
      except Exception as e:  # noqa: BLE001: the engine failed this request: say so
        completion.error = str(e) or type(e).__name__
        await queue.put((completion, "", []))
      finally:
        await queue.put(None)

    tasks = [asyncio.create_task(pump(s, c)) for s, c in zip(streams, choices)]
    try:
      done = 0
      while done < len(tasks):
        item = await queue.get()
        if item is None:
          done += 1
          continue
        yield item
    finally:
      for t in tasks:
        t.cancel()

  async def _until_disconnect(self, events, request: HTTPRequest):
    """The events, stopping early if the client goes away (frees the slots at once)."""
    watcher = asyncio.create_task(_disconnected(request))
    iterator = events.__aiter__()
    try:
      while True:
        nxt = asyncio.ensure_future(iterator.__anext__())
        finished, _ = await asyncio.wait({nxt, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if nxt not in finished:
          nxt.cancel()  # and let it unwind, so that closing the generator finds it idle
          await asyncio.gather(nxt, return_exceptions=True)
          return
        try:
          yield nxt.result()
        except StopAsyncIteration:
          return
    finally:
      watcher.cancel()
      await iterator.aclose()

  async def _sse(self, events, streams, choices, req, cid, prompt_len):
    created = int(time.time())
    started = set()
    try:
      async for completion, text, entries in events:
        if completion.error:  # the client's SDK raises on an error event (never a cut reply)
          yield _event(api.error(completion.error, "server_error"))
          yield "data: [DONE]\n\n"
          return
        first = completion.index not in started
        started.add(completion.index)
        if not (text or entries or completion.finish_reason or first):
          continue
        logprobs = api.logprob_entries(req.chat, entries) if req.logprobs else None
        piece = api.choice(req.chat, completion.index, text, completion.finish_reason,
                           logprobs, delta=True, first=first)
        yield _event(api.envelope(req.chat, cid, req.model, [piece], chunk=True,
                                  created=created))
      if req.include_usage:
        yield _event(api.envelope(req.chat, cid, req.model, [], chunk=True, created=created,
                                  usage_=api.usage(prompt_len, sum(c.tokens for c in choices))))
      yield "data: [DONE]\n\n"
      self._log(cid, req, None, [c.text.text for c in choices])
    finally:  # the client went away mid-stream, or we are done: free the slots now
      for s in streams:
        s.cancel()

  def _log(self, cid, req, prompt_ids, texts) -> None:
    if self.feedback_log is None:
      return
    messages = req.messages if req.chat else [{"role": "user", "content": req.prompt}]
    self.feedback_log.log_completion(cid, req.model, messages, texts, {
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
        "max_tokens": req.max_tokens, "seed": req.seed, "chat": req.chat})


async def _disconnected(request: HTTPRequest) -> None:
  while not await request.is_disconnected():
    await asyncio.sleep(0.05)


def _json(content, status: int = 200) -> JSONResponse:
  return JSONResponse(content, status_code=status)


def _event(obj) -> str:
  return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def serve(workdir: str, *, step: int | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, slots: int = 8, max_queue: int = 64,
          max_body_bytes: int = 1 << 20, log_dir: str = "", log_max_bytes: int = 1 << 30,
          model_name: str = "", limits=None, body_timeout: float = 30.0) -> None:
  """`limits`: a connections.Limits (header deadline, connection caps); default settings
  if None."""
  import logging

  import uvicorn

  from gptjax.load import load_workdir, one_device_mesh
  from gptjax.serve.connections import Limits
  from gptjax.serve.engine import Engine
  from gptjax.serve.feedback import FeedbackLog
  from gptjax.serve.runner import Runner
  loaded = load_workdir(workdir, step, mesh=one_device_mesh())
  feedback_log = FeedbackLog(log_dir, max_bytes=log_max_bytes) if log_dir else None
  engine = Engine(loaded.model, loaded.params, num_slots=slots, max_queue=max_queue,
                  valid_vocab=loaded.tokenizer.vocab_size)
  compiled = engine.warmup()
  name = model_name or os.path.basename(os.path.abspath(workdir))
  app = App(loaded, Runner(engine), model_name=name, api_key=api_key,
            max_body_bytes=max_body_bytes, body_timeout=body_timeout, feedback_log=feedback_log)
  limits = limits or Limits()
  limits.metrics = app.metrics
  print(f"serving {name} (step {loaded.step}) on http://{host}:{port}/v1 with {slots} slots; "
        f"{compiled} compilations at warm-up{'; API key required' if api_key else ''}",
        flush=True)
  # Loading silenced asyncio's logger (Orbax's threads); a server must show its socket errors.
  logging.getLogger("asyncio").setLevel(logging.WARNING)
  uvicorn.run(app.app, host=host, port=port, log_level="warning", http=limits.protocol(),
              timeout_keep_alive=5)


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("workdir", None, "run folder to serve (its newest checkpoint)",
                      required=True)
  flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
  flags.DEFINE_string("host", "127.0.0.1", "address to bind (0.0.0.0 exposes it to the network)")
  flags.DEFINE_integer("port", 8000, "port")
  flags.DEFINE_string("api_key", None, "require 'Authorization: Bearer KEY' (default: "
                      "$GPTJAX_API_KEY; unset = no key)")
  flags.DEFINE_integer("slots", 8, "decode slots: requests generated together")
  flags.DEFINE_integer("max_queue", 64, "requests waiting for a slot before a 429")
  flags.DEFINE_integer("max_body_bytes", 1 << 20, "largest request body")
  flags.DEFINE_float("header_timeout", 10.0, "seconds a connection has to send its request "
                     "headers (from opening, or from its previous response)")
  flags.DEFINE_float("body_timeout", 30.0, "seconds a request has to send its whole body")
  flags.DEFINE_integer("max_connections", None, "open connections at most (default: 1000, "
                       "or fewer where the open-file limit is lower); past it a 503")
  flags.DEFINE_integer("max_connections_per_client", 256, "open connections from one "
                       "address at most; past it a 503")
  flags.DEFINE_string("feedback_dir", "", "log conversations and accept /v1/feedback here")
  flags.DEFINE_integer("feedback_max_bytes", 1 << 30, "the feedback folder's logs stop "
                       "growing here: feedback is then refused (507), replies not logged")
  flags.DEFINE_string("model_name", "", "the model's id in the API (default: the workdir's name)")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      from gptjax.serve.connections import Limits
      if FLAGS.slots < 1 or FLAGS.max_queue < 0:
        raise UserError("--slots must be at least 1 and --max_queue at least 0")
      for name in ("header_timeout", "body_timeout"):
        if not 0 < FLAGS[name].value < float("inf"):
          raise UserError(f"--{name} must be a positive number of seconds")
      for name in ("max_connections", "max_connections_per_client", "feedback_max_bytes"):
        if FLAGS[name].value is not None and FLAGS[name].value < 1:
          raise UserError(f"--{name} must be at least 1")
      limits = Limits(header_timeout=FLAGS.header_timeout,
                      max_connections=FLAGS.max_connections,
                      max_connections_per_client=FLAGS.max_connections_per_client)
      serve(FLAGS.workdir, step=FLAGS.step, host=FLAGS.host, port=FLAGS.port,
            api_key=FLAGS.api_key or os.environ.get("GPTJAX_API_KEY") or None,
            slots=FLAGS.slots, max_queue=FLAGS.max_queue, max_body_bytes=FLAGS.max_body_bytes,
            log_dir=FLAGS.feedback_dir, log_max_bytes=FLAGS.feedback_max_bytes,
            model_name=FLAGS.model_name, limits=limits, body_timeout=FLAGS.body_timeout)
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
