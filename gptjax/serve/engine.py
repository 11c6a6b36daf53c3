"""Continuous batching: a fixed set of decode slots that requests join and leave one by one.

As JetStream's prefill / insert / generate: a request is prefilled alone (its prompt padded
to a bucket length, so prefill compiles once per bucket, never per request), its KV cache
rows and first token are inserted into a free slot, and one jitted decode step advances every
slot by a token, each at its own position (gptjax.model's per-row `start`) with its own
temperature, top-k, top-p and seed (gptjax.rollout.pick_rows). A request leaves its slot at
a stop token, at max_tokens or at the end of the context, or when cancelled; the others keep
decoding. Shapes never depend on a request, so after `warmup()` serving compiles nothing
(`compilations` counts every XLA compilation in the process, for /metrics and the tests).

Keys beyond a slot's real tokens hold stale values from earlier occupants or prompt padding;
no query ever attends to them (the mask admits positions up to the row's own), and decoding
overwrites each before it is read.

Log-probs are OpenAI's: of the model's own distribution (log-softmax of the logits over the
real vocabulary, temperature 1), for the drawn token and the `TOP_LOGPROBS` most likely.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import losses, rollout
from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig, init_cache

TOP_LOGPROBS = 20
MAX_STOP_IDS = 8
INT32_MAX = 2**31 - 1  # top_k and max_tokens travel to the device as int32

_compilations = [0]
_listening = []


def _count_compilations() -> None:
  """Counts every XLA backend compilation of this process from the first engine on (a
  superset of the engine's own: a count that stays put proves none of them compiled)."""
  if _listening:
    return

  def listener(event: str, duration: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
      _compilations[0] += 1
  jax.monitoring.register_event_duration_secs_listener(listener)
  _listening.append(listener)


class QueueFull(Exception):
  """Every slot is busy and the waiting queue is full (HTTP 429)."""


class PromptTooLong(UserError):
  """A prompt that leaves no room in the context for a generated token (HTTP 400)."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_tokens: int
  temperature: float = 1.0  # 0 = greedy
  top_p: float = 1.0  # 1 = off
  top_k: int = 0  # 0 = off
  seed: int = 0  # any integer; taken modulo 2**32
  stop_token_ids: tuple[int, ...] = ()
  logprobs: int = 0  # how many alternatives to return per token (0 = only the drawn one's)

  def check(self) -> None:
    problems = [
        (1 <= self.max_tokens <= INT32_MAX,
         f"max_tokens must be in [1, {INT32_MAX}], got {self.max_tokens}"),
        (0 <= self.temperature < float("inf"),
         f"temperature must be >= 0 and finite, got {self.temperature}"),
        (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
        (0 <= self.top_k <= INT32_MAX,
         f"top_k must be in [0, {INT32_MAX}] (0 = off), got {self.top_k}"),
        (0 <= self.logprobs <= TOP_LOGPROBS,
         f"logprobs must be in [0, {TOP_LOGPROBS}], got {self.logprobs}"),
        (len(self.stop_token_ids) <= MAX_STOP_IDS, f"at most {MAX_STOP_IDS} stop token ids"),
    ]
    for ok, message in problems:
      if not ok:
        raise UserError(message)


@dataclasses.dataclass
class TokenEvent:
  request_id: int
  token_id: int
  logprob: float
  top_logprobs: list[tuple[int, float]]  # (token id, log-prob), most likely first
  finished: str | None  # None, "stop" (a stop token), "length" (max_tokens, context), "error"
  error: str | None = None  # why the request failed ("error"): it alone, the others go on


def power_of_two_buckets(max_len: int, smallest: int = 16) -> tuple[int, ...]:
  """Powers of two from `smallest` up to the context, and the context itself."""
  sizes = []
  size = smallest
  while size < max_len:
    sizes.append(size)
    size *= 2
  return (*sizes, max_len)


@dataclasses.dataclass
class _Slot:
  request_id: int
  params: SamplingParams
  generated: int  # tokens produced so far (the first comes from prefill)


class Engine:
  """Not thread-safe by itself: one thread calls step(); `runner.Runner` serialises the rest.

  `max_len` (default: the model's context) sizes the cache and caps prompt + completion;
  `prefill_buckets` (default: powers of two) are the padded prompt lengths prefill compiles
  for, `max_len` added so every prompt fits one."""

  def __init__(self, model: GPT, params, *, num_slots: int = 8, max_queue: int = 64,
               valid_vocab: int | None = None, max_len: int | None = None,
               prefill_buckets: tuple[int, ...] | None = None):
    _count_compilations()
    cfg = model.cfg
    self.max_len = max_len or cfg.max_len
    if not 1 < self.max_len <= cfg.max_len:
      raise UserError(f"max_len={self.max_len} must be in [2, {cfg.max_len}] (the model's "
                      "context)")
    if num_slots < 1 or max_queue < 0:
      raise UserError(f"need num_slots >= 1 and max_queue >= 0, got {num_slots}, {max_queue}")
    buckets = set(prefill_buckets or power_of_two_buckets(self.max_len))
    if not all(0 < b <= self.max_len for b in buckets):
      raise UserError(f"prefill buckets {sorted(buckets)} must be in [1, {self.max_len}]")
    self.buckets = tuple(sorted(buckets | {self.max_len}))
    self.model, self.params, self.num_slots, self.max_queue = model, params, num_slots, max_queue
    self.valid_vocab = valid_vocab or cfg.vocab_size
    self.cache = init_cache(cfg, num_slots, self.max_len)
    self.slots: list[_Slot | None] = [None] * num_slots
    # Per-slot decode inputs, kept on the host (a few numbers a step to send).
    self.tokens = np.zeros(num_slots, np.int32)  # the last token, fed to the next step
    self.positions = np.zeros(num_slots, np.int32)  # where that token goes in the cache
    self.seeds = np.zeros(num_slots, np.uint32)
    self.temperature = np.zeros(num_slots, np.float32)
    self.top_k = np.zeros(num_slots, np.int32)
    self.top_p = np.ones(num_slots, np.float32)
    self.waiting: collections.deque = collections.deque()
    self._ids = itertools.count()
    # The jitted functions are module-level with the config static, so engines over one
    # model (a restarted server, the tests) share their compilations.
    self._prefill = functools.partial(_prefill, cfg, self.valid_vocab, self.max_len)
    self._decode = functools.partial(_decode, cfg, self.valid_vocab)

  # ---- what the server shows
  @property
  def compilations(self) -> int:
    return _compilations[0]

  @property
  def queue_depth(self) -> int:
    return len(self.waiting)

  @property
  def slots_in_use(self) -> int:
    return sum(s is not None for s in self.slots)

  def has_work(self) -> bool:
    return bool(self.waiting) or self.slots_in_use > 0

  # ---- requests
  def submit(self, prompt_ids, params: SamplingParams) -> int:
    """Queues a request and returns its id; its tokens come from later `step()` calls.
    Raises PromptTooLong, QueueFull, or UserError for a bad setting (nothing queued)."""
    prompt = np.asarray(prompt_ids, np.int32).reshape(-1)
    if prompt.size == 0:
      raise UserError("the prompt has no tokens")
    if prompt.size >= self.max_len:
      raise PromptTooLong(f"the prompt is {prompt.size} tokens but the model's context is "
                          f"{self.max_len}: shorten it to at most {self.max_len - 1} tokens")
    if prompt.min() < 0 or prompt.max() >= self.model.cfg.vocab_size:  # take() would clamp
      raise UserError(f"prompt token ids must be in [0, {self.model.cfg.vocab_size})")
    params.check()
    free = self.slots.count(None)
    if len(self.waiting) >= self.max_queue + free:  # those that fit a free slot never wait
      raise QueueFull(f"{len(self.waiting)} requests are waiting for a slot")
    request_id = next(self._ids)
    self.waiting.append((request_id, prompt, params))
    return request_id

  def cancel(self, request_id: int) -> None:
    """Frees the request's slot (or queue place) at once; its other tokens are never made."""
    self.waiting = collections.deque(w for w in self.waiting if w[0] != request_id)
    for i, slot in enumerate(self.slots):
      if slot is not None and slot.request_id == request_id:
        self.slots[i] = None

  def step(self) -> list[TokenEvent]:
    """Admit waiting requests into free slots (prefill: each yields its first token), then
    one decode step for every occupied slot."""
    events = []
    while self.waiting and None in self.slots:
      slot = self.slots.index(None)
      request_id, prompt, params = self.waiting.popleft()
      try:
        events.append(self._admit(slot, request_id, prompt, params))
      except Exception as e:  # noqa: BLE001: this request fails alone; the slot stays free
        self.slots[slot] = None
        events.append(TokenEvent(request_id, -1, float("nan"), [], "error",
                                 f"generation failed: {type(e).__name__}: {e}"))
    active = [i for i, s in enumerate(self.slots) if s is not None]
    if not active:
      return events
    # Free slots decode too (static shapes) from stale inputs, into their own cache rows
    # only; their results are dropped and the next insert overwrites the row.
    self.cache, token_S, logp_S, top_ids_SN, top_logp_SN = self._decode(
        self.params, self.cache, self.tokens, self.positions, self.seeds,
        np.asarray([s.generated if s else 0 for s in self.slots], np.int32),
        self.temperature, self.top_k, self.top_p)
    token_S, logp_S, top_ids_SN, top_logp_SN = jax.device_get(
        (token_S, logp_S, top_ids_SN, top_logp_SN))
    for i in active:
      self.positions[i] += 1
      events.append(self._emit(i, int(token_S[i]), float(logp_S[i]), top_ids_SN[i],
                               top_logp_SN[i]))
    return events

  def _admit(self, i: int, request_id: int, prompt: np.ndarray, params: SamplingParams):
    length = prompt.size
    bucket = next(b for b in self.buckets if b >= length)
    padded = np.zeros((1, bucket), np.int32)
    padded[0, :length] = prompt
    seed = params.seed % 2**32
    settings = (np.asarray([seed], np.uint32), np.asarray([params.temperature], np.float32),
                np.asarray([params.top_k], np.int32), np.asarray([params.top_p], np.float32))
    cache_1, token, logp, top_ids, top_logp = self._prefill(self.params, padded,
                                                            np.int32(length), *settings)
    self.cache = _insert(self.cache, cache_1, np.int32(i))
    self.slots[i] = _Slot(request_id, params, generated=0)
    self.seeds[i], self.temperature[i], self.top_k[i], self.top_p[i] = (
        seed, params.temperature, params.top_k, params.top_p)
    self.positions[i] = length
    token, logp, top_ids, top_logp = jax.device_get((token, logp, top_ids, top_logp))
    return self._emit(i, int(token[0]), float(logp[0]), top_ids[0], top_logp[0])

  def _emit(self, i: int, token: int, logp: float, top_ids, top_logp) -> TokenEvent:
    slot = self.slots[i]
    slot.generated += 1
    self.tokens[i] = token
    finished = None
    if token in slot.params.stop_token_ids:
      finished = "stop"
    elif slot.generated >= slot.params.max_tokens or self.positions[i] + 1 >= self.max_len:
      finished = "length"  # its budget, or the context is full: no position for another
    k = slot.params.logprobs
    top = [(int(t), float(v)) for t, v in zip(top_ids[:k], top_logp[:k])]
    if finished:
      self.slots[i] = None
    return TokenEvent(slot.request_id, token, logp, top, finished)

  def warmup(self) -> int:
    """Compiles every prefill bucket and the decode step; returns the compilations so far."""
    params = SamplingParams(max_tokens=2, temperature=1.0, top_k=5, top_p=0.9)
    for bucket in self.buckets:
      rid = self.submit(np.zeros(min(bucket, self.max_len - 1), np.int32), params)
      while any(s is not None and s.request_id == rid for s in self.slots) or any(
          w[0] == rid for w in self.waiting):
        self.step()
    return self.compilations


def _draw(valid_vocab, logits_BV, seed_B, draw_B, temperature_B, top_k_B, top_p_B):
  """Each row's token (its own settings and key), the token's log-prob and the TOP_LOGPROBS
  most likely tokens' (temperature 1, real vocabulary: OpenAI's `logprobs`)."""
  logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < valid_vocab, logits_BV, -jnp.inf)
  token_B = rollout.pick_rows(logits_BV, seed_B, draw_B, temperature_B, top_k_B, top_p_B)
  top_ids_BN = jax.lax.top_k(logits_BV, min(TOP_LOGPROBS, valid_vocab))[1].astype(jnp.int32)
  # One call of the trainer's log-prob function scores the drawn and the top tokens alike.
  ids_BM = jnp.concatenate([token_B[:, None], top_ids_BN], axis=1)
  logp_BM = losses.token_logprobs(logits_BV[:, None], ids_BM, 1.0, valid_vocab)
  return token_B, logp_BM[:, 0], top_ids_BN, logp_BM[:, 1:]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _prefill(cfg: GPTConfig, valid_vocab: int, max_len: int, params, prompt_1P, length,
             seed_1, temperature_1, top_k_1, top_p_1):
  cache = init_cache(cfg, 1, max_len)
  logits_1PV, cache = GPT(cfg).apply({"params": params}, prompt_1P, cache=cache, start=0)
  last_1V = jax.lax.dynamic_index_in_dim(logits_1PV[0], length - 1, keepdims=True)
  return (cache, *_draw(valid_vocab, last_1V, seed_1, jnp.zeros((1,), jnp.int32),
                        temperature_1, top_k_1, top_p_1))


@functools.partial(jax.jit, donate_argnums=(0,))
def _insert(cache, cache_1, slot):
  return [{k: jax.lax.dynamic_update_slice_in_dim(layer[k], one[k], slot, axis=0)
           for k in layer} for layer, one in zip(cache, cache_1)]


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=(3,))
def _decode(cfg: GPTConfig, valid_vocab: int, params, cache, tokens_S, positions_S, seed_S,
            draw_S, temperature_S, top_k_S, top_p_S):
  logits_S1V, cache = GPT(cfg).apply({"params": params}, tokens_S[:, None], cache=cache,
                                     start=positions_S)
  return (cache, *_draw(valid_vocab, logits_S1V[:, 0], seed_S, draw_S, temperature_S, top_k_S,
                        top_p_S))
