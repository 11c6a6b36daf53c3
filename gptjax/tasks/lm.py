"""Next-token prediction on packed windows: the pretraining objective.

A batch is {"tokens": int32[B, T+1]} with optional "mask" (float[B, T], which targets count)
and "segment_ids" (int32[B, T], documents the attention must keep apart). SFT is this same
loss over conversation batches whose mask covers the assistant turns (tasks/sft.py).
"""

from __future__ import annotations

from gptjax import logprobs, losses


def token_losses(model, params, inputs_BT, targets_BT, rng, loss_chunk: int = 0,
                 segment_ids_BT=None):
  """Per-token next-token loss (-log p, gptjax.logprobs) and top-1 hit; dropout on when
  `rng` is given; segment ids keep packed documents apart."""
  logp_BT, hit_BT = logprobs.token_logprobs(model, params, inputs_BT, targets_BT, rng=rng,
                                            segment_ids=segment_ids_BT, chunk=loss_chunk,
                                            with_hits=True)
  return -logp_BT, hit_BT


class LMTask:
  weight_unit = "tokens"
  perplexity_of = "loss"
  rollout = None  # RL tasks: (params, prompts, frozen, step) -> (batch, host metrics)
  updates_per_rollout = 1

  def __init__(self, config):
    self.config = config
    self.model = None
    self.tokenizer = None  # the run's, once datasets() has built it

  def datasets(self, tokenizer=None):
    from gptjax.data import make_lm_datasets
    return self._keep_tokenizer(make_lm_datasets(self.config, tokenizer=tokenizer))

  def _keep_tokenizer(self, datasets):
    self.tokenizer = datasets.tokenizer
    return datasets

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
