"""Chunked cross-entropy equals the full one, in value and gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.config import base_config
from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig
from gptjax.tasks.lm import LMTask


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_and_grads_equal_the_full_loss(tied):
  cfg = GPTConfig(vocab_size=97, num_layers=1, num_heads=2, embed_dim=16, max_len=32,
                  tie_embeddings=tied)
  model = GPT(cfg)
  tokens = jax.random.randint(jax.random.key(0), (4, 33), 0, 97)
  params = nn.unbox(model.init(jax.random.key(1), tokens[:, :-1])["params"])
  mask = (jnp.arange(32)[None] < jnp.asarray([[32], [5], [17], [1]])).astype(jnp.float32)
  batch = {"tokens": tokens, "mask": mask}

  def loss_fn(chunk):
    config = base_config()
    config.task.loss_chunk = chunk
    task = LMTask(config)
    task.bind(model)
    return jax.jit(jax.value_and_grad(lambda p: task.loss(p, batch, None, None)[0]))

  full_loss, full_grads = loss_fn(0)(params)
  chunk_loss, chunk_grads = loss_fn(8)(params)
  np.testing.assert_allclose(chunk_loss, full_loss, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                         chunk_grads, full_grads)


def test_chunk_must_divide_the_length():
  from gptjax.losses import chunked_cross_entropy
  with pytest.raises(UserError, match="task.loss_chunk=5"):
    chunked_cross_entropy(jnp.zeros((1, 8, 4)), jnp.zeros((4, 3)), jnp.zeros((1, 8), int), 5)
