"""Beam search through the KV cache, batched over prompts, as fairseq's sequence generator
does it (and Flax's / T5X's beam search in JAX):

- each prompt keeps `beams` live hypotheses; every step scores the 2 x beams best one-token
  extensions of them all (cumulative log-probs);
- an extension that ends in `stop_id` is finished only if it ranks among the first `beams`
  candidates, with its score length-normalised: sum log p / length ** length_penalty
  (length counts the stop token; 0 = no normalisation, 1 = per-token mean);
- the live hypotheses are the best `beams` extensions that do not stop, and the cache rows
  follow their parents;
- a prompt is done once it has `beams` finished hypotheses; at max_new_tokens the live ones
  count as finished (normalised by their length).
So beams=1 is greedy decoding exactly. Prompts are left-padded (gptjax.rollout.left_padded)
and the whole search is one jitted while loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.model import GPT, GPTConfig, init_cache

NEG = -1e30  # "no hypothesis": finite, so sums and comparisons stay well defined


@functools.partial(jax.jit, static_argnames=("cfg", "beams", "max_new_tokens", "stop_id",
                                             "length_penalty", "valid_vocab"))
def _search(cfg: GPTConfig, params, prompt_BP, left_pad_B, *, beams: int, max_new_tokens: int,
            stop_id: int, length_penalty: float, valid_vocab: int):
  model = GPT(cfg)
  B, P = prompt_BP.shape
  K, N = beams, max_new_tokens

  def logprobs(logits_XV):
    logits_XV = jnp.where(jnp.arange(logits_XV.shape[-1]) < valid_vocab,
                          logits_XV.astype(jnp.float32), -jnp.inf)
    return jax.nn.log_softmax(logits_XV, axis=-1)

  def normalise(score, length):
    return score / (length.astype(jnp.float32) ** length_penalty) if length_penalty else score

  cache = init_cache(cfg, B, P + N)
  logits_BPV, cache = model.apply({"params": params}, prompt_BP, cache=cache, start=0,
                                  left_pad=left_pad_B)
  cache = jax.tree_util.tree_map(lambda c: jnp.repeat(c, K, axis=0), cache)
  left_pad_X = jnp.repeat(left_pad_B, K)  # X = B * K rows
  rows = jnp.arange(B)[:, None]

  def expand(i, logp_BKV, state):
    """Token i of every hypothesis: the finished and live sets after it."""
    alive_tokens, alive_scores, fin_tokens, fin_scores, fin_lengths = state[:5]
    V = logp_BKV.shape[-1]
    candidates = (alive_scores[:, :, None] + logp_BKV).reshape(B, K * V)
    top_scores, top_index = jax.lax.top_k(candidates, 2 * K)
    parent, token = top_index // V, top_index % V
    tokens = jnp.take_along_axis(alive_tokens, parent[:, :, None], axis=1).at[:, :, i].set(token)
    stops = token == stop_id
    done_B = fin_scores[:, K - 1] > NEG / 2  # this prompt already has its K finished
    finish = stops & (jnp.arange(2 * K) < K)[None] & (top_scores > NEG / 2) & ~done_B[:, None]
    length = jnp.full((B, 2 * K), i + 1, jnp.int32)
    new_fin = jnp.where(finish, normalise(top_scores, length), NEG)
    merged_scores = jnp.concatenate([fin_scores, new_fin], axis=1)
    fin_scores, keep = jax.lax.top_k(merged_scores, K)
    fin_tokens = jnp.concatenate([fin_tokens, tokens], axis=1)[rows, keep]
    fin_lengths = jnp.concatenate([fin_lengths, length], axis=1)[rows, keep]
    alive_scores, pick = jax.lax.top_k(jnp.where(stops, NEG, top_scores), K)
    return (tokens[rows, pick], alive_scores, fin_tokens, fin_scores, fin_lengths,
            parent[rows, pick], token[rows, pick])

  first = logprobs(logits_BPV[:, -1])[:, None].repeat(K, axis=1)
  start_scores = jnp.full((B, K), NEG).at[:, 0].set(0.0)  # K copies of the prompt: keep one
  empty = (jnp.zeros((B, K, N), jnp.int32), start_scores, jnp.zeros((B, K, N), jnp.int32),
           jnp.full((B, K), NEG), jnp.ones((B, K), jnp.int32))
  *state, parent, last = expand(0, first, empty)

  def reorder(cache, parent_BK):
    flat = (jnp.arange(B)[:, None] * K + parent_BK).reshape(-1)
    return jax.tree_util.tree_map(lambda c: c[flat], cache)

  def cond(carry):
    i, state = carry[0], carry[1]
    return (i < N) & ~jnp.all(state[3][:, K - 1] > NEG / 2)

  def step(carry):
    i, state, parent, last, cache = carry
    cache = reorder(cache, parent)
    logits_X1V, cache = model.apply({"params": params}, last.reshape(B * K, 1), cache=cache,
                                    start=P + i - 1, left_pad=left_pad_X)
    *state, parent, last = expand(i, logprobs(logits_X1V[:, 0]).reshape(B, K, -1), state)
    return i + 1, tuple(state), parent, last, cache

  i, state, _, _, _ = jax.lax.while_loop(cond, step, (jnp.int32(1), tuple(state), parent,
                                                      last, cache))
  alive_tokens, alive_scores, fin_tokens, fin_scores, fin_lengths = state
  # Prompts still short of K finished hypotheses take their live ones, as long as they got.
  alive_lengths = jnp.full((B, K), i, jnp.int32)
  live = jnp.where(alive_scores > NEG / 2, normalise(alive_scores, alive_lengths), NEG)
  short_B = fin_scores[:, K - 1] <= NEG / 2
  merged = jnp.concatenate([fin_scores, jnp.where(short_B[:, None], live, NEG)], axis=1)
  best = jnp.argmax(merged, axis=1)
  tokens = jnp.concatenate([fin_tokens, alive_tokens], axis=1)[jnp.arange(B), best]
  lengths = jnp.concatenate([fin_lengths, alive_lengths], axis=1)[jnp.arange(B), best]
  return tokens, lengths, merged[jnp.arange(B), best]


def beam_search(model: GPT, params, prompt_BP, left_pad_B, *, beams: int, max_new_tokens: int,
                stop_id: int, length_penalty: float = 1.0, valid_vocab: int = 0):
  """Best hypothesis per prompt: (int32[B, N] tokens, int32[B] lengths counting the stop token
  where there is one, float32[B] normalised scores). Tokens past a length are meaningless."""
  tokens, lengths, scores = _search(
      model.cfg, params, jnp.asarray(prompt_BP, jnp.int32), jnp.asarray(left_pad_B, jnp.int32),
      beams=int(beams), max_new_tokens=int(max_new_tokens), stop_id=int(stop_id),
      length_penalty=float(length_penalty), valid_vocab=int(valid_vocab or model.cfg.vocab_size))
  return np.asarray(tokens), np.asarray(lengths), np.asarray(scores)
