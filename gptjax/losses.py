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


def chunked_cross_entropy(hidden_BTD: jax.Array, head_DV: jax.Array, targets_BT: jax.Array,
                          chunk_len: int) -> tuple[jax.Array, jax.Array]:
  """Per-token (loss, top-1 hit) without ever holding float32 logits [B, T, V] at once.

  The output layer and the cross-entropy run over `chunk_len` positions at a time; each
  chunk is rematerialised in the backward pass, so peak memory holds one chunk's logits.
  Chunks cut the length axis, which is never sharded, so the batch sharding is kept.
  """
  B, T, D = hidden_BTD.shape
  if T % chunk_len:
    raise UserError(f"task.loss_chunk={chunk_len} must divide the sequence length {T}")
  hidden_CBtD = hidden_BTD.reshape(B, T // chunk_len, chunk_len, D).swapaxes(0, 1)
  targets_CBt = targets_BT.reshape(B, T // chunk_len, chunk_len).swapaxes(0, 1)

  @jax.checkpoint
  def chunk(args):
    h_BtD, t_Bt = args
    logits_BtV = jnp.einsum("btd,dv->btv", h_BtD, head_DV.astype(h_BtD.dtype),
                            preferred_element_type=jnp.float32)
    return token_cross_entropy(logits_BtV, t_Bt), accuracy(logits_BtV, t_Bt)

  loss_CBt, hit_CBt = jax.lax.map(chunk, (hidden_CBtD, targets_CBt))
  return loss_CBt.swapaxes(0, 1).reshape(B, T), hit_CBt.swapaxes(0, 1).reshape(B, T)
