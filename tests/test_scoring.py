"""Whole-text log-likelihood: equal to the per-token log-probs of a plain forward pass,
batched == one at a time, continuation == text minus context."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.data.tokenizers import CharTokenizer
from gptjax.errors import UserError
from gptjax.evals import scoring
from gptjax.load import Loaded, one_device_mesh
from gptjax.model import GPT, GPTConfig

TEXTS = ["the cat sat.", "a dog ran far away from the old house.", "hi", "the cat sat!",
         "x" * 40, "the end"]


@pytest.fixture(scope="module")
def loaded():
  tokenizer = CharTokenizer("\n abcdefghijklmnopqrstuvwxyz.!")
  model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, num_layers=2, num_heads=2,
                        embed_dim=32, max_len=64))
  params = nn.unbox(model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
  return Loaded(config=None, model=model, params=params, tokenizer=tokenizer,
                mesh=one_device_mesh(), step=0)


def _by_hand(loaded, text):
  ids = np.asarray(scoring.document_start(loaded.tokenizer) + list(loaded.tokenizer.encode(text)))
  logits = jax.jit(loaded.model.apply)({"params": loaded.params}, ids[None, :-1])[0]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return float(logp[np.arange(len(ids) - 1), ids[1:]].sum()), len(ids) - 1


def test_a_text_scores_the_sum_of_its_forward_pass_log_probs(loaded):
  scores = scoring.score_texts(loaded, TEXTS, batch_size=4)  # two length buckets, two batches
  for text, (total, count) in zip(TEXTS, scores):
    expected, tokens = _by_hand(loaded, text)
    assert count == tokens == len(text)  # the "\n" start scores the first character
    assert total == pytest.approx(expected, abs=1e-4)
  alone = np.concatenate([scoring.score_texts(loaded, [t], batch_size=1) for t in TEXTS])
  np.testing.assert_allclose(scores, alone, atol=1e-5)


def test_a_continuation_scores_the_text_minus_its_context(loaded):
  pairs = [("the cat", " sat."), ("a dog ran", " far away")]
  both = scoring.score_continuations(loaded, pairs)
  full = scoring.score_texts(loaded, [c + x for c, x in pairs])
  head = scoring.score_texts(loaded, [c for c, _ in pairs])
  np.testing.assert_allclose(both[:, 0], full[:, 0] - head[:, 0], atol=1e-4)
  assert both[:, 1].tolist() == [5, 9]


def test_a_text_longer_than_the_context_is_refused(loaded):
  with pytest.raises(UserError, match="69 tokens does not fit the model's context of 64"):
    scoring.score_texts(loaded, ["a" * 69])
