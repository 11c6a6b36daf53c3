"""Splash attention (the TPU flash kernel) == XLA attention, run in Pallas's interpreter on CPU."""

import dataclasses
import logging

import jax
import ml_collections
import numpy as np
import pytest

from gptjax import attention, sharding, splash, state as state_lib
from gptjax.config import base_config
from gptjax.model import GPT, GPTConfig
from gptjax.tasks.lm import LMTask

T = 128  # the shortest sequence splash tiles (one 128 block)


def qkv(heads, kv_heads, seq_len=T, batch=2, head_dim=16):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (batch, seq_len, heads, head_dim)),
          jax.random.normal(keys[1], (batch, seq_len, kv_heads, head_dim)),
          jax.random.normal(keys[2], (batch, seq_len, kv_heads, head_dim)))


def xla_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


@pytest.mark.parametrize("heads,kv_heads,seq_len", [(4, 4, T), (4, 2, T), (2, 1, 2 * T)])
def test_splash_equals_xla_forward_and_backward(heads, kv_heads, seq_len):
  q, k, v = qkv(heads, kv_heads, seq_len)
  np.testing.assert_allclose(splash.causal_attention(q, k, v), xla_attention(q, k, v),
                             atol=2e-5)
  weights = jax.random.normal(jax.random.key(1), q.shape)  # a loss that weighs every output
  grads = [jax.grad(lambda *a: (f(*a) * weights).sum(), argnums=(0, 1, 2))(q, k, v)
           for f in (splash.causal_attention, xla_attention)]
  for got, want in zip(*grads):
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_splash_tiles_each_length_with_its_largest_block():
  assert [splash.block_for(n) for n in (128, 256, 384, 1024, 100)] == [128, 256, 128, 512, None]


def test_resolve_picks_splash_on_tpu_only_where_it_applies(caplog):
  assert attention.resolve("auto", "bfloat16", 128, "tpu", seq_len=2048) == "splash"
  assert attention.resolve("auto", "bfloat16", 128, "gpu", seq_len=2048) == "cudnn"
  assert attention.resolve("auto", "bfloat16", 128, "tpu", seq_len=100) == "xla"
  with caplog.at_level(logging.WARNING):
    assert attention.resolve("splash", "float32", 64, "cpu", seq_len=256) == "xla"
  assert "not a TPU" in caplog.text


CFG = GPTConfig(vocab_size=64, num_layers=2, num_heads=4, embed_dim=64, max_len=T,
                attention="splash")


def loss_and_grads(cfg, mesh_shape):
  mesh = sharding.make_mesh(ml_collections.ConfigDict(
      dict(zip(("data", "fsdp", "tensor"), mesh_shape))))
  model = GPT(cfg)
  task = LMTask(base_config())
  task.bind(model)
  _, shardings = state_lib.abstract_params(model, mesh)
  params = state_lib.init_params(model, mesh, shardings, seed=0)
  tokens = np.asarray(jax.random.randint(jax.random.key(2), (4, T + 1), 0, 64), np.int32)
  fn = jax.jit(jax.value_and_grad(lambda p, b: task.loss(p, b, None, None)[0]))
  with sharding.rules_context(mesh):
    lowered = fn.lower(params, sharding.shard_batch({"tokens": tokens}, mesh))
    loss, grads = fn(params, sharding.shard_batch({"tokens": tokens}, mesh))
  return jax.device_get(loss), jax.device_get(grads), lowered.as_text()


@pytest.mark.parametrize("mesh_shape,kv_heads", [((2, 2, 2), 0), ((1, 4, 2), 2)])
def test_model_with_splash_on_a_mesh_equals_xla(mesh_shape, kv_heads):
  """The whole model, sharded (batch over data/fsdp, heads over tensor), as a TPU would run
  it: loss and gradients equal the XLA model's, and the kernel really is in the program."""
  cfg = dataclasses.replace(CFG, num_kv_heads=kv_heads)
  with attention.compiling_for("tpu"):
    loss, grads, text = loss_and_grads(cfg, mesh_shape)
  ref_loss, ref_grads, ref_text = loss_and_grads(dataclasses.replace(cfg, attention="xla"),
                                                 mesh_shape)
  assert "shard_map" in text or "sdy.manual_computation" in text
  assert "manual_computation" not in ref_text and "shard_map" not in ref_text
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
                         grads, ref_grads)


def test_a_mesh_that_cannot_split_the_heads_falls_back_to_xla(caplog):
  """4 heads over tensor=8: shard_map cannot split them, so the model keeps XLA, says why,
  and still computes the same attention."""
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=8)))
  q, k, v = qkv(4, 4, batch=1)
  with sharding.rules_context(mesh), caplog.at_level(logging.WARNING):
    assert splash.mesh_unsupported_reason(1, 4, 4) is not None
    assert splash.mesh_unsupported_reason(1, 8, 8) is None
    with attention.compiling_for("tpu"):
      text = jax.jit(lambda *a: attention.causal(*a, "splash", "float32")).lower(q, k, v).as_text()
  assert "do not divide over the mesh" in caplog.text
  assert "manual_computation" not in text and "shard_map" not in text
