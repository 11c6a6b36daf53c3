"""Direct preference optimisation (task.name=dpo): the policy learns from preference pairs
directly, held to a frozen reference policy by beta (Rafailov et al. 2023).

With log-ratios rho = log pi(y|x) - log pi_ref(y|x) summed over each response's tokens,

    margin = rho_chosen - rho_rejected
    sigmoid: loss = -(1 - eps) log sigmoid(beta margin) - eps log sigmoid(-beta margin)
             (eps = dpo.label_smoothing: conservative DPO; eps = 0 is DPO)
    ipo:     loss = (margin - 1 / (2 beta))^2 with rho averaged over each response's tokens

so at the first step, when the policy is the reference, margin = 0 and the DPO loss is log 2.
Implicit rewards are beta * rho. The reference is the run's starting checkpoint
(`dpo.reference_workdir`, default `init.workdir`), or with LoRA the base weights themselves
(adapters off): no second copy of the model is held. With `dpo.precompute_reference` the
reference checkpoint scores every pair once before training; its log-probs become columns
of the pair rows ("ref_chosen", "ref_rejected"), and a batch that carries them uses them
instead of a reference forward, so no reference is held or run while training.

Batches are preference pairs (gptjax.data.preferences); metrics["weight"] counts pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import frozen as frozen_lib, logprobs, lora, losses, sharding
from gptjax.errors import UserError
from gptjax.tasks.lm import LMTask

LOSSES = ("sigmoid", "ipo")


def preference_loss(margin_B, beta: float, kind: str = "sigmoid", label_smoothing: float = 0.0):
  """Per-pair DPO (sigmoid, with conservative label smoothing) or IPO loss of the margin."""
  if kind == "ipo":
    return (margin_B - 1.0 / (2.0 * beta)) ** 2
  return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * margin_B)
          - label_smoothing * jax.nn.log_sigmoid(-beta * margin_B))


def pair_logprobs(model, params, batch, rng=None, chunk: int = 0, average: bool = False):
  """(chosen, rejected) sequence log-probs [B] of the responses, in one forward over both;
  `average` divides each by its response length (IPO)."""
  B = batch["chosen"].shape[0]
  tokens = jnp.concatenate([batch["chosen"], batch["rejected"]])
  mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
  logp_2B = logprobs.sequence_logprobs(model, params, tokens, mask, rng=rng, chunk=chunk)
  if average:
    logp_2B = logp_2B / jnp.maximum(mask.sum(axis=1), 1.0)
  return logp_2B[:B], logp_2B[B:]


class DPOTask(LMTask):
  weight_unit = "pairs"
  perplexity_of = ""

  def __init__(self, config):
    super().__init__(config)
    if config.dpo.loss not in LOSSES:
      raise UserError(f"dpo.loss={config.dpo.loss!r} is not one of {LOSSES}")
    if not 0.0 <= config.dpo.label_smoothing < 0.5 or config.dpo.beta <= 0:
      raise UserError("need dpo.beta > 0 and 0 <= dpo.label_smoothing < 0.5")
    self.reference = None  # the reference's module, when it is another checkpoint
    self.data = None

  def datasets(self, tokenizer=None):
    from gptjax.data.preferences import make_preference_datasets
    self.data = make_preference_datasets(self.config, tokenizer=tokenizer)
    return self._keep_tokenizer(self.data)

  def _score(self, model, params, batch, rng=None):
    return pair_logprobs(model, params, batch, rng, self.config.task.loss_chunk,
                         average=self.config.dpo.loss == "ipo")

  def init_frozen(self, mesh):
    cfg = self.config
    if self.model.cfg.lora_rank and not cfg.dpo.precompute_reference:
      return None  # the policy's own base weights, adapters off
    flag = ("--config.dpo.reference_workdir" if cfg.dpo.reference_workdir
            else "--config.init.workdir")
    step = cfg.dpo.reference_step if cfg.dpo.reference_workdir else cfg.init.step
    loaded = frozen_lib.load(cfg.dpo.reference_workdir or cfg.init.workdir, step, mesh,
                             f"{flag} (the DPO reference policy)")
    frozen_lib.require_same_tokenizer(loaded, self.tokenizer, flag)
    if cfg.dpo.precompute_reference and self.data is not None:  # (None: a shape-only run)
      for rows in self.data.rows.values():
        rows["ref_chosen"], rows["ref_rejected"] = self._score_rows(loaded, rows, mesh)
      return None  # the reference is dropped here: batches carry its log-probs
    self.reference = loaded.model
    return {"reference": loaded.params}

  def _score_rows(self, loaded, rows: dict, mesh):
    """The (chosen, rejected) log-probs [N] of the `loaded` model for every pair of `rows`,
    in global batches of data.eval_batch_size (each process scores a contiguous share)."""
    from jax.experimental import multihost_utils
    n, size = len(rows["index"]), self.config.data.eval_batch_size
    share = size // jax.process_count()
    score = jax.jit(lambda params, batch: jnp.stack(self._score(loaded.model, params, batch), 1))
    out = []
    for first in range(0, n, size):
      index = np.minimum(first + jax.process_index() * share + np.arange(share), n - 1)
      batch = {k: rows[k][index] for k in ("chosen", "rejected", "chosen_mask", "rejected_mask")}
      with sharding.rules_context(mesh):
        both = score(loaded.params, sharding.shard_batch(batch, mesh))
      out.append(np.asarray(multihost_utils.process_allgather(both, tiled=True)))
    both = np.concatenate(out)[:n].astype(np.float32)
    return both[:, 0], both[:, 1]

  def reference_logprobs(self, params, batch, frozen):
    """The frozen reference's (chosen, rejected) log-probs: precomputed ones when the batch
    carries them, else a forward of the reference (or of the base weights under LoRA)."""
    if "ref_chosen" in batch:
      return batch["ref_chosen"], batch["ref_rejected"]
    if frozen is None:
      return self._score(self.model, lora.without_adapters(params), batch)
    return self._score(self.reference, frozen["reference"], batch)

  def loss(self, params, batch, rng, frozen):
    cfg = self.config.dpo
    chosen_B, rejected_B = self._score(self.model, params, batch, rng)
    ref_chosen_B, ref_rejected_B = jax.lax.stop_gradient(
        self.reference_logprobs(params, batch, frozen))
    rho_chosen_B, rho_rejected_B = chosen_B - ref_chosen_B, rejected_B - ref_rejected_B
    margin_B = rho_chosen_B - rho_rejected_B
    valid_B = batch["chosen_mask"].sum(axis=1) > 0  # held-out padding rows count nothing
    loss, weight = losses.masked_mean(
        preference_loss(margin_B, cfg.beta, cfg.loss, cfg.label_smoothing), valid_B)
    mean = lambda x: losses.masked_mean(x, valid_B)[0]
    return loss, {"loss": loss, "accuracy": mean(margin_B > 0),
                  "reward_chosen": mean(cfg.beta * rho_chosen_B),
                  "reward_rejected": mean(cfg.beta * rho_rejected_B),
                  "margin": mean(cfg.beta * margin_B), "weight": weight}
