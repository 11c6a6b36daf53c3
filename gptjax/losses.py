"""Pure loss functions shared by tasks. Reductions happen in float32."""

import jax
import jax.numpy as jnp

from gptjax.errors import UserError


def token_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """Per-token next-token loss in nats, float32: logsumexp(logits) - logits[target]."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  log_z_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return log_z_BT - target_logit_BT


def masked_mean(values: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """(mean over mask, number of counted elements); mask None counts everything."""
  values = values.astype(jnp.float32)
  if mask is None:
    return values.mean(), jnp.asarray(values.size, jnp.float32)
  mask = mask.astype(jnp.float32)
  count = mask.sum()
  return (values * mask).sum() / jnp.maximum(count, 1.0), count


def accuracy(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """Per-token top-1 hit (1.0 or 0.0)."""
  return (jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32)


def token_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array, temperature: float = 1.0,
                   valid_vocab: int = 0) -> jax.Array:
  """log p(target) in float32 under softmax(logits / temperature); ids >= `valid_vocab` (the
  padding of the table; 0 = none) get no mass, as the sampler gives them none."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  if temperature != 1.0:
    logits_BTV = logits_BTV / temperature
  if valid_vocab and valid_vocab < logits_BTV.shape[-1]:
    logits_BTV = jnp.where(jnp.arange(logits_BTV.shape[-1]) < valid_vocab, logits_BTV, -jnp.inf)
  return -token_cross_entropy(logits_BTV, targets_BT)


def map_over_length(fn, chunk_len: int, *arrays):
  """fn(*chunks) -> pytree of [B, t] arrays, run over `chunk_len` positions at a time of
  arrays [B, T, ...] and concatenated back to [B, T]. Each chunk is rematerialised in the
  backward pass, so whatever fn builds inside (float32 logits [B, t, V]) exists for one chunk
  at a time. Chunks cut the length axis, which is never sharded, so the batch sharding holds."""
  B, T = arrays[0].shape[:2]
  if T % chunk_len:
    raise UserError(f"task.loss_chunk={chunk_len} must divide the sequence length {T}")
  split = lambda x: x.reshape(B, T // chunk_len, chunk_len, *x.shape[2:]).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(lambda xs: fn(*xs)), tuple(split(x) for x in arrays))
  return jax.tree_util.tree_map(lambda y: y.swapaxes(0, 1).reshape(B, T), out)


def logits_from_hidden(hidden_BTD: jax.Array, head_DV: jax.Array) -> jax.Array:
  """The output layer in float32 accumulation: what GPT.__call__ computes after ln_f."""
  return jnp.einsum("btd,dv->btv", hidden_BTD, head_DV.astype(hidden_BTD.dtype),
                    preferred_element_type=jnp.float32)


def chunked_cross_entropy(hidden_BTD: jax.Array, head_DV: jax.Array, targets_BT: jax.Array,
                          chunk_len: int) -> tuple[jax.Array, jax.Array]:
  """Per-token (loss, top-1 hit) without ever holding float32 logits [B, T, V] at once."""
  def chunk(h_BtD, t_Bt):
    logits_BtV = logits_from_hidden(h_BtD, head_DV)
    return token_cross_entropy(logits_BtV, t_Bt), accuracy(logits_BtV, t_Bt)
  return map_over_length(chunk, chunk_len, hidden_BTD, targets_BT)
