"""The OpenAI API's request fields, checked, and its response and chunk objects.

Covers what evaluation harnesses and chat front ends send: /v1/chat/completions and
/v1/completions with n, stream (+ stream_options.include_usage), stop, seed, max_tokens
(max_completion_tokens), temperature, top_p, top_k (vLLM's extension), logprobs.
A field this server cannot honour is a 400 naming it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP = 4


class BadRequest(ValueError):
  def __init__(self, message: str, param: str | None = None):
    super().__init__(message)
    self.param = param


@dataclasses.dataclass
class Request:
  chat: bool
  messages: list[dict] | None  # chat requests: the conversation
  prompt: str | None  # completion requests: the text
  n: int
  stream: bool
  include_usage: bool
  max_tokens: int | None  # None: until the context is full (chat) / 16 (completions)
  temperature: float
  top_p: float
  top_k: int
  seed: int | None
  stop: list[str]
  logprobs: bool
  top_logprobs: int
  model: str


def _number(body, key, default, lo, hi, kind=float):
  value = body.get(key, default)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      kind is int and not float(value).is_integer()):
    raise BadRequest(f"{key} must be {'an integer' if kind is int else 'a number'}", key)
  if not lo <= value <= hi:
    raise BadRequest(f"{key} must be between {lo} and {hi}, got {value}", key)
  return kind(value)


def _messages(body) -> list[dict]:
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise BadRequest("messages must be a non-empty list", "messages")
  out = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
      raise BadRequest(f"messages[{i}].role must be system, user or assistant", "messages")
    content = m.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
      if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        raise BadRequest(f"messages[{i}].content: only text parts are supported", "messages")
      content = "".join(p.get("text", "") for p in content)
    if not isinstance(content, str):
      raise BadRequest(f"messages[{i}].content must be a string", "messages")
    out.append({"role": m["role"], "content": content})
  return out


def parse(body, chat: bool, model: str) -> Request:
  if not isinstance(body, dict):
    raise BadRequest("the body must be a JSON object")
  for unsupported in ("tools", "functions", "response_format", "logit_bias", "suffix"):
    if body.get(unsupported):
      raise BadRequest(f"{unsupported} is not supported by gptjax-serve", unsupported)
  if not chat and body.get("echo"):
    raise BadRequest("echo is not supported by gptjax-serve", "echo")
  stop = body.get("stop") or []
  stop = [stop] if isinstance(stop, str) else stop
  if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(
      isinstance(s, str) for s in stop):
    raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP} strings", "stop")
  max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
  if max_tokens is not None:
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", None, 1, 2**31, int)
  elif not chat:
    max_tokens = 16  # the API's default for completions
  stream_options = body.get("stream_options") or {}
  if chat:
    messages, prompt = _messages(body), None
    logprobs = bool(body.get("logprobs", False))
    top_logprobs = _number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, int)
  else:
    messages, prompt = None, body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
      prompt = prompt[0]
    if not isinstance(prompt, str):
      raise BadRequest("prompt must be a string (one prompt per request)", "prompt")
    top_logprobs = _number(body, "logprobs", 0, 0, MAX_TOP_LOGPROBS, int)
    logprobs = body.get("logprobs") is not None
  seed = body.get("seed")
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
    raise BadRequest("seed must be an integer", "seed")
  return Request(
      chat=chat, messages=messages, prompt=prompt, n=_number(body, "n", 1, 1, MAX_N, int),
      stream=bool(body.get("stream", False)),
      include_usage=bool(stream_options.get("include_usage", False)), max_tokens=max_tokens,
      temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
      top_p=_number(body, "top_p", 1.0, 1e-6, 1.0), top_k=_number(body, "top_k", 0, -1, 2**31, int),
      seed=seed, stop=stop, logprobs=logprobs, top_logprobs=top_logprobs,
      model=body.get("model") or model)


def completion_id(chat: bool) -> str:
  return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens}


def logprob_entries(chat: bool, tokens: list[tuple[str, float, list[tuple[str, float]]]]):
  """The API's logprobs object for (token text, log-prob, [(alternative, log-prob)])."""
  if chat:
    return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                         "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())}
                                          for a, alp in top]} for t, lp, top in tokens]}
  offsets, at = [], 0
  for t, _, _ in tokens:
    offsets.append(at)
    at += len(t)
  return {"tokens": [t for t, _, _ in tokens], "token_logprobs": [lp for _, lp, _ in tokens],
          "top_logprobs": [dict(top) for _, _, top in tokens], "text_offset": offsets}


def choice(chat: bool, index: int, text: str, finish_reason: str | None, logprobs=None,
           delta: bool = False, first: bool = False) -> dict:
  if not chat:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
  if delta:
    message = ({"role": "assistant", "content": text} if first else
               ({"content": text} if text else {}))
    return {"index": index, "delta": message, "logprobs": logprobs,
            "finish_reason": finish_reason}
  return {"index": index, "message": {"role": "assistant", "content": text},
          "logprobs": logprobs, "finish_reason": finish_reason}


def envelope(chat: bool, cid: str, model: str, choices: list[dict], chunk: bool,
             usage_: dict | None = None, created: int | None = None) -> dict:
  kind = ("chat.completion" if chat else "text_completion") + (".chunk" if chunk and chat else "")
  out = {"id": cid, "object": kind, "created": created or int(time.time()), "model": model,
         "choices": choices}
  if usage_ is not None or not chunk:
    out["usage"] = usage_
  return out


def error(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}
