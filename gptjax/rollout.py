"""Batched sampling with a KV cache, traceable inside jit: the one generation path.

`gptjax-sample` (gptjax.generate), RL rollouts (tasks/grpo.py) and evaluators call
`sample`. Prompts are left-padded to one length P (`left_pad` counts each row's padding),
so a batch of prompts of different lengths decodes in lock-step: one prefill of P tokens,
then one token a step. Each drawn token's log-prob under the distribution it was drawn from
(softmax of logits / temperature over the real vocabulary) is recorded with the same
function the trainer scores tokens with (gptjax.losses.token_logprobs), so an RL ratio is
exactly 1 where the policy has not moved. With `stop_id`, a row is done once it draws that
token; decoding ends when every row is done or after `max_new_tokens`.

As a whole-sequence batch (`as_sequences`): the prompt and its completion in one row,
segment ids 0 on the padding and 1 after it (the model then computes what the cache did).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gptjax import losses
from gptjax.model import init_cache

DONE_PAD = 0  # what a row holds after its stop token


def filter_logits(logits_BV, temperature, top_k=0, top_p=1.0):
  """float32 logits / temperature with every token outside the top-k, then outside the
  nucleus (the smallest set of most likely tokens whose mass reaches top_p), at -inf.

  Each setting is a Python number for the whole batch (top_k 0 and top_p 1 skip their
  stage at trace time) or an array [B], one per row (top_k 0 and top_p 1 leave that row
  unfiltered). The one copy of the filtering: `pick` and `pick_rows` both draw from it."""
  V = logits_BV.shape[-1]
  rows = lambda x: x[:, None] if jnp.ndim(x) else x
  use_k = jnp.ndim(top_k) > 0 or 0 < top_k < V
  use_p = jnp.ndim(top_p) > 0 or top_p < 1.0
  scaled_BV = logits_BV.astype(jnp.float32) / rows(temperature)
  sorted_BV = jnp.sort(scaled_BV, axis=-1)[:, ::-1] if use_p or jnp.ndim(top_k) else None
  if use_k:
    if sorted_BV is None:  # one k for all rows and no nucleus: no full sort needed
      kth_B1 = jax.lax.top_k(scaled_BV, top_k)[0][:, -1:]
    else:
      k_B1 = jnp.broadcast_to(rows(jnp.asarray(top_k, jnp.int32)), (scaled_BV.shape[0], 1))
      kth_B1 = jnp.take_along_axis(sorted_BV, jnp.clip(k_B1 - 1, 0, V - 1), axis=-1)
      kth_B1 = jnp.where((k_B1 > 0) & (k_B1 < V), kth_B1, -jnp.inf)  # k off: nothing cut
      sorted_BV = jnp.where(sorted_BV < kth_B1, -jnp.inf, sorted_BV)
    scaled_BV = jnp.where(scaled_BV < kth_B1, -jnp.inf, scaled_BV)
  if use_p:
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    keep_BV = (jnp.cumsum(probs_BV, axis=-1) - probs_BV) < rows(top_p)  # the first is kept
    threshold_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
    # top_p 1 cuts nothing, also where the running sum rounds to 1 before the tail.
    threshold_B1 = jnp.where(rows(top_p) < 1.0, threshold_B1, -jnp.inf)
    scaled_BV = jnp.where(scaled_BV < threshold_B1, -jnp.inf, scaled_BV)
  return scaled_BV


def pick(logits_BV, rng, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Greedy at temperature 0; else one draw per row with one key for the batch from
  `filter_logits` (temperature, then top-k, then nucleus)."""
  if temperature == 0.0:
    return jnp.argmax(logits_BV, axis=-1)
  return jax.random.categorical(rng, filter_logits(logits_BV, temperature, top_k, top_p),
                                axis=-1)


def pick_rows(logits_BV, seed_B, draw_B, temperature_B, top_k_B, top_p_B):
  """`pick` with settings of its own for every row (the server's decode slots share one
  step): temperature 0 = greedy, top_k 0 = off, top_p 1 = off.
  Row b draws with key fold_in(key(seed_B[b]), draw_B[b]), so a request's tokens depend on
  its own seed and position only, never on which rows it shares a step with."""
  greedy_B = temperature_B <= 0
  scaled_BV = filter_logits(logits_BV, jnp.where(greedy_B, 1.0, temperature_B), top_k_B,
                            top_p_B)
  keys_B = jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(seed_B, draw_B)
  drawn_B = jax.vmap(jax.random.categorical)(keys_B, scaled_BV)
  return jnp.where(greedy_B, jnp.argmax(logits_BV, axis=-1), drawn_B).astype(jnp.int32)


def sample(model, params, prompt_BP, rng, *, max_new_tokens: int, left_pad_B=None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, valid_vocab: int = 0,
           stop_id: int = -1):
  """(tokens int32[B, N], log-probs float32[B, N], lengths int32[B]): N = max_new_tokens new
  tokens per row, DONE_PAD after a row's stop token (which is kept and counted in its
  length). Token i of every row is drawn with key fold_in(rng, i), so a draw depends only on
  its position. Log-probs are of the tempered, untruncated distribution (0 when greedy)."""
  B, P = prompt_BP.shape
  N = max_new_tokens
  valid_vocab = valid_vocab or model.cfg.vocab_size
  if left_pad_B is None:
    left_pad_B = jnp.zeros((B,), jnp.int32)
  cache = init_cache(model.cfg, B, P + N)

  def draw(logits_BV, i):
    logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < valid_vocab, logits_BV, -jnp.inf)
    token_B = pick(logits_BV, jax.random.fold_in(rng, i), temperature, top_k, top_p)
    token_B = token_B.astype(jnp.int32)
    if temperature == 0.0:
      return token_B, jnp.zeros((B,), jnp.float32)
    logp_B = losses.token_logprobs(logits_BV[:, None], token_B[:, None], temperature,
                                   valid_vocab)[:, 0]
    return token_B, logp_B

  def apply(tokens_BT, cache, start):
    return model.apply({"params": params}, tokens_BT, cache=cache, start=start,
                       left_pad=left_pad_B)

  logits_BPV, cache = apply(prompt_BP, cache, 0)
  token_B, logp_B = draw(logits_BPV[:, -1], 0)
  tokens_BN = jnp.full((B, N), DONE_PAD, jnp.int32).at[:, 0].set(token_B)
  logps_BN = jnp.zeros((B, N), jnp.float32).at[:, 0].set(logp_B)
  done_B = token_B == stop_id
  length_B = jnp.ones((B,), jnp.int32)

  def cond(carry):
    i, _, _, _, done_B, _, _ = carry
    return (i < N) & ~jnp.all(done_B)

  def step(carry):
    i, token_B, tokens_BN, logps_BN, done_B, length_B, cache = carry
    logits_B1V, cache = apply(token_B[:, None], cache, P + i - 1)
    nxt_B, logp_B = draw(logits_B1V[:, 0], i)
    nxt_B = jnp.where(done_B, DONE_PAD, nxt_B)
    tokens_BN = tokens_BN.at[:, i].set(nxt_B)
    logps_BN = logps_BN.at[:, i].set(jnp.where(done_B, 0.0, logp_B))
    length_B = length_B + (~done_B).astype(jnp.int32)
    done_B = done_B | (nxt_B == stop_id)
    return i + 1, nxt_B, tokens_BN, logps_BN, done_B, length_B, cache

  carry = (jnp.int32(1), token_B, tokens_BN, logps_BN, done_B, length_B, cache)
  _, _, tokens_BN, logps_BN, _, length_B, _ = jax.lax.while_loop(cond, step, carry)
  return tokens_BN, logps_BN, length_B


def left_padded(rows: list, length: int, pad_id: int = 0):
  """Token lists -> (int32[B, length] right-aligned, int32[B] padding per row)."""
  import numpy as np
  out = np.full((len(rows), length), pad_id, np.int32)
  pad = np.zeros(len(rows), np.int32)
  for b, ids in enumerate(rows):
    out[b, length - len(ids):] = ids
    pad[b] = length - len(ids)
  return out, pad


def as_sequences(prompt_BP, left_pad_B, tokens_BN, length_B) -> dict:
  """One whole-sequence training row per sampled row: {"tokens" [B, P+N], "mask" [B, P+N-1]
  (1 on targets that are completion tokens within each row's length), "segment_ids"
  [B, P+N-1] (0 on the left padding, 1 after)}."""
  B, P = prompt_BP.shape
  N = tokens_BN.shape[1]
  tokens = jnp.concatenate([prompt_BP, tokens_BN], axis=1)
  target_index = jnp.arange(P + N - 1)  # target t is tokens[t + 1]
  completion_k = target_index + 1 - P  # which completion token a target is (< 0: prompt)
  mask = (completion_k[None] >= 0) & (completion_k[None] < length_B[:, None])
  segment_ids = (target_index[None] >= left_pad_B[:, None]).astype(jnp.int32)
  return {"tokens": tokens, "mask": mask.astype(jnp.float32), "segment_ids": segment_ids}


def place_on_targets(values_BN, prompt_len: int) -> jax.Array:
  """Per-completion-token values [B, N] laid on the target axis [B, P+N-1] of as_sequences."""
  return jnp.pad(values_BN, ((0, 0), (prompt_len - 1, 0)))
