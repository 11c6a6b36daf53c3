"""Next-token prediction on packed windows: the pretraining objective.

A batch is {"tokens": int32[B, T+1]} with optional "mask" (float[B, T], which targets count)
and "segment_ids" (int32[B, T], documents the attention must keep apart). SFT is this same
loss over conversation batches whose mask covers the assistant turns (tasks/sft.py).
"""

from __future__ import annotations

from gptjax import losses


def token_losses(model, params, inputs_BT, targets_BT, rng, loss_chunk: int = 0,
                 segment_ids_BT=None):
  """Per-token next-token loss and top-1 hit; dropout on when `rng` is given; segment ids
  keep packed documents apart."""
  rngs = None if rng is None else {"dropout": rng}
  kwargs = dict(deterministic=rng is None, rngs=rngs, segment_ids=segment_ids_BT)
  if loss_chunk:
    hidden, head = model.apply({"params": params}, inputs_BT, return_hidden=True, **kwargs)
    return losses.chunked_cross_entropy(hidden, head, targets_BT, loss_chunk)
  logits = model.apply({"params": params}, inputs_BT, **kwargs)
  return losses.token_cross_entropy(logits, targets_BT), losses.accuracy(logits, targets_BT)


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
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    loss_BT, hit_BT = token_losses(self.model, params, inputs, targets, rng,
                                   self.config.task.loss_chunk, batch.get("segment_ids"))
    loss, weight = losses.masked_mean(loss_BT, batch.get("mask"))
    acc, _ = losses.masked_mean(hit_BT, batch.get("mask"))
    return loss, {"loss": loss, "accuracy": acc, "weight": weight}

  def trainable(self, params):
    from gptjax.trainable import trainable_mask
    return trainable_mask(self.config, params)

  def evaluators(self) -> dict:
    return {}
