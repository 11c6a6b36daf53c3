"""Train state born sharded: eval_shape -> logical specs -> mesh shardings -> jitted init.

No array is ever materialised on one device and then split, so a model that only fits
sharded can still be created; the same abstract, sharded state is the target checkpoints
restore onto (on any mesh).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gptjax import sharding
from gptjax.model import GPT
from gptjax.trainable import select


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _dummy_tokens(model: GPT, mesh) -> jax.Array:
  # One row per data shard, so activation sharding constraints divide evenly during init;
  # a whole context, so init traces the kernels training uses (XLA drops the unused forward).
  return jnp.zeros((sharding.batch_divisor(mesh), model.cfg.max_len), jnp.int32)


def abstract_params(model: GPT, mesh, replicate_indivisible: bool = False):
  """(unboxed abstract params, their shardings)."""
  # The dummy tokens are made inside eval_shape, so they are shapes only: a context of a
  # billion positions (a hostile config) costs nothing before it is compared with the arrays.
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                            _dummy_tokens(model, mesh))["params"])
  return nn.unbox(boxed), sharding.param_shardings(mesh, boxed, replicate_indivisible)


def state_shardings(tx: optax.GradientTransformation, params_abstract, params_shardings, mesh,
                    mask=None):
  """Optimizer moments follow their parameter's sharding; counters are replicated. The
  optimizer sees only the trainable parameters (`mask`, gptjax.trainable)."""
  opt_abstract = jax.eval_shape(tx.init, select(params_abstract, mask))
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, opt_abstract, select(params_shardings, mask),
      transform_non_params=lambda _: sharding.replicated(mesh))
  return TrainState(step=sharding.replicated(mesh), params=params_shardings,
                    opt_state=opt_shardings)


def abstract_state(tx, params_abstract, mask=None):
  return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params_abstract,
                    opt_state=jax.eval_shape(tx.init, select(params_abstract, mask)))


def init_params(model: GPT, mesh, params_shardings, seed: int):
  def init(rng):
    return nn.unbox(model.init(rng, _dummy_tokens(model, mesh))["params"])
  with sharding.rules_context(mesh):
    return jax.jit(init, out_shardings=params_shardings)(jax.random.key(seed))


def init_state(model: GPT, tx, mesh, shardings: TrainState, seed: int, mask=None,
               params=None) -> TrainState:
  """A fresh state; `params` (already on `shardings.params`) replaces the random init."""
  if params is None:
    params = init_params(model, mesh, shardings.params, seed)
  opt_state = jax.jit(lambda p: tx.init(select(p, mask)),
                      out_shardings=shardings.opt_state)(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, opt_state=opt_state)
