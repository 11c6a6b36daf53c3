"""Next-token prediction on packed windows: the pretraining objective."""

from __future__ import annotations

import jax

from gptjax import losses


class LMTask:

  def __init__(self, config):
    self.config = config
    self.model = None

  def datasets(self, tokenizer=None):
    from gptjax.data import make_lm_datasets
    return make_lm_datasets(self.config, tokenizer=tokenizer)

  def bind(self, model) -> None:
    self.model = model

  def init_frozen(self, mesh):
    return None

  def loss(self, params, batch, rng, frozen):
    """batch: tokens int32[B, T+1], optional mask float[B, T] (0 = padding, not counted)."""
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    rngs = None if rng is None else {"dropout": rng}
    logits = self.model.apply({"params": params}, inputs, deterministic=rng is None, rngs=rngs)
    loss, weight = losses.masked_mean(losses.token_cross_entropy(logits, targets),
                                      batch.get("mask"))
    acc, _ = losses.masked_mean(losses.accuracy(logits, targets), batch.get("mask"))
    return loss, {"loss": loss, "accuracy": acc, "weight": weight}

  def trainable(self, params):
    return None

  def evaluators(self) -> dict:
    return {}
