"""Continuous batching (gptjax/serve/engine.py) against the one-request-at-a-time paths."""

import asyncio
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import rollout
from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig, init_cache
from gptjax.serve.engine import Engine, PromptTooLong, QueueFull, SamplingParams
from gptjax.serve.runner import Runner

LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", use_bias=False, num_kv_heads=2,
             tie_embeddings=False)
VOCAB, VALID = 67, 61  # six padding rows that nothing may ever produce


@functools.cache
def _build(kind):
  cfg = GPTConfig(vocab_size=VOCAB, num_layers=2, num_heads=4, embed_dim=32, max_len=64,
                  **(LLAMA if kind == "llama" else {}))
  model = GPT(cfg)
  # Weights drawn on the host (compiling the model's own initializer takes seconds on CPU),
  # larger than the init's so greedy paths differ visibly between prompts.
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(1), jnp.zeros((1, 8), jnp.int32)))
  rng = np.random.RandomState(1)
  draw = lambda x: (rng.normal(0, 0.08, x.shape) if x.ndim > 1 else
                    1 + rng.normal(0, 0.1, x.shape)).astype(np.float32)
  return model, jax.tree_util.tree_map(draw, shapes["params"])


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_and_params(request):
  """Both layouts: for what depends on the model (positions, cache writes)."""
  return _build(request.param)


@pytest.fixture(scope="module")
def llama():
  """One layout: for what the engine does around the model."""
  return _build("llama")


_FORWARDS = {}


def _forward(model):
  if model.cfg not in _FORWARDS:
    _FORWARDS[model.cfg] = jax.jit(lambda p, x: model.apply({"params": p}, x))
  return _FORWARDS[model.cfg]


def greedy(model, params, prompt, n):
  """Greedy continuation by full forwards (no cache) over one padded shape: one compilation."""
  tokens = np.zeros((1, model.cfg.max_len), np.int32)
  tokens[0, :len(prompt)] = prompt
  for t in range(len(prompt), len(prompt) + n):
    logits = np.asarray(_forward(model)(params, tokens))
    tokens[0, t] = int(np.argmax(logits[0, t - 1, :VALID]))
  return tokens[0, len(prompt):len(prompt) + n].tolist()


def prompts(lengths, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(0, VALID, n).astype(np.int32) for n in lengths]


def run_all(engine, arrivals):
  """arrivals: {step: [(prompt, params), ...]}; returns each request's events, in order."""
  out, ids, step = {}, [], 0
  while step <= max(arrivals) or engine.has_work():
    for prompt, params in arrivals.get(step, []):
      ids.append(engine.submit(prompt, params))
    for event in engine.step():
      out.setdefault(event.request_id, []).append(event)
    step += 1
  return [out[i] for i in ids]


def test_rows_at_different_positions_decode_as_each_row_alone(model_and_params):
  model, params = model_and_params
  lengths = [5, 12, 31]
  tokens = np.stack([np.pad(p, (0, 40 - len(p))) for p in prompts([40, 40, 40])])
  full = np.asarray(_forward(model)(params, np.pad(tokens, ((0, 0), (0, 24)))))
  prefill = jax.jit(lambda p, x, c: model.apply({"params": p}, x, cache=c, start=0)[1])
  caches = [prefill(params, np.pad(tokens[b:b + 1, :n], ((0, 0), (0, 32 - n))),
                    init_cache(model.cfg, 1, 64)) for b, n in enumerate(lengths)]
  cache = [{k: jnp.concatenate([c[i][k] for c in caches]) for k in ("k", "v")}
           for i in range(model.cfg.num_layers)]
  nxt = np.asarray([[tokens[b, n]] for b, n in enumerate(lengths)], np.int32)
  decode = jax.jit(lambda p, x, c, s: model.apply({"params": p}, x, cache=c, start=s))
  logits, new = decode(params, nxt, cache, jnp.asarray(lengths, jnp.int32))
  want = np.stack([full[b, n] for b, n in enumerate(lengths)])
  np.testing.assert_allclose(np.asarray(logits[:, 0]), want, atol=1e-5, rtol=0)
  # The scalar form, row by row, writes the same cache rows.
  for b, n in enumerate(lengths):
    one = [{k: c[k][b:b + 1] for k in c} for c in cache]
    _, alone = decode(params, nxt[b:b + 1], one, jnp.int32(n))
    # The last layer's keys pass through the first layer computed at batch 3 or 1: float
    # rounding differs with the CPU's vector width (1.7e-6 on an AVX-512 Xeon), as logits do.
    np.testing.assert_allclose(np.asarray(new[-1]["k"][b]), np.asarray(alone[-1]["k"][0]),
                               atol=1e-5, rtol=0)


def test_pick_rows_draws_each_row_as_pick_does_with_its_own_settings():
  """The per-row sampler shares `pick`'s filtering; each row must use its own settings."""
  logits = jax.random.normal(jax.random.key(0), (6, VOCAB)) * 3
  logits = jnp.where(jnp.arange(VOCAB) < VALID, logits, -jnp.inf)
  temperature = np.asarray([0.0, 0.7, 1.0, 1.5, 0.9, 2.0], np.float32)
  top_k = np.asarray([0, 1, 5, 0, 3, VOCAB], np.int32)
  top_p = np.asarray([1.0, 1.0, 0.9, 0.2, 0.5, 1.0], np.float32)
  seed, draw = np.arange(6, dtype=np.uint32) * 7 + 1, np.arange(6, dtype=np.int32) * 3
  for trial in range(8):  # other keys: rows with wide distributions land on other tokens
    rows = np.asarray(jax.jit(rollout.pick_rows)(logits, seed + trial, draw, temperature, top_k,
                                                 top_p))
    for b in range(6):
      key = jax.random.fold_in(jax.random.key(seed[b] + trial), draw[b])
      alone = rollout.pick(logits[b:b + 1], key, float(temperature[b]), int(top_k[b]),
                           float(top_p[b]))
      assert rows[b] == int(alone[0]), (trial, b)
  filtered = rollout.filter_logits(logits, temperature + (temperature == 0), top_k, top_p)
  for b in range(6):
    one = rollout.filter_logits(logits[b:b + 1], float(temperature[b] or 1.0), int(top_k[b]),
                                float(top_p[b]))
    np.testing.assert_array_equal(np.asarray(filtered[b]), np.asarray(one[0]))


def test_greedy_continuous_batching_equals_generation_with_joins_and_queueing(
    model_and_params):
  """Five requests on three slots: two wait in the queue, one arrives while others are mid-
  decode, each of a different length and budget. References: the project's one generation
  path (rollout.sample, what gptjax.generate runs: left-padded, so one compilation) and
  greedy decoding by whole forwards, which uses no cache at all."""
  model, params = model_and_params
  engine = Engine(model, params, num_slots=3, valid_vocab=VALID)
  ps = prompts([3, 17, 9, 30, 1])
  budgets = [20, 7, 25, 12, 33]
  plain = [SamplingParams(max_tokens=n, temperature=0.0) for n in budgets]
  arrivals = {0: [(ps[0], plain[0]), (ps[1], plain[1]), (ps[2], plain[2]), (ps[3], plain[3])],
              5: [(ps[4], plain[4])]}
  results = run_all(engine, arrivals)
  prompt_BP, pad_B = rollout.left_padded([p.tolist() for p in ps], 30)
  generated = np.asarray(jax.jit(lambda p: rollout.sample(
      model, p, prompt_BP, jax.random.key(0), max_new_tokens=33, left_pad_B=pad_B,
      temperature=0.0, valid_vocab=VALID)[0])(params))
  for b, (p, n, events) in enumerate(zip(ps, budgets, results)):
    tokens = [e.token_id for e in events]
    assert tokens == generated[b, :n].tolist(), b
    assert tokens == greedy(model, params, p, n), b
    assert [e.finished for e in events] == [None] * (n - 1) + ["length"]
  assert engine.slots_in_use == 0 and engine.queue_depth == 0


def test_a_seeded_request_draws_the_same_tokens_alone_and_batched(llama):
  model, params = llama
  p = prompts([11])[0]
  mine = SamplingParams(max_tokens=24, temperature=0.9, top_k=20, top_p=0.9, seed=1234)
  alone = run_all(Engine(model, params, num_slots=3, valid_vocab=VALID), {0: [(p, mine)]})[0]
  others = [SamplingParams(max_tokens=30, temperature=t, top_k=k, top_p=q, seed=s, logprobs=lp)
            for t, k, q, s, lp in [(0.0, 0, 1.0, 0, 0), (1.3, 0, 0.5, 7, 0),
                                   (1.5, 3, 1.0, 9, 3)]]
  ps = prompts([4, 20, 8], seed=3)
  batched = run_all(Engine(model, params, num_slots=3, valid_vocab=VALID),
                    {0: [(ps[0], others[0]), (ps[2], others[2])],
                     2: [(p, mine), (ps[1], others[1])]})  # the last waits for a slot
  assert [e.token_id for e in batched[2]] == [e.token_id for e in alone]
  drawn = np.concatenate([[e.token_id for e in r] for r in batched])
  assert drawn.max() < VALID  # padding rows are never drawn
  # Its neighbour's top_k=3 holds in the shared step: every token among that step's 3 most
  # likely, and at a high temperature not always the first.
  assert all(e.token_id in [i for i, _ in e.top_logprobs] for e in batched[1])
  assert any(e.token_id != e.top_logprobs[0][0] for e in batched[1])


def test_logprobs_are_the_full_forwards_log_softmax(llama):
  model, params = llama
  p = prompts([7], seed=5)[0]
  sampling = SamplingParams(max_tokens=12, temperature=1.0, seed=3, logprobs=5)
  events = run_all(Engine(model, params, num_slots=3, valid_vocab=VALID), {0: [(p, sampling)]})[0]
  sequence = np.zeros((1, 64), np.int32)
  sequence[0, :len(p) + len(events)] = np.concatenate([p, [e.token_id for e in events]])
  logits = np.asarray(_forward(model)(params, sequence))[0, len(p) - 1:len(p) + len(events) - 1,
                                                          :VALID]
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
  for t, e in enumerate(events):
    np.testing.assert_allclose(e.logprob, logp[t, e.token_id], atol=1e-4)
    best = np.argsort(-logp[t])[:5]
    assert [i for i, _ in e.top_logprobs] == best.tolist()
    np.testing.assert_allclose([v for _, v in e.top_logprobs], logp[t, best], atol=1e-4)
    listed = dict(e.top_logprobs)
    if e.token_id in listed:  # one function scores both: the same number to the last bit
      assert listed[e.token_id] == e.logprob


def test_stop_tokens_length_and_cancel_free_the_slot_without_touching_others(llama):
  model, params = llama
  engine = Engine(model, params, num_slots=2, valid_vocab=VALID)
  p0, p1, p2 = prompts([6, 9, 5], seed=8)
  alone = greedy(model, params, p0, 16)
  # A stop token that greedy decoding first draws after the three steps below
  stop_at = next(t for k, t in enumerate(alone) if k >= 4 and t not in alone[:k])
  never = next(t for t in range(VALID) if t not in alone)
  first = engine.submit(p0, SamplingParams(max_tokens=16, temperature=0.0,
                                           stop_token_ids=(never, stop_at)))
  second = engine.submit(p1, SamplingParams(max_tokens=40, temperature=0.0))
  got = {first: [], second: []}
  for _ in range(3):
    for e in engine.step():
      got[e.request_id].append(e)
  engine.cancel(second)
  assert engine.slots_in_use == 1
  third = engine.submit(p2, SamplingParams(max_tokens=5, temperature=0.0))  # takes its slot
  got[third] = []
  while engine.has_work():
    for e in engine.step():
      got[e.request_id].append(e)
  tokens = [e.token_id for e in got[first]]
  assert tokens == alone[:alone.index(stop_at) + 1] and got[first][-1].finished == "stop"
  assert [e.finished for e in got[first][:-1]] == [None] * (len(tokens) - 1)
  assert len(got[second]) == 4 and engine.slots_in_use == 0  # prefill + 3 decode steps
  assert [e.token_id for e in got[third]] == greedy(model, params, p2, 5)
  assert got[third][-1].finished == "length"


def test_a_request_that_fills_the_serving_context_ends_with_length(llama):
  """max_len below the model's: the cache, the prompt check and the stop all follow it."""
  model, params = llama
  engine = Engine(model, params, num_slots=1, valid_vocab=VALID, max_len=48)
  assert engine.buckets == (16, 32, 48)
  p = prompts([44])[0]
  events = run_all(engine, {0: [(p, SamplingParams(max_tokens=100, temperature=0.0))]})[0]
  assert len(events) == 48 - 44 and events[-1].finished == "length"
  assert [e.token_id for e in events] == greedy(model, params, p, 4)
  with pytest.raises(PromptTooLong, match="context is 48"):
    engine.submit(np.zeros(48, np.int32), SamplingParams(max_tokens=1))


def test_no_compilation_after_warmup(model_and_params):
  model, params = model_and_params
  engine = Engine(model, params, num_slots=3, valid_vocab=VALID)
  before = engine.warmup()
  assert before > 0  # the counter hears compilations (at least those of this process)
  settings = [SamplingParams(max_tokens=n, temperature=t, top_k=k, top_p=q, seed=s,
                             stop_token_ids=stops, logprobs=lp)
              for n, t, k, q, s, stops, lp in [(5, 0.0, 0, 1.0, 0, (), 0),
                                               (9, 0.7, 5, 0.8, -1, (3, 4), 2),
                                               (3, 1.2, 0, 0.3, 2**40, (), 20),
                                               (12, 0.0, 40, 1.0, 3, (1,), 0)]]
  arrivals = {0: list(zip(prompts([2, 33, 16, 63 - 12]), settings)),
              4: list(zip(prompts([17, 1], seed=4), settings[:2]))}
  results = run_all(engine, arrivals)
  assert engine.compilations == before
  assert len(results[0]) == 5 and all(r[-1].finished for r in results)


def test_too_long_prompts_bad_settings_and_a_full_queue_are_refused(llama):
  model, params = llama
  engine = Engine(model, params, num_slots=1, max_queue=2, valid_vocab=VALID)
  with pytest.raises(PromptTooLong, match="context is 64"):
    engine.submit(np.zeros(64, np.int32), SamplingParams(max_tokens=1))
  for bad, field in [(dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
                     (dict(max_tokens=0), "max_tokens"), (dict(logprobs=21), "logprobs")]:
    with pytest.raises(UserError, match=field):
      engine.submit(np.zeros(3, np.int32), SamplingParams(**{"max_tokens": 1, **bad}))
  for _ in range(3):  # one for the free slot, two for the queue
    engine.submit(np.zeros(3, np.int32), SamplingParams(max_tokens=1))
  with pytest.raises(QueueFull):
    engine.submit(np.zeros(3, np.int32), SamplingParams(max_tokens=1))
  assert engine.queue_depth == 3


def test_runner_streams_each_request_and_a_cancel_frees_its_slot(llama):
  """The server's front: the engine on its own thread, one async stream per request."""
  model, params = llama
  runner = Runner(Engine(model, params, num_slots=2, valid_vocab=VALID))
  p0, p1 = prompts([5, 8], seed=11)

  async def main():
    keep = runner.stream(p0, SamplingParams(max_tokens=10, temperature=0.0))
    drop = runner.stream(p1, SamplingParams(max_tokens=40, temperature=0.0))
    dropped = []
    async for event in drop:
      dropped.append(event)
      if len(dropped) == 2:
        drop.cancel()  # a client that went away
        break
    in_use = runner.slots_in_use  # at once, not after the engine's next step
    kept = [e async for e in keep]
    return kept, dropped, in_use

  kept, dropped, in_use = asyncio.run(main())
  assert [e.token_id for e in kept] == greedy(model, params, p0, 10)
  assert kept[-1].finished == "length" and len(dropped) == 2
  assert in_use <= 1 and runner.slots_in_use == 0 and runner.queue_depth == 0
