"""Pure loss functions shared by tasks. Reductions happen in float32."""

import jax
import jax.numpy as jnp


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
