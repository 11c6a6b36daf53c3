"""gptjax-serve as a process on a free local port, driven by the real `openai` client; the
terminal chat through a pseudo-terminal; the feedback log turned into training data."""

import concurrent.futures
import json
import math
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time

import urllib.error
import urllib.request

import jax
import numpy as np
import openai
import pytest

from gptjax import train as train_lib
from gptjax.generate import chat_replies, sample_text
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics
from gptjax.serve import feedback

KEY = "test-key"
CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Give three tips for staying healthy."}]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _http(url: str, body: bytes | None = None, json_body=None, key: str | None = KEY):
  """(status, text) of a GET, or a POST of `body` / `json_body` (stdlib only)."""
  if json_body is not None:
    body = json.dumps(json_body).encode()
  request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
  request.add_header("Content-Type", "application/json")
  if key:
    request.add_header("Authorization", f"Bearer {key}")
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, response.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


def _metric(base: str, name: str) -> float:
  text = _http(f"{base}/metrics")[1]
  return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def _start_server(workdir: str, *flags: str) -> tuple[str, subprocess.Popen]:
  """(base URL, process) of gptjax-serve on `workdir` at a free port, once it is healthy."""
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "gptjax.serve.server", f"--workdir={workdir}", f"--port={port}",
       *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  base = f"http://127.0.0.1:{port}"
  deadline = time.time() + 300
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"gptjax-serve exited: {proc.stdout.read()}")
    try:
      if _http(f"{base}/health")[0] == 200:
        return base, proc
    except OSError:
      time.sleep(0.5)
  proc.kill()
  raise RuntimeError("gptjax-serve did not come up in 300 s")


def _stop(proc: subprocess.Popen) -> None:
  proc.terminate()
  proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(sft_run, tmp_path_factory):
  """(base URL, process, feedback folder): 2 slots, a queue of 1, an API key."""
  fb = tmp_path_factory.mktemp("feedback")
  base, proc = _start_server(sft_run, "--slots=2", "--max_queue=1", f"--api_key={KEY}",
                             f"--feedback_dir={fb}", "--max_body_bytes=200000")
  yield base, proc, str(fb)
  _stop(proc)


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


def _chat(client, stream=False, **kw):
  response = client.chat.completions.create(model="m", messages=CHAT, stream=stream, **kw)
  if not stream:
    return response.choices[0].message.content, response.choices[0].finish_reason
  text, reason = "", None
  for chunk in response:
    if chunk.choices:
      text += chunk.choices[0].delta.content or ""
      reason = chunk.choices[0].finish_reason or reason
  return text, reason


def test_streamed_equals_non_streamed_equals_gptjax_sample(server, client, sft_run):
  loaded = load_workdir(sft_run)
  greedy = dict(max_tokens=40, temperature=0.0)
  expected = chat_replies(loaded, CHAT, max_new_tokens=40, temperature=0.0)[0]
  assert _chat(client, **greedy)[0] == _chat(client, stream=True, **greedy)[0] == expected
  sampled = dict(max_tokens=60, temperature=1.0, top_p=0.9, seed=11)
  text, _ = _chat(client, **sampled)
  assert _chat(client, stream=True, **sampled)[0] == text and len(set(text)) > 3
  prompt = "Once upon a time"
  completion = client.completions.create(model="m", prompt=prompt, max_tokens=24,
                                         temperature=0.0)
  streamed = "".join(c.choices[0].text for c in client.completions.create(
      model="m", prompt=prompt, max_tokens=24, temperature=0.0, stream=True) if c.choices)
  reference = sample_text(loaded, prompt, max_new_tokens=24, temperature=0.0)[0][len(prompt):]
  assert completion.choices[0].text == streamed
  assert reference.startswith(completion.choices[0].text)  # the server stops at eos
  if completion.choices[0].finish_reason == "length":
    assert completion.choices[0].text == reference


def test_usage_logprobs_and_n(client):
  response = client.chat.completions.create(model="m", messages=CHAT, max_tokens=8, n=3,
                                            temperature=1.0, seed=5, logprobs=True,
                                            top_logprobs=3)
  assert len(response.choices) == 3
  assert response.usage.completion_tokens == sum(
      len(c.logprobs.content) for c in response.choices)  # no stop token here: 8 each
  for choice in response.choices:
    for entry in choice.logprobs.content:
      assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
      assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-6
  chunks = list(client.chat.completions.create(
      model="m", messages=CHAT, max_tokens=5, stream=True, temperature=0.0,
      stream_options={"include_usage": True}))
  assert chunks[-1].usage.completion_tokens <= 5 and chunks[-1].usage.prompt_tokens > 0


def test_concurrent_requests_with_different_settings_each_equal_their_own_run(client):
  settings = [dict(temperature=0.0), dict(temperature=1.0, seed=1),
              dict(temperature=0.7, top_p=0.8, seed=2), dict(temperature=1.2, seed=3,
                                                            extra_body={"top_k": 5})]
  alone = [_chat(client, max_tokens=30, **s)[0] for s in settings]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two slots, two at a time
    together = list(pool.map(lambda s: _chat(client, stream=True, max_tokens=30, **s)[0],
                             settings))
  assert together == alone and len(set(alone)) > 1


def test_stop_sequences_end_the_text_before_them(client):
  text, _ = _chat(client, max_tokens=60, temperature=1.0, seed=21)
  stop = text[len(text) // 2:len(text) // 2 + 3]
  cut = text[:text.index(stop)]
  for stream in (False, True):
    assert _chat(client, stream=stream, max_tokens=60, temperature=1.0, seed=21,
                 stop=[stop, "\u2603never"]) == (cut, "stop")


def test_bad_requests_are_400_401_and_429(server, client):
  base = server[0]
  with pytest.raises(openai.BadRequestError, match="context is 512"):
    client.completions.create(model="m", prompt="word " * 3000, max_tokens=4)
  with pytest.raises(openai.BadRequestError, match="temperature"):
    client.chat.completions.create(model="m", messages=CHAT, temperature=-1)
  with pytest.raises(openai.AuthenticationError):
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
  assert _http(f"{base}/v1/completions", body=b"x" * 300_000)[0] == 413
  # Two slots held by streams that have started, one waiting: the next is a 429.
  holders = [client.chat.completions.create(model="m", messages=CHAT, stream=True,
                                            max_tokens=400, temperature=1.0, seed=i)
             for i in range(2)]
  for h in holders:
    next(iter(h))
  waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
      lambda: _chat(client, max_tokens=2, temperature=0.0))
  deadline = time.time() + 10
  while _metric(base, "gptjax_queue_depth") < 1 and time.time() < deadline:
    time.sleep(0.01)
  with pytest.raises(openai.RateLimitError):
    _chat(client, max_tokens=2)
  for h in holders:
    h.close()
  assert waiting.result(timeout=60)[1] in ("length", "stop")


def test_a_disconnect_mid_stream_frees_the_slot_at_once(server, client):
  base = server[0]
  before = _metric(base, "gptjax_generation_tokens_total")
  stream = client.chat.completions.create(model="m", messages=CHAT, stream=True,
                                          max_tokens=480, temperature=1.0, seed=4)
  next(iter(stream))
  stream.close()
  deadline = time.time() + 5
  while _metric(base, "gptjax_slots_in_use") > 0 and time.time() < deadline:
    time.sleep(0.01)
  assert _metric(base, "gptjax_slots_in_use") == 0
  made = _metric(base, "gptjax_generation_tokens_total") - before
  assert made < 480  # the request did not run on to its end


def test_no_compilation_after_warm_up(server, client):
  base = server[0]
  before = _metric(base, "gptjax_xla_compilations")
  for i, length in enumerate((1, 20, 90, 300)):
    client.completions.create(model="m", prompt="a " * length, max_tokens=3 + i,
                              temperature=0.5 * i, top_p=1.0 - 0.1 * i, seed=i)
  _chat(client, n=2, max_tokens=4, temperature=1.0, logprobs=True, top_logprobs=2)
  assert _metric(base, "gptjax_xla_compilations") == before > 0
  assert _metric(base, "gptjax_time_to_first_token_seconds_count") > 0


def test_feedback_becomes_sft_conversations_and_preference_pairs(server, client, tmp_path):
  base, _, fb = server
  response = client.chat.completions.create(model="m", messages=CHAT, max_tokens=12, n=3,
                                            temperature=1.0, seed=8)
  replies = [c.message.content for c in response.choices]
  url = f"{base}/v1/feedback"
  assert _http(url, json_body={"id": response.id, "preferred": 2})[0] == 200
  assert _http(url, json_body={"id": "nope", "rating": 1})[0] == 404
  assert _http(url, json_body={"id": response.id, "preferred": 3})[0] == 400
  assert _http(url, json_body={"id": response.id, "preferred": 2}, key=None)[0] == 401
  counts = feedback.write_training_data(fb, str(tmp_path))
  pairs = [json.loads(line) for line in open(tmp_path / "pairs.jsonl")]
  mine = [p for p in pairs if p["chosen"] == replies[2]]
  assert {p["rejected"] for p in mine} == {r for r in replies[:2] if r != replies[2]}
  assert all(p["messages"] == CHAT for p in mine)
  sft = [json.loads(line) for line in open(tmp_path / "sft.jsonl")]
  assert {"messages": CHAT + [{"role": "assistant", "content": replies[2]}]} in sft
  assert counts["pairs"] == len(pairs)


def test_the_retraining_loop_serve_collect_feedback_dpo_serve_the_new_checkpoint(
    server, client, sft_run, tmp_path):
  """The README's cycle on a tiny model: users pick one of two served replies, gptjax-feedback
  turns the log into pairs, DPO trains on them from the served checkpoint (policy ==
  reference at step 0: held-out loss log 2), and gptjax-serve serves the new checkpoint: its
  replies are that checkpoint's own greedy replies."""
  from test_train import load_config
  base, _, fb = server
  for i, topic in enumerate(["sleep", "water", "walking", "reading", "tea", "music"]):
    response = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"Say something about {topic}."}],
        n=2, max_tokens=12, temperature=1.0, seed=100 + i)
    vote = {"id": response.id, "preferred": i % 2}
    assert _http(f"{base}/v1/feedback", json_body=vote)[0] == 200
  counts = feedback.write_training_data(fb, str(tmp_path / "data"))
  assert counts["pairs"] >= 6

  config = load_config("dpo", "smoke")
  config.init.workdir, config.init.architecture, config.lora.rank = sft_run, True, 0
  config.data.path = str(tmp_path / "data" / "pairs.jsonl")
  config.data.data_dir = str(tmp_path / "cache")
  config.data.eval_fraction = 0.25
  config.train.steps = config.eval.every = config.checkpoint.every = 2
  dpo = str(tmp_path / "dpo")
  train_lib.train(config, dpo)
  metrics = read_metrics(dpo)
  assert metrics[0]["step"] == 0
  assert metrics[0]["eval/loss"] == pytest.approx(math.log(2), abs=1e-6)
  before, after = load_workdir(sft_run).params, load_workdir(dpo).params
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                      jax.tree_util.tree_leaves(after)))

  new_base, proc = _start_server(dpo, "--slots=1")
  try:
    new_client = openai.OpenAI(base_url=new_base + "/v1", api_key="none", max_retries=0)
    served = _chat(new_client, max_tokens=24, temperature=0.0)[0]
  finally:
    _stop(proc)
  assert served == chat_replies(load_workdir(dpo), CHAT, max_new_tokens=24, temperature=0.0)[0]


def _read_until(fd, marker: str, timeout: float = 120) -> str:
  out, deadline = "", time.time() + timeout
  while marker not in out and time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if ready:
      try:
        out += os.read(fd, 4096).decode(errors="replace")
      except OSError:
        break
  return out


def test_the_chat_command_line_in_a_terminal(sft_run):
  from gptjax.serve.chat_cli import PROMPT, REPLY
  loaded = load_workdir(sft_run)
  pid, fd = pty.fork()
  if pid == 0:
    os.execvp(sys.executable, [sys.executable, "-m", "gptjax.serve.chat_cli",
                               f"--workdir={sft_run}", "--temperature=0", "--max_new_tokens=20",
                               "--system=Be brief."])
  transcript = _read_until(fd, PROMPT)

  def say(line):
    os.write(fd, (line + "\n").encode())
    out = _read_until(fd, "\n" + PROMPT)
    return out.split(REPLY, 1)[-1].rsplit("\n" + PROMPT, 1)[0].replace("\r", "")

  first = say("Hello")
  conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
  assert first == chat_replies(loaded, conversation, max_new_tokens=20, temperature=0.0)[0]
  conversation += [{"role": "assistant", "content": first},
                   {"role": "user", "content": "Tell me more."}]
  second = say("Tell me more.")
  assert second == chat_replies(loaded, conversation, max_new_tokens=20, temperature=0.0)[0]
  os.write(fd, b"/reset\n")
  assert "reset" in _read_until(fd, "\n" + PROMPT)
  assert say("Hello") == first
  os.write(fd, b"/quit\n")
  _, status = os.waitpid(pid, 0)
  assert os.WEXITSTATUS(status) == 0, transcript
