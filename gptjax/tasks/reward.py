"""Reward model from preference pairs (task.name=reward): a scalar per response, trained so
the chosen response outscores the rejected one (Bradley-Terry).

The model is the GPT backbone with `model.score_head=True`: a vector w read against the final
hidden state of the response's last token (its end-of-turn token), r = h . w. Per pair:

    loss = -log sigmoid(r_chosen - r_rejected - reward.margin)
           + reward.center_coef * (r_chosen + r_rejected)^2     (keeps rewards centred on 0)

Batches are preference pairs (gptjax.data.preferences); metrics["weight"] counts pairs, so
held-out accuracy and margin are means over every pair of the split. The run starts from an
SFT checkpoint (`init.workdir`: the head starts fresh); its checkpoint is what GRPO loads as
a reward (`grpo.reward_workdir`), through `sequence_rewards`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gptjax import logprobs, losses
from gptjax.errors import UserError
from gptjax.tasks.lm import LMTask


def last_token_index(mask_BT) -> jax.Array:
  """Input index of each row's last trained target: the response's final token, which the
  inputs hold one position later than the targets. int32 [B]."""
  T = mask_BT.shape[1]
  last_B = jnp.max(jnp.where(mask_BT > 0, jnp.arange(1, T + 1), 0), axis=1)
  return jnp.minimum(last_B, T - 1)


def sequence_rewards(model, params, inputs_BT, last_B, segment_ids=None, rng=None):
  """The reward model's scalar for each row, read at input position last_B: float32 [B]."""
  if "score_head" not in params:
    raise UserError("this model has no reward head: a reward model is trained with "
                    "task.name=reward (model.score_head=True)")
  hidden_BTD, _ = logprobs.forward_hidden(model, params, inputs_BT, rng, segment_ids)
  h_BD = jnp.take_along_axis(hidden_BTD, last_B[:, None, None], axis=1)[:, 0]
  return jnp.einsum("bd,d->b", h_BD.astype(jnp.float32), params["score_head"])


def pair_loss(chosen_B, rejected_B, margin: float, center_coef: float):
  """Bradley-Terry negative log-likelihood per pair (plus the centring penalty)."""
  loss_B = -jax.nn.log_sigmoid(chosen_B - rejected_B - margin)
  return loss_B + center_coef * (chosen_B + rejected_B) ** 2


class RewardTask(LMTask):
  weight_unit = "pairs"
  perplexity_of = ""

  def datasets(self, tokenizer=None):
    from gptjax.data.preferences import make_preference_datasets
    return self._keep_tokenizer(make_preference_datasets(self.config, tokenizer=tokenizer))

  def bind(self, model) -> None:
    if not model.cfg.score_head:
      raise UserError("task.name=reward needs --config.model.score_head=True (configs/reward.py "
                      "sets it)")
    super().bind(model)

  def loss(self, params, batch, rng, frozen):
    B = batch["chosen"].shape[0]
    tokens = jnp.concatenate([batch["chosen"], batch["rejected"]])  # one forward for both
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    r_2B = sequence_rewards(self.model, params, tokens[:, :-1], last_token_index(mask), rng=rng)
    chosen_B, rejected_B = r_2B[:B], r_2B[B:]
    cfg = self.config.reward
    valid_B = batch["chosen_mask"].sum(axis=1) > 0  # held-out padding rows count nothing
    mean = lambda x: losses.masked_mean(x, valid_B)[0]
    loss, weight = losses.masked_mean(pair_loss(chosen_B, rejected_B, cfg.margin,
                                                cfg.center_coef), valid_B)
    return loss, {"loss": loss, "accuracy": mean(chosen_B > rejected_B),
                  "margin": mean(chosen_B - rejected_B), "reward_chosen": mean(chosen_B),
                  "reward_rejected": mean(rejected_B), "weight": weight}
