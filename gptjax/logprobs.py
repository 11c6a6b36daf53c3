"""The one per-token log-prob function: the LM loss, DPO, GRPO, the sampler's record of what
it drew and the evaluators all score tokens through it, so they agree to the last bit.

    logp_BT = token_logprobs(model, params, inputs_BT, targets_BT)

`temperature` divides the logits first (an RL ratio must use the distribution that was
sampled), `valid_vocab` gives the table's padding ids no mass (the sampler never draws
them), `chunk` computes the output layer `chunk` positions at a time so float32 logits
[B, T, V] never exist whole, and `segment_ids` keep packed or left-padded sequences apart.
"""

from __future__ import annotations

import jax

from gptjax import losses


def forward_hidden(model, params, inputs_BT, rng=None, segment_ids=None):
  """(final hidden states [B, T, D], output head [D, V]); dropout on when `rng` is given."""
  rngs = None if rng is None else {"dropout": rng}
  return model.apply({"params": params}, inputs_BT, deterministic=rng is None, rngs=rngs,
                     segment_ids=segment_ids, return_hidden=True)


def token_logprobs(model, params, inputs_BT, targets_BT, *, rng=None, segment_ids=None,
                   chunk: int = 0, temperature: float = 1.0, valid_vocab: int = 0,
                   with_hits: bool = False):
  """log p(targets_BT[b, t] | inputs_BT[b, :t+1]) in float32 [B, T]; with `with_hits` also
  whether each target is the top-1 prediction (1.0 / 0.0)."""
  hidden_BTD, head_DV = forward_hidden(model, params, inputs_BT, rng, segment_ids)

  def score(h_BtD, t_Bt):
    logits_BtV = losses.logits_from_hidden(h_BtD, head_DV)
    logp_Bt = losses.token_logprobs(logits_BtV, t_Bt, temperature, valid_vocab)
    return (logp_Bt, losses.accuracy(logits_BtV, t_Bt)) if with_hits else logp_Bt

  if chunk:
    return losses.map_over_length(score, chunk, hidden_BTD, targets_BT)
  return score(hidden_BTD, targets_BT)


def sequence_logprobs(model, params, tokens_BT1, mask_BT, **kwargs) -> jax.Array:
  """Sum of log p over the masked targets of each row of tokens [B, T+1]: float32 [B]."""
  logp_BT = token_logprobs(model, params, tokens_BT1[:, :-1], tokens_BT1[:, 1:], **kwargs)
  return (logp_BT * mask_BT).sum(axis=-1)
