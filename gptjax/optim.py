"""Optimiser from config: AdamW, linear warm-up then cosine decay, global-norm clipping.

Weight decay applies to matrices and embeddings (ndim >= 2), never to biases or norm
scales, as in GPT-2/nanoGPT. The optimizer is given only the trainable parameters
(gptjax.trainable.select), so frozen ones have no state at all.
"""

from __future__ import annotations

import jax
import optax

from gptjax.errors import UserError


def decay_length(optim_cfg, total_steps: int) -> int:
  return optim_cfg.decay_steps or total_steps


def effective_warmup(optim_cfg, total_steps: int) -> int:
  """optim.warmup_steps, capped at half the decay length.

  A run shortened for a quick try (train.steps=30 under a 100-step warm-up) still reaches its
  peak and decays. No shipped config warms up for more than half its run, so none changes.
  """
  if optim_cfg.warmup_steps < 0:
    raise UserError(f"optim.warmup_steps must be >= 0, got {optim_cfg.warmup_steps}")
  return min(optim_cfg.warmup_steps, decay_length(optim_cfg, total_steps) // 2)


def learning_rate_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr,
      warmup_steps=effective_warmup(optim_cfg, total_steps),
      decay_steps=decay_length(optim_cfg, total_steps), end_value=optim_cfg.min_lr)


def decay_mask(params):
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  if optim_cfg.lr <= 0:
    raise UserError(f"optim.lr must be positive, got {optim_cfg.lr}")
  chain = []
  if optim_cfg.grad_clip:
    chain.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
  chain.append(optax.adamw(
      learning_rate_schedule(optim_cfg, total_steps), b1=optim_cfg.b1, b2=optim_cfg.b2,
      eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*chain)
