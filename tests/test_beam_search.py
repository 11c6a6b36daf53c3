"""Beam search: one beam is greedy decoding; batched == one prompt at a time; with beams
enough to keep every hypothesis it finds the exhaustive search's best, score included."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import rollout
from gptjax.beam_search import beam_search
from gptjax.model import GPT, GPTConfig

STOP = 3
PROMPTS = [[5, 9, 2, 11], [7], [1, 2, 3, 4, 5, 6, 7], [20, 21]]


def _model(vocab, seed=0):
  model = GPT(GPTConfig(vocab_size=vocab, num_layers=2, num_heads=2, embed_dim=32, max_len=32))
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"])
  return model, params


def _text(tokens, length):
  return tokens[:length].tolist()


def test_one_beam_is_greedy_decoding():
  model, params = _model(37)
  # A bias towards the stop token, so that some rows stop early and some run to the end.
  params["wte"] = params["wte"].at[STOP].multiply(4.0)
  prompt, pad = rollout.left_padded(PROMPTS, 7)
  tokens, lengths, _ = beam_search(model, params, prompt, pad, beams=1, max_new_tokens=12,
                                   stop_id=STOP)
  greedy, _, greedy_lengths = rollout.sample(model, params, jnp.asarray(prompt),
                                             jax.random.key(0), max_new_tokens=12,
                                             left_pad_B=jnp.asarray(pad), temperature=0.0,
                                             stop_id=STOP)
  np.testing.assert_array_equal(lengths, np.asarray(greedy_lengths))
  for b in range(len(PROMPTS)):
    assert _text(tokens[b], lengths[b]) == _text(np.asarray(greedy[b]), lengths[b])
  assert 1 < len(set(lengths.tolist()))  # both kinds of row were exercised


@pytest.mark.parametrize("length_penalty", [1.0])
def test_batched_beams_equal_one_prompt_at_a_time(length_penalty):
  model, params = _model(37, seed=1)
  params["wte"] = params["wte"].at[STOP].multiply(3.0)
  prompt, pad = rollout.left_padded(PROMPTS, 7)
  kwargs = dict(beams=4, max_new_tokens=10, stop_id=STOP, length_penalty=length_penalty)
  tokens, lengths, scores = beam_search(model, params, prompt, pad, **kwargs)
  for b, p in enumerate(PROMPTS):
    one, one_len, one_score = beam_search(model, params, np.asarray([p]), np.zeros(1), **kwargs)
    assert _text(tokens[b], lengths[b]) == _text(one[0], one_len[0])
    assert scores[b] == pytest.approx(one_score[0], abs=1e-4)


def _sequence_logp(model, params, prompt, continuation, vocab):
  ids = np.asarray([prompt + continuation])
  logits = model.apply({"params": params}, ids[:, :-1])[0, len(prompt) - 1:]
  logp = jax.nn.log_softmax(logits[:, :vocab].astype(jnp.float32), axis=-1)
  return float(sum(logp[t, c] for t, c in enumerate(continuation)))


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_enough_beams_find_the_exhaustive_best(length_penalty):
  vocab, steps = 4, 3  # token 3 stops; every hypothesis of up to 3 tokens fits in 40 beams
  model, params = _model(vocab, seed=2)
  prompt = [1, 2, 0]
  candidates = [list(c) + [STOP] for n in range(steps) for c in
                itertools.product([0, 1, 2], repeat=n)]
  candidates += [list(c) for c in itertools.product([0, 1, 2], repeat=steps)]
  scored = [(_sequence_logp(model, params, prompt, c, vocab) / (len(c) ** length_penalty), c)
            for c in candidates]
  best_score, best = max(scored)
  tokens, lengths, scores = beam_search(model, params, np.asarray([prompt]), np.zeros(1),
                                        beams=40, max_new_tokens=steps, stop_id=STOP,
                                        length_penalty=length_penalty, valid_vocab=vocab)
  assert _text(tokens[0], lengths[0]) == best
  assert scores[0] == pytest.approx(best_score, abs=1e-4)
