"""The OpenAI API's request fields, checked, and its response and chunk objects.

Covers what evaluation harnesses and chat front ends send: /v1/chat/completions and
/v1/completions with n, stream (+ stream_options.include_usage), stop, seed, max_tokens
(max_completion_tokens), temperature, top_p, top_k (vLLM's extension), logprobs.
A field this server cannot honour is a 400 naming it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP = 4  # stop sequences a request may give (OpenAI's limit)
MAX_STOP_CHARS = 1000  # characters in one stop sequence
SEED_RANGE = (-2**63, 2**64 - 1)  # a seed is taken modulo 2**32; this only bounds its size


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


class HugeInt(float):
  """An integer in the body too long to convert (Python refuses over 4,300 digits): kept as
  its sign and length, so the field's check can name it."""

  def __new__(cls, literal: str):
    self = super().__new__(cls, "-inf" if literal.startswith("-") else "inf")
    self.digits = len(literal.lstrip("-"))
    return self


MAX_INT_DIGITS = 100


def _reject_constant(name: str):
  raise BadRequest(f"the body is not JSON: {name} is not a JSON value (send a finite number)")


def load_json(body: bytes):
  """The request body as JSON, or BadRequest: strict JSON (no NaN or Infinity), integers of
  any length, and nesting deeper than Python's recursion limit, each one line."""
  try:
    return json.loads(body, parse_constant=_reject_constant,
                      parse_int=lambda s: int(s) if len(s) <= MAX_INT_DIGITS else HugeInt(s))
  except RecursionError:
    raise BadRequest("the body is not JSON we accept: it is nested too deeply") from None
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
    if isinstance(e, BadRequest):
      raise
    raise BadRequest("the body is not JSON") from None


def _number(body, key, default, lo, hi, kind=float):
  value = body.get(key, default)
  if value is None:
    return default
  if isinstance(value, HugeInt):
    raise BadRequest(f"{key} must be between {lo} and {hi}, got a {value.digits}-digit number",
                     key)
  whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      kind is int and not whole):
    raise BadRequest(f"{key} must be {'an integer' if kind is int else 'a number'}", key)
  if not lo <= value <= hi:
    raise BadRequest(f"{key} must be between {lo} and {hi}, got {value}", key)
  return kind(value)


def _flag(body, key, default: bool) -> bool:
  value = body.get(key, default)
  if value is None:
    return default
  if not isinstance(value, bool):
    raise BadRequest(f"{key} must be true or false, got {json.dumps(value)[:40]}", key)
  return value


def text(value, field: str) -> str:
  """A string that can be written as UTF-8 (JSON admits lone UTF-16 surrogates, which the
  tokenizer and the logs cannot take)."""
  if not isinstance(value, str):
    raise BadRequest(f"{field} must be a string", field)
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:
    raise BadRequest(f"{field} holds a lone UTF-16 surrogate (as \\ud800): send valid "
                     "Unicode text", field) from None
  return value


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
      content = "".join(text(p.get("text", ""), f"messages[{i}].content[{k}].text")
                        for k, p in enumerate(content))
    out.append({"role": m["role"], "content": text(content, f"messages[{i}].content")})
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
      isinstance(s, str) and len(s) <= MAX_STOP_CHARS for s in stop):
    raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP} strings of at "
                     f"most {MAX_STOP_CHARS} characters", "stop")
  stop = [text(s, "stop") for s in stop]
  model_name = body.get("model")
  if model_name is not None and not isinstance(model_name, str):
    raise BadRequest("model must be a string", "model")
  max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
  if max_tokens is not None:
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", None, 1, 2**31, int)
  elif not chat:
    max_tokens = 16  # the API's default for completions
  stream_options = body.get("stream_options") or {}
  if not isinstance(stream_options, dict):
    raise BadRequest("stream_options must be an object, as {\"include_usage\": true}",
                     "stream_options")
  if chat:
    messages, prompt = _messages(body), None
    logprobs = _flag(body, "logprobs", False)
    top_logprobs = _number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, int)
  else:
    messages, prompt = None, body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
      prompt = prompt[0]
    if not isinstance(prompt, str):
      raise BadRequest("prompt must be a string (one prompt per request)", "prompt")
    prompt = text(prompt, "prompt")
    top_logprobs = _number(body, "logprobs", 0, 0, MAX_TOP_LOGPROBS, int)
    logprobs = body.get("logprobs") is not None
  seed = body.get("seed")
  if seed is not None:
    seed = _number(body, "seed", None, *SEED_RANGE, int)
  return Request(
      chat=chat, messages=messages, prompt=prompt, n=_number(body, "n", 1, 1, MAX_N, int),
      stream=_flag(body, "stream", False),
      include_usage=_flag(stream_options, "include_usage", False), max_tokens=max_tokens,
      temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
      top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
      top_k=_number(body, "top_k", 0, -1, 2**31 - 1, int),
      seed=seed, stop=stop, logprobs=logprobs, top_logprobs=top_logprobs,
      model=model_name or model)


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
