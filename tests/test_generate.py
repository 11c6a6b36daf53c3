"""Sampling: cached greedy decoding equals recomputing the full forward every step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.generate import generate
from gptjax.rollout import pick as sample_logits
from gptjax.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def model_and_params():
  cfg = GPTConfig(vocab_size=37, num_layers=2, num_heads=4, embed_dim=32, max_len=16)
  model = GPT(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"])
  return model, params


def greedy_without_cache(model, params, prompt, n):
  """The slow reference: full forward over the (cropped) context for every new token."""
  tokens = list(prompt)
  forward = jax.jit(lambda t: model.apply({"params": params}, t))
  for _ in range(n):
    context = np.asarray(tokens[-model.cfg.max_len:])[None]
    tokens.append(int(np.argmax(forward(context)[0, -1])))
  return tokens[len(prompt):]


def test_greedy_generation_with_cache_equals_full_forward(model_and_params):
  model, params = model_and_params
  prompt = np.asarray([[3, 1, 4, 1, 5]], np.int32)
  out = generate(model, params, prompt, 10, jax.random.key(0), temperature=0.0)
  assert out.shape == (1, 10)
  assert out[0].tolist() == greedy_without_cache(model, params, prompt[0].tolist(), 10)


def test_generation_longer_than_the_context_slides_the_window(model_and_params):
  model, params = model_and_params
  prompt = np.asarray([[2, 7]], np.int32)
  out = generate(model, params, prompt, 30, jax.random.key(0), temperature=0.0)  # > max_len 16
  assert out.shape == (1, 30)
  # Exactly equal to the reference up to the first slide; afterwards the cache is rebuilt
  # from the last half-context, which the reference's crop does not do token for token.
  assert out[0, :14].tolist() == greedy_without_cache(model, params, [2, 7], 14)


def test_sampling_filters():
  logits = jnp.asarray([[0.0, 3.0, 1.0, 2.5]])
  keys = [jax.random.key(i) for i in range(50)]
  top1 = {int(sample_logits(logits, k, 1.0, 1, 1.0)[0]) for k in keys}
  assert top1 == {1}
  top2 = {int(sample_logits(logits, k, 1.0, 2, 1.0)[0]) for k in keys}
  assert top2 == {1, 3}
  nucleus = {int(sample_logits(logits, k, 1.0, 0, 0.3)[0]) for k in keys}  # p(1) ~ 0.55
  assert nucleus == {1}
  assert int(sample_logits(logits, keys[0], 0.0, 0, 1.0)[0]) == 1  # greedy


def test_padded_vocabulary_is_never_sampled(model_and_params):
  model, params = model_and_params
  out = generate(model, params, np.asarray([[1, 2]], np.int32), 40, jax.random.key(1),
                 temperature=5.0, valid_vocab=5)
  assert out.max() < 5


def test_bad_sampling_settings_are_clear_errors(model_and_params):
  model, params = model_and_params
  with pytest.raises(UserError, match="top_p"):
    generate(model, params, np.asarray([[1]], np.int32), 3, jax.random.key(0), top_p=0.0)
  with pytest.raises(UserError, match="max_new_tokens"):
    generate(model, params, np.asarray([[1]], np.int32), 0, jax.random.key(0))
