"""Sharded == unsharded, and accumulated == large batch, on 8 simulated CPU devices."""

import functools

import jax
import ml_collections
import numpy as np
import optax
import pytest

from gptjax import sharding, state as state_lib
from gptjax.config import base_config
from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig
from gptjax.tasks.lm import LMTask
from gptjax.train import jit_train_step, make_train_step

CFG = GPTConfig(vocab_size=64, num_layers=2, num_heads=8, embed_dim=64, max_len=16)


def mesh_of(data, fsdp, tensor):
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)))


def lm_task(model):
  task = LMTask(base_config())
  task.bind(model)
  return task


def batch(n=16, seed=0, with_mask=False):
  tokens = np.asarray(jax.random.randint(jax.random.key(seed), (n, 17), 0, CFG.vocab_size),
                      np.int32)
  out = {"tokens": tokens}
  if with_mask:  # ragged masks: microbatches count different numbers of tokens
    lengths = np.random.RandomState(seed).randint(1, 17, size=n)
    out["mask"] = (np.arange(16)[None] < lengths[:, None]).astype(np.float32)
  return out


def loss_and_grads(mesh, layout=None):
  model = GPT(CFG if layout is None else GPTConfig(**{**CFG.__dict__, **layout}))
  task = lm_task(model)
  _, shardings = state_lib.abstract_params(model, mesh)
  params = state_lib.init_params(model, mesh, shardings, seed=0)
  data = sharding.shard_batch(batch(), mesh)
  fn = jax.jit(jax.value_and_grad(lambda p, b: task.loss(p, b, None, None)[0]))
  with sharding.rules_context(mesh):
    loss, grads = fn(params, data)
  return jax.device_get(loss), jax.device_get(grads), params


LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False,
             num_kv_heads=8, use_bias=False)
LAYOUTS = {"gpt2": None, "llama": LLAMA}


@functools.lru_cache
def single_device_reference(layout_name):
  single = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
  return loss_and_grads(single, LAYOUTS[layout_name])[:2]


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2), (1, 1, 8)])
def test_loss_and_grads_on_a_mesh_equal_single_device(shape, layout):
  ref_loss, ref_grads = single_device_reference(layout)
  loss, grads, params = loss_and_grads(mesh_of(*shape), LAYOUTS[layout])
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                         grads, ref_grads)
  if shape[2] == 8:  # tensor parallel really split the heads across devices
    assert params["block_0"]["attn"]["wq"].sharding.spec[1] == "tensor"
    assert len(params["block_0"]["attn"]["wq"].addressable_shards[0].data.shape) == 3
    assert params["block_0"]["attn"]["wq"].addressable_shards[0].data.shape[1] == 1
  if shape[1] == 4:  # FSDP split the model dimension
    assert params["wte"].addressable_shards[0].data.shape[1] == CFG.embed_dim // 4


def one_update(grad_accum, mesh, data):
  model = GPT(CFG)
  task = lm_task(model)
  tx = optax.sgd(1.0)  # linear in the gradient: Adam would amplify rounding in ~0 gradients
  params_abstract, params_shardings = state_lib.abstract_params(model, mesh)
  shardings = state_lib.state_shardings(tx, params_abstract, params_shardings, mesh)
  state = state_lib.init_state(model, tx, mesh, shardings, seed=0)
  step = jit_train_step(make_train_step(task, tx, grad_accum, 0, optax.constant_schedule(1e-2)),
                        mesh, shardings)
  with sharding.rules_context(mesh):
    state, metrics = step(state, sharding.shard_batch(data, mesh), None)
  return jax.device_get(state.params), jax.device_get(metrics)


@pytest.mark.parametrize("with_mask", [False, True], ids=["full", "masked"])
def test_grad_accumulation_equals_one_large_batch(with_mask):
  mesh = mesh_of(8, 1, 1)
  data = batch(n=32, with_mask=with_mask)
  big_params, big_metrics = one_update(1, mesh, data)
  acc_params, acc_metrics = one_update(4, mesh, data)
  np.testing.assert_allclose(acc_metrics["train/loss"], big_metrics["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(acc_metrics["train/grad_norm"], big_metrics["train/grad_norm"],
                             rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                         acc_params, big_params)


def test_mesh_errors_name_the_setting():
  with pytest.raises(UserError, match="mesh"):
    mesh_of(3, 1, 1)
  with pytest.raises(UserError, match="at most one"):
    mesh_of(-1, -1, 1)
  model = GPT(GPTConfig(vocab_size=64, num_layers=1, num_heads=4, embed_dim=64, max_len=16))
  with pytest.raises(UserError, match="cannot be split 8 ways"):
    state_lib.abstract_params(model, mesh_of(1, 1, 8))  # 4 heads over 8 tensor shards
