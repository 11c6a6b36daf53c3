"""Continuous batching (gptjax/serve/engine.py) against the one-request-at-a-time paths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.model import GPT, GPTConfig, init_cache
from gptjax.serve.engine import Engine, PromptTooLong, QueueFull, SamplingParams

LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", use_bias=False, num_kv_heads=2,
             tie_embeddings=False)
VOCAB, VALID = 67, 61  # six padding rows that nothing may ever produce


def _build(kind):
  cfg = GPTConfig(vocab_size=VOCAB, num_layers=2, num_heads=4, embed_dim=32, max_len=64,
                  **(LLAMA if kind == "llama" else {}))
  model = GPT(cfg)
  params = nn.unbox(model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32)))["params"]
  # Larger weights than the init's, so greedy paths differ visibly between prompts.
  params = jax.tree_util.tree_map(lambda x: x * 4.0 if x.ndim > 1 else x, params)
  return model, params


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_and_params(request):
  """Both layouts: for what depends on the model (positions, cache writes)."""
  return _build(request.param)


@pytest.fixture(scope="module")
def llama():
  """One layout: for what the engine does around the model."""
  return _build("llama")


def greedy(model, params, prompt, n):
  """Greedy continuation by full forwards (no cache) over one padded shape: one compilation."""
  forward = _forward(model)
  tokens = np.zeros((1, model.cfg.max_len), np.int32)
  tokens[0, :len(prompt)] = prompt
  for t in range(len(prompt), len(prompt) + n):
    tokens[0, t] = int(np.argmax(np.asarray(forward(params, tokens))[0, t - 1, :VALID]))
  return tokens[0, len(prompt):len(prompt) + n].tolist()


_FORWARDS = {}


def _forward(model):
  if model.cfg not in _FORWARDS:
    _FORWARDS[model.cfg] = jax.jit(lambda p, x: model.apply({"params": p}, x))
  return _FORWARDS[model.cfg]


def prompts(lengths, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(0, VALID, n).astype(np.int32) for n in lengths]


def run_all(engine, arrivals):
  """arrivals: {step: [(prompt, params), ...]}; returns {request id: [events]} in order."""
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
  logits, _ = model.apply({"params": params}, nxt, cache=cache, start=jnp.asarray(lengths))
  want = np.stack([full[b, n] for b, n in enumerate(lengths)])
  np.testing.assert_allclose(np.asarray(logits[:, 0]), want, atol=1e-5, rtol=0)


def test_greedy_continuous_batching_equals_generate_with_joins_and_queueing(model_and_params):
  """Five requests on three slots: two wait in the queue, two arrive while others are mid-
  decode, each of a different length and budget."""
  model, params = model_and_params
  engine = Engine(model, params, num_slots=3, valid_vocab=VALID)
  ps = prompts([3, 17, 9, 30, 1])
  budgets = [20, 7, 25, 12, 33]
  plain = [SamplingParams(max_tokens=n, temperature=0.0) for n in budgets]
  arrivals = {0: [(ps[0], plain[0]), (ps[1], plain[1]), (ps[2], plain[2]), (ps[3], plain[3])],
              5: [(ps[4], plain[4])]}
  results = run_all(engine, arrivals)
  for p, n, events in zip(ps, budgets, results):
    assert [e.token_id for e in events] == greedy(model, params, p, n)
    assert [e.finished for e in events] == [None] * (n - 1) + ["length"]
  assert engine.slots_in_use == 0 and engine.queue_depth == 0


def test_a_seeded_request_draws_the_same_tokens_alone_and_batched(llama):
  model, params = llama
  p = prompts([11])[0]
  mine = SamplingParams(max_tokens=24, temperature=0.9, top_k=20, top_p=0.9, seed=1234)
  alone = run_all(Engine(model, params, num_slots=4, valid_vocab=VALID), {0: [(p, mine)]})[0]
  others = [SamplingParams(max_tokens=30, temperature=t, top_k=k, top_p=q, seed=s)
            for t, k, q, s in [(0.0, 0, 1.0, 0), (1.3, 0, 0.5, 7), (0.5, 3, 1.0, 9)]]
  ps = prompts([4, 20, 8], seed=3)
  batched = run_all(Engine(model, params, num_slots=4, valid_vocab=VALID),
                    {0: [(ps[0], others[0]), (ps[1], others[1])],
                     2: [(p, mine), (ps[2], others[2])]})
  assert [e.token_id for e in batched[2]] == [e.token_id for e in alone]
  drawn = np.concatenate([[e.token_id for e in r] for r in batched])
  assert drawn.max() < VALID  # padding rows are never drawn
  # top-k 3 at a low temperature keeps to the 3 most likely tokens of each step
  assert len({e.token_id for e in batched[3]}) > 1


def test_logprobs_are_the_full_forwards_log_softmax(llama):
  model, params = llama
  p = prompts([7], seed=5)[0]
  sampling = SamplingParams(max_tokens=12, temperature=1.0, seed=3, logprobs=5)
  events = run_all(Engine(model, params, num_slots=2, valid_vocab=VALID), {0: [(p, sampling)]})[0]
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


def test_stop_tokens_length_and_cancel_free_the_slot_without_touching_others(
    llama):
  model, params = llama
  engine = Engine(model, params, num_slots=2, valid_vocab=VALID)
  p0, p1 = prompts([6, 9], seed=8)
  alone = greedy(model, params, p0, 16)
  # A stop token that greedy decoding first draws after the three steps below
  stop_at = next(t for k, t in enumerate(alone) if k >= 4 and t not in alone[:k])
  first = engine.submit(p0, SamplingParams(max_tokens=16, temperature=0.0,
                                           stop_token_ids=(stop_at,)))
  second = engine.submit(p1, SamplingParams(max_tokens=40, temperature=0.0))
  got = {first: [], second: []}
  for _ in range(3):
    for e in engine.step():
      got[e.request_id].append(e)
  engine.cancel(second)
  assert engine.slots_in_use == 1
  while engine.has_work():
    for e in engine.step():
      got[e.request_id].append(e)
  tokens = [e.token_id for e in got[first]]
  assert tokens == alone[:alone.index(stop_at) + 1] and got[first][-1].finished == "stop"
  assert len(got[second]) == 4 and engine.slots_in_use == 0  # prefill + 3 decode steps


def test_a_request_that_fills_the_context_ends_with_length(llama):
  model, params = llama
  engine = Engine(model, params, num_slots=1, valid_vocab=VALID)
  p = prompts([60])[0]
  events = run_all(engine, {0: [(p, SamplingParams(max_tokens=100, temperature=0.0))]})[0]
  assert len(events) == 64 - 60 and events[-1].finished == "length"
  assert [e.token_id for e in events] == greedy(model, params, p, 4)


def test_no_compilation_after_warmup(llama):
  model, params = llama
  engine = Engine(model, params, num_slots=3, valid_vocab=VALID)
  before = engine.warmup()
  settings = [SamplingParams(max_tokens=n, temperature=t, top_k=k, top_p=q, seed=s,
                             stop_token_ids=stops, logprobs=lp)
              for n, t, k, q, s, stops, lp in [(5, 0.0, 0, 1.0, 0, (), 0),
                                               (9, 0.7, 5, 0.8, 1, (3, 4), 2),
                                               (3, 1.2, 0, 0.3, 2, (), 20),
                                               (12, 0.0, 40, 1.0, 3, (1,), 0)]]
  arrivals = {0: list(zip(prompts([2, 33, 16, 63 - 12]), settings)),
              4: list(zip(prompts([17, 1], seed=4), settings[:2]))}
  run_all(engine, arrivals)
  assert engine.compilations == before


def test_too_long_prompts_and_a_full_queue_are_refused(llama):
  model, params = llama
  engine = Engine(model, params, num_slots=1, max_queue=2, valid_vocab=VALID)
  with pytest.raises(PromptTooLong, match="context is 64"):
    engine.submit(np.zeros(64, np.int32), SamplingParams(max_tokens=1))
  for _ in range(3):  # one for the free slot, two for the queue
    engine.submit(np.zeros(3, np.int32), SamplingParams(max_tokens=1))
  with pytest.raises(QueueFull):
    engine.submit(np.zeros(3, np.int32), SamplingParams(max_tokens=1))
