"""gptjax-serve against hostile clients, through real sockets: no request stalls or breaks the
server for the others, each is refused alone with a 4xx naming the field, a failure inside
the engine reaches its clients as an error (never a cut-short success), and /health answers
within a second throughout.

Two servers: `gptjax-serve` itself (a process, the chat model, small limits so that the
tests are quick) and, for failures inside the engine, the same app and protocol in this
process over a hand-made model whose engine can be made to fail on demand.
"""

import concurrent.futures
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import openai
import pytest

from conftest import unigram_loaded
from gptjax.serve.text_stream import StopMatcher, TextStream
from test_serve import CHAT, KEY, _chat, _http, _metric, _start_server, _stop

HEALTH_LIMIT = 1.0  # seconds /health may take while the attack runs


# ---------------------------------------------------------------------------------------------
# Stop sequences: matched as the text grows


def naive_stream(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
  """The text up to the first stop sequence to be completed, found by brute force."""
  text = ""
  for piece in pieces:
    for char in piece:
      text += char
      ends = [s for s in stops if s and text.endswith(s)]
      if ends:
        return text[:len(text) - max(map(len, ends))], True
  return text, False


class Pieces:
  """A tokenizer whose token i is the i-th string of a list (decode joins them)."""

  def __init__(self, pieces):
    self.pieces = pieces

  def decode(self, ids):
    return "".join(self.pieces[i] for i in ids)


def test_stop_matching_equals_brute_force_and_streams_what_it_returns():
  rng = random.Random(0)
  for trial in range(400):
    alphabet = "ab" if trial % 2 else "abc"
    pieces = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))
              for _ in range(rng.randint(1, 30))]
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
             for _ in range(rng.randint(0, 4))]
    stream = TextStream(Pieces(pieces), stops)
    streamed = ""
    for i in range(len(pieces)):
      streamed += stream.add(i)
      if stream.stopped:
        break
    streamed += stream.finish()
    assert (streamed, stream.stopped) == naive_stream(pieces, stops), (pieces, stops)
    assert stream.text == streamed


def test_stop_matching_costs_the_same_per_token_whatever_the_stop_length():
  """Before: every token cost the square of the stop's length (a 1,000,000-character stop
  froze the server for 30 s); now each new character costs O(1)."""
  tokens = ["a"] * 300  # the worst case for a stop of a...ab: every tail is a prefix
  timings = {}
  for length in (10, 20_000):
    stop = "a" * (length - 1) + "b"
    start = time.perf_counter()
    stream = TextStream(Pieces(tokens), [stop])
    streamed = "".join(stream.add(i) for i in range(len(tokens)))
    timings[length] = time.perf_counter() - start
    assert not stream.stopped and streamed + stream.finish() == "a" * 300
  assert timings[20_000] < 0.5 + 5 * timings[10], timings


def test_a_stop_matcher_finds_overlapping_occurrences():
  matcher = StopMatcher("aab")
  assert [matcher.feed(c) for c in "aaab"] == [False, False, False, True]
  again = StopMatcher("abab")
  assert [again.feed(c) for c in "ababab"] == [False, False, False, True, False, True]


# ---------------------------------------------------------------------------------------------
# gptjax-serve, the process, with small limits


PER_CLIENT, TOTAL = 24, 60
LIMITS = ["--header_timeout=1", "--body_timeout=1", f"--max_connections={TOTAL}",
          f"--max_connections_per_client={PER_CLIENT}", "--max_body_bytes=1200000"]


@pytest.fixture(scope="module")
def served(sft_run, tmp_path_factory):
  fb = tmp_path_factory.mktemp("feedback")
  base, proc = _start_server(sft_run, "--slots=4", "--max_queue=16", f"--api_key={KEY}",
                             f"--feedback_dir={fb}", "--feedback_max_bytes=100000", *LIMITS)
  client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
  yield base, proc, client, fb
  _stop(proc)


def port_of(base: str) -> int:
  return int(base.rsplit(":", 1)[1])


class HealthWatch:
  """Polls /health from its own thread; `slowest` is the longest answer it waited for."""

  def __init__(self, base):
    self.base, self.times, self.failures = base, [], []
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._done.is_set():
      start = time.perf_counter()
      try:
        status = _http(f"{self.base}/health", key=None)[0]
        if status != 200:
          self.failures.append(status)
      except OSError as e:
        self.failures.append(repr(e))
      self.times.append(time.perf_counter() - start)
      time.sleep(0.05)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._done.set()
    self._thread.join(timeout=30)

  def check(self):
    assert self.times and not self.failures, self.failures[:5]
    assert max(self.times) < HEALTH_LIMIT, f"/health took {max(self.times):.2f} s"


def bystander(client):
  """A normal request running beside the attack: it must finish normally."""
  return concurrent.futures.ThreadPoolExecutor(1).submit(
      lambda: _chat(client, max_tokens=40, temperature=1.0, seed=3))


def post(base, path, body, key=KEY):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  return _http(f"{base}{path}", body=data, key=key)


def error_of(text: str) -> dict:
  return json.loads(text)["error"]


def test_long_stop_strings_are_refused_and_allowed_ones_do_not_hold_up_the_others(served):
  base, _, client, _ = served
  status, text = post(base, "/v1/chat/completions",
                      {"messages": CHAT, "stop": "x" * 1001, "max_tokens": 2})
  assert status == 400 and error_of(text)["param"] == "stop"
  status, _ = post(base, "/v1/chat/completions",
                   {"messages": CHAT, "stop": "x" * 1_100_000, "max_tokens": 2})
  assert status in (400, 413)
  # The largest allowed: 4 stops of 1,000 characters for every token of n=4 long replies.
  stops = ["e" * 999 + "q", " " * 999 + "q", "t" * 1000, "\u00e9" * 1000]
  with HealthWatch(base) as watch:
    other = bystander(client)
    response = client.chat.completions.create(model="m", messages=CHAT, n=4, max_tokens=200,
                                              temperature=1.0, seed=5, stop=stops)
    assert other.result(timeout=120)[1] in ("length", "stop")
  watch.check()
  assert all(c.finish_reason in ("length", "stop") for c in response.choices)


def test_a_top_k_past_the_vocabulary_is_off_and_past_int32_is_a_400(served):
  base, _, client, _ = served
  status, text = post(base, "/v1/chat/completions",
                      {"messages": CHAT, "top_k": 2**31, "max_tokens": 2})
  assert status == 400 and error_of(text)["param"] == "top_k"
  other = bystander(client)
  same = [_chat(client, max_tokens=30, temperature=1.0, seed=8, extra_body={"top_k": k})
          for k in (0, 2**31 - 1, 10**6)]
  assert same[0] == same[1] == same[2]
  assert other.result(timeout=120)[1] in ("length", "stop")


UNCHECKED = [  # (body, the field the 400 names) that were 500s
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages[0].content[0].text"),
    ({"messages": CHAT, "stream_options": "yes"}, "stream_options"),
    ({"messages": CHAT, "stream": "false"}, "stream"),
    ({"messages": CHAT, "model": {"a": 1}}, "model"),
    ({"messages": CHAT, "logprobs": "yes"}, "logprobs"),
    ({"messages": CHAT, "stream": True, "stream_options": {"include_usage": 1}},
     "include_usage"),
    ({"messages": CHAT, "seed": 1e300}, "seed"),
    ({"messages": CHAT, "seed": 2**64}, "seed"),
]


def test_unchecked_fields_are_400s_naming_the_field(served):
  base, proc, _, _ = served
  for body, field in UNCHECKED:
    status, text = post(base, "/v1/chat/completions", body)
    assert status == 400 and error_of(text)["param"] == field, (body, status, text)
  raw = [  # bodies json.dumps cannot write
      (b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + b"7" * 5000 + b"}",
       "seed"),
      (b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content"),
      (b'{"prompt": "\\udfff", "max_tokens": 2}', "prompt"),
      (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', None),
  ]
  for body, field in raw:
    path = "/v1/completions" if b"prompt" in body else "/v1/chat/completions"
    status, text = post(base, path, body)
    assert status == 400 and error_of(text)["param"] == field, (body[:80], status, text)
  deep = b"[" * 100_000 + b"]" * 100_000
  for path in ("/v1/chat/completions", "/v1/completions", "/v1/feedback"):
    status, text = post(base, path, deep)
    assert status == 400 and "nested too deeply" in error_of(text)["message"], (path, text)
  assert _http(f"{base}/health", key=None)[0] == 200


def test_over_context_prompts_are_tokenized_off_the_event_loop(served):
  base, _, client, _ = served
  prompt = "the quick brown fox jumps over the lazy dog " * 23_000  # about 1 MB
  with HealthWatch(base) as watch, concurrent.futures.ThreadPoolExecutor(16) as pool:
    other = bystander(client)
    results = list(pool.map(
        lambda _: post(base, "/v1/completions", {"prompt": prompt, "max_tokens": 2}),
        range(16)))
    assert other.result(timeout=120)[1] in ("length", "stop")
  watch.check()
  assert all(status == 400 and "context" in text for status, text in results), results[0]


def raw_connection(base: str, source: str = "127.0.0.1") -> socket.socket:
  sock = socket.socket()
  sock.bind((source, 0))
  sock.settimeout(10)
  sock.connect(("127.0.0.1", port_of(base)))
  return sock


def test_half_open_connections_are_capped_timed_out_and_logged(served):
  base, _, client, _ = served
  partial = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le"
  # One address holds all the connections it may with half a header each; the next is
  # refused, and the other addresses are served as usual.
  held = [raw_connection(base, "127.0.0.2") for _ in range(PER_CLIENT)]
  for sock in held:
    sock.sendall(partial)
  with HealthWatch(base) as watch:
    other = bystander(client)
    extra = raw_connection(base, "127.0.0.2")
    assert extra.recv(200).startswith(b"HTTP/1.1 503")
    # The server closes the held ones after --header_timeout (1 s): recv sees the end.
    start = time.perf_counter()
    for sock in held:
      assert sock.recv(100) == b""
    assert time.perf_counter() - start < 5
    assert other.result(timeout=120)[1] in ("length", "stop")
  watch.check()
  # The total cap: connections from three addresses fill it; the next gets a 503 at once
  # (before: accepted until the process ran out of file descriptors, then empty replies).
  deadline = time.time() + 10  # until the others' connections have gone (1 s idle at most)
  while _metric(base, "gptjax_open_connections") > 1 and time.time() < deadline:
    time.sleep(0.1)
  held = [raw_connection(base, f"127.0.0.{3 + i % 3}") for i in range(TOTAL)]
  for sock in held:
    sock.sendall(partial)
  time.sleep(0.2)
  refused = raw_connection(base, "127.0.0.6")
  assert refused.recv(200).startswith(b"HTTP/1.1 503")
  for sock in held + [refused, extra]:
    sock.close()
  wait_until_healthy(base)
  # A body shorter than its Content-Length: a 408 after --body_timeout (1 s), not forever.
  sock = raw_connection(base)
  sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n{\"prompt\":")
  start = time.perf_counter()
  assert sock.recv(200).startswith(b"HTTP/1.1 408")
  assert time.perf_counter() - start < 5
  sock.close()
  wait_until_healthy(base)


def wait_until_healthy(base: str) -> None:
  """Until the server has seen the closed connections go (a 503 while they count)."""
  deadline = time.time() + 5
  while _http(f"{base}/health", key=None)[0] != 200 and time.time() < deadline:
    time.sleep(0.05)
  assert _http(f"{base}/health", key=None)[0] == 200


def test_feedback_takes_finite_ratings_in_range_and_stops_at_its_size_limit(served, tmp_path):
  base, _, client, fb = served
  reply = client.chat.completions.create(model="m", messages=CHAT, max_tokens=4, seed=1)
  bad = [(b'{"id": "%s", "rating": NaN}', None), (b'{"id": "%s", "rating": Infinity}', None),
         (b'{"id": "%s", "rating": 1e999}', "rating"), (b'{"id": "%s", "rating": true}', "rating"),
         (b'{"id": "%s", "rating": 11}', "rating"), (b'{"id": "%s", "preferred": true}',
                                                     "preferred"),
         (b'{"id": "%s", "rating": 1, "comment": "' + b"x" * 4001 + b'"}', "comment"),
         (b'{"id": "%s", "rating": 1, "comment": 7}', "comment"),
         (b'{"id": "%s", "rating": 1, "comment": "\\ud800"}', "comment")]
  for body, field in bad:
    status, text = post(base, "/v1/feedback", body.replace(b"%s", reply.id.encode()))
    assert status == 400 and error_of(text)["param"] == field, (body[:60], status, text)
  assert post(base, "/v1/feedback", {"id": reply.id, "rating": -2.5})[0] == 200
  # Every line written is JSON that gptjax-feedback reads.
  lines = (fb / "feedback.jsonl").read_text().splitlines()
  assert [json.loads(line)["rating"] for line in lines] == [-2.5]
  # The logs stop at --feedback_max_bytes (100,000 here): feedback is then a 507, replies
  # are still served.
  statuses = [post(base, "/v1/feedback", {"id": reply.id, "rating": 1,
                                          "comment": "c" * 4000})[0] for _ in range(30)]
  assert statuses[0] == 200 and statuses[-1] == 507, statuses
  size = sum(p.stat().st_size for p in fb.iterdir())
  assert size <= 100_000
  assert _chat(client, max_tokens=3, seed=2)[1] in ("length", "stop")


def test_gptjax_feedback_refuses_non_finite_ratings_in_older_logs(tmp_path):
  record = {"id": "chatcmpl-1", "created": 0, "model": "m", "messages": CHAT,
            "choices": ["a", "b"], "sampling": {}}
  (tmp_path / "conversations.jsonl").write_text(json.dumps(record) + "\n")
  for rating in ("NaN", "-Infinity", "true", "1e999"):
    (tmp_path / "feedback.jsonl").write_text(
        '{"id": "chatcmpl-1", "created": 0, "rating": %s, "preferred": null, "comment": ""}\n'
        % rating)
    out = subprocess.run([sys.executable, "-m", "gptjax.serve.feedback",
                          f"--feedback_dir={tmp_path}", f"--out={tmp_path}/out"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "feedback.jsonl" in errors[0]
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


def test_no_traceback_and_refusals_logged(served):
  """Run last in this module: the server's output over all the tests above."""
  base, proc, client, _ = served
  # A non-streaming client that goes away mid-reply (before: an aclose() traceback each).
  for _ in range(3):
    sock = raw_connection(base)
    body = json.dumps({"messages": CHAT, "max_tokens": 300, "temperature": 1.0}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.3)
    sock.close()
  time.sleep(0.5)
  assert _http(f"{base}/health", key=None)[0] == 200
  metrics = _http(f"{base}/metrics", key=None)[1]
  _stop(proc)
  output = proc.stdout.read()
  assert "Traceback" not in output, output[-3000:]
  assert f"--max_connections_per_client={PER_CLIENT}" in output
  assert f"--max_connections={TOTAL}" in output
  assert "--header_timeout" in output and "--body_timeout" in output
  refusals = {reason: float(re.search(rf'^gptjax_refusals_total{{reason="{reason}"}} (\S+)$',
                                      metrics, re.M).group(1))
              for reason in ("total", "client", "headers", "body")}
  assert all(count >= 1 for count in refusals.values()), refusals


# ---------------------------------------------------------------------------------------------
# Failures inside the engine, in this process


@pytest.fixture(scope="module")
def failing():
  """An app over a hand-made model whose engine fails on demand: `fail["admit"]` a seed
  whose admission raises, `fail["decode"]` True to make every decode step raise."""
  import uvicorn

  from gptjax.serve.connections import Limits
  from gptjax.serve.engine import Engine
  from gptjax.serve.runner import Runner
  from gptjax.serve.server import App
  from test_serve import _free_port
  loaded, _ = unigram_loaded("abcdefgh ", {"a": 1.0, "b": 0.5})
  engine = Engine(loaded.model, loaded.params, num_slots=3, max_queue=4,
                  valid_vocab=loaded.tokenizer.vocab_size)
  engine.warmup()
  fail = {"admit": None, "decode": False}
  prefill, decode = engine._prefill, engine._decode

  def flaky_prefill(params, padded, length, seed, *rest):
    if fail["admit"] is not None and int(seed[0]) == fail["admit"]:
      raise RuntimeError("out of memory in prefill")
    return prefill(params, padded, length, seed, *rest)

  def flaky_decode(*args):
    if fail["decode"]:
      raise RuntimeError("device lost")
    return decode(*args)
  engine._prefill, engine._decode = flaky_prefill, flaky_decode
  app = App(loaded, Runner(engine), model_name="tiny")
  port = _free_port()
  server = uvicorn.Server(uvicorn.Config(app.app, host="127.0.0.1", port=port,
                                         log_level="critical", http=Limits().protocol()))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + 30
  while not server.started and time.time() < deadline:
    time.sleep(0.05)
  client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
  yield client, fail, engine
  server.should_exit = True
  thread.join(timeout=10)


def complete(client, seed, stream=False, max_tokens=20):
  response = client.completions.create(model="tiny", prompt="ab", max_tokens=max_tokens,
                                       temperature=1.0, seed=seed, stream=stream)
  if not stream:
    return response.choices[0].text, response.choices[0].finish_reason
  text, reason = "", None
  for chunk in response:
    if chunk.choices:
      text += chunk.choices[0].text
      reason = chunk.choices[0].finish_reason or reason
  return text, reason


def test_a_request_that_fails_in_the_engine_fails_alone_and_says_so(failing):
  client, fail, engine = failing
  normal = complete(client, seed=1)
  fail["admit"] = 666
  try:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      others = [pool.submit(complete, client, 1, stream) for stream in (False, True)]
      with pytest.raises(openai.InternalServerError, match="out of memory in prefill"):
        complete(client, seed=666)
      with pytest.raises(openai.APIError, match="out of memory in prefill"):
        complete(client, seed=666, stream=True)
      assert [o.result(timeout=60) for o in others] == [normal, normal]
  finally:
    fail["admit"] = None
  assert engine.slots_in_use == 0


def test_a_failed_decode_step_is_an_error_to_every_client_never_a_short_success(failing):
  client, fail, engine = failing
  normal = complete(client, seed=2, max_tokens=40)
  fail["decode"] = True
  try:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      calls = [pool.submit(complete, client, 2, stream, 40) for stream in (False, True, False)]
      for call in calls:
        with pytest.raises(openai.APIError, match="device lost"):
          call.result(timeout=60)
  finally:
    fail["decode"] = False
  assert complete(client, seed=2, max_tokens=40) == normal  # and it serves on
  assert engine.slots_in_use == 0 and np.all(engine.top_k >= 0)
