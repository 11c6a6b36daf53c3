"""Reinforcement learning from rewards with GRPO (task.name=grpo; Shao et al. 2024), on a
leash to a frozen reference policy.

Each step's batch is prompts, each repeated grpo.group_size times. `rollout` (the one RL
seam of the trainer) samples a completion per row with the KV cache (gptjax.rollout, plain
temperature sampling, stop at end of turn), recording each token's log-prob, and scores
the reference's log-probs of the same tokens, all in one jitted, sharded call; rewards come
from a reward model checkpoint (in that call) or a Python reward function (gptjax.rewards).
Advantages compare each completion with its group:
  grpo:    (r - mean) / (std + 1e-4)      rloo: r - mean of the others
  dr_grpo: r - mean (no std), and the loss sums over tokens / (rows x max_new_tokens)
The loss per completion token, with ratio = pi / pi_old (1 in value on a fresh rollout):
  -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A) + kl_coef * KL(pi || pi_ref)
with the k3 estimator exp(ref - logp) - (ref - logp) - 1 (or k1: logp - ref); it is averaged
over every completion token of the step (metrics["weight"] counts them), so microbatches and
long completions weigh right. The rollout key is a function of the seed and the step, and the
prompt iterator's position is checkpointed: a resumed run samples what it would have.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import frozen as frozen_lib, logprobs, lora, rewards as rewards_lib, rollout, sharding
from gptjax.errors import UserError, warn
from gptjax.tasks.lm import LMTask
from gptjax.tasks.reward import sequence_rewards

ADVANTAGES = ("grpo", "rloo", "dr_grpo")
ROLLOUT_STREAM = 1  # folded into the step's key: rollouts draw apart from dropout
EVAL_KEY = 2  # held-out sampling: one fixed key, apart from every rollout's


def group_advantages(rewards_B: np.ndarray, group_size: int, kind: str) -> np.ndarray:
  """Each completion's reward against its group's (rows b*G .. b*G+G-1 are one group)."""
  r_GB = np.asarray(rewards_B, np.float64).reshape(-1, group_size)
  centred = r_GB - r_GB.mean(axis=1, keepdims=True)
  if kind == "grpo":
    out = centred / (r_GB.std(axis=1, ddof=1, keepdims=True) + 1e-4)
  elif kind == "rloo":
    out = centred * group_size / (group_size - 1)
  else:
    out = centred
  return out.reshape(-1).astype(np.float32)


def kl_estimate(logp_BT, ref_BT, estimator: str):
  """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi."""
  if estimator == "k1":
    return logp_BT - ref_BT
  delta = ref_BT - logp_BT
  return jnp.exp(delta) - delta - 1.0


def policy_loss(logp_BT, old_BT, ref_BT, advantage_B, mask_BT, clip_eps: float,
                kl_coef: float, estimator: str = "k3", normalizer=None):
  """(loss, metrics) of the clipped policy gradient with a KL penalty; the mean is over the
  masked tokens, or their sum / `normalizer` when given (Dr. GRPO)."""
  ratio_BT = jnp.exp(logp_BT - old_BT)
  adv_B1 = advantage_B[:, None]
  clipped_BT = jnp.clip(ratio_BT, 1.0 - clip_eps, 1.0 + clip_eps)
  per_token = -jnp.minimum(ratio_BT * adv_B1, clipped_BT * adv_B1)
  kl_BT = jnp.zeros_like(logp_BT) if ref_BT is None else kl_estimate(logp_BT, ref_BT, estimator)
  per_token = per_token + kl_coef * kl_BT
  count = mask_BT.sum()
  weight = count if normalizer is None else jnp.asarray(normalizer, jnp.float32)
  mean = lambda x: (x * mask_BT).sum() / jnp.maximum(count, 1.0)
  loss = (per_token * mask_BT).sum() / jnp.maximum(weight, 1.0)
  was_clipped = ((ratio_BT < 1.0 - clip_eps) & (adv_B1 < 0)) | ((ratio_BT > 1.0 + clip_eps)
                                                              & (adv_B1 > 0))
  return loss, {"loss": loss, "kl": mean(kl_BT), "ratio": mean(ratio_BT),
                "clip_fraction": mean(was_clipped.astype(jnp.float32)), "weight": weight}


class GRPOTask(LMTask):
  weight_unit = "tokens"
  perplexity_of = ""  # the policy loss is no cross-entropy

  def __init__(self, config):
    super().__init__(config)
    g = config.grpo
    checks = [
        (g.advantage in ADVANTAGES, f"grpo.advantage={g.advantage!r} is not one of {ADVANTAGES}"),
        (g.kl_estimator in ("k1", "k3"), "grpo.kl_estimator must be k1 or k3"),
        (g.temperature > 0, "grpo.temperature must be positive (the ratio needs a distribution)"),
        (g.group_size >= 2, "grpo.group_size must be at least 2: advantages compare a group"),
        (bool(g.reward_workdir) != bool(g.reward_fn),
         "set exactly one of grpo.reward_workdir (a reward model) and grpo.reward_fn"),
        (g.updates_per_rollout >= 1 and config.train.steps % g.updates_per_rollout == 0
         and config.checkpoint.every % g.updates_per_rollout == 0,
         f"train.steps and checkpoint.every must divide by grpo.updates_per_rollout="
         f"{g.updates_per_rollout} (a checkpoint falls between rollouts)"),
        (g.max_new_tokens >= 1, "grpo.max_new_tokens must be positive"),
    ]
    for ok, message in checks:
      if not ok:
        raise UserError(message)
    if g.reward_fn:
      rewards_lib.get(g.reward_fn)
    self.updates_per_rollout = g.updates_per_rollout
    self.reference = self.reward_model = self.mesh = self.data = None
    self._rollout_fn = self._greedy_fn = None

  # -- data and frozen models -----------------------------------------------------------------

  def datasets(self, tokenizer=None):
    from gptjax.data import prompts
    if tokenizer is None:
      tokenizer = self._own_tokenizer()
    self.data = prompts.make_prompt_datasets(self.config, tokenizer)
    return self._keep_tokenizer(self.data)

  def _own_tokenizer(self):
    from gptjax.data import prompts
    from gptjax.data.chat_data import chat_tokenizer
    warn("task.name=grpo without --config.init.workdir: the policy starts from fresh weights "
         "and a tokenizer trained on the prompts")
    read = prompts.read_prompts(self.config.data.path, self.config.data.skip_bad_records,
                                self.config.data.file_pattern)
    answers = [[{"role": "assistant", "content": str(r.get("answer", ""))}] for r in read.records]
    return chat_tokenizer(self.config, read.conversations + answers)

  def init_frozen(self, mesh):
    cfg, g = self.config, self.config.grpo
    self.mesh = mesh
    frozen = {}
    if g.kl_coef and not self.model.cfg.lora_rank:
      workdir = g.reference_workdir or cfg.init.workdir
      flag = "--config.grpo.reference_workdir" if g.reference_workdir else "--config.init.workdir"
      loaded = frozen_lib.load(workdir, g.reference_step if g.reference_workdir else cfg.init.step,
                               mesh, f"{flag} (the reference policy of the KL penalty; or set "
                               "--config.grpo.kl_coef=0)")
      frozen_lib.require_same_tokenizer(loaded, self.tokenizer, flag)
      self.reference, frozen["reference"] = loaded.model, loaded.params
    if g.reward_workdir:
      loaded = frozen_lib.load(g.reward_workdir, g.reward_step, mesh,
                               "--config.grpo.reward_workdir")
      frozen_lib.require_same_tokenizer(loaded, self.tokenizer, "--config.grpo.reward_workdir")
      if not loaded.model.cfg.score_head:
        raise UserError(f"--config.grpo.reward_workdir={g.reward_workdir} is not a reward model "
                        "(train one with task.name=reward)")
      self.reward_model, frozen["reward"] = loaded.model, loaded.params
    return frozen or None

  # -- rollouts ---------------------------------------------------------------------------------

  def _sample(self, params, frozen, prompt_BP, left_pad_B, rng, temperature: float):
    """Completions, their recorded and reference log-probs and model rewards: one jit."""
    g = self.config.grpo
    vocab = self.tokenizer.vocab_size
    tokens_BN, logp_BN, length_B = rollout.sample(
        self.model, params, prompt_BP, rng, max_new_tokens=g.max_new_tokens,
        left_pad_B=left_pad_B, temperature=temperature, valid_vocab=vocab,
        stop_id=self._stop())
    out = rollout.as_sequences(prompt_BP, left_pad_B, tokens_BN, length_B)
    out["length"] = length_B
    out["truncated"] = ~jnp.any(tokens_BN == self._stop(), axis=1)  # never ended its turn
    P = prompt_BP.shape[1]
    out["old_logp"] = rollout.place_on_targets(logp_BN, P)
    inputs, targets, seg = out["tokens"][:, :-1], out["tokens"][:, 1:], out["segment_ids"]
    if temperature and g.kl_coef:
      model, ref = ((self.model, lora.without_adapters(params)) if frozen is None
                    or "reference" not in frozen else (self.reference, frozen["reference"]))
      out["ref_logp"] = logprobs.token_logprobs(
          model, ref, inputs, targets, segment_ids=seg, chunk=self.config.task.loss_chunk,
          temperature=temperature, valid_vocab=vocab)
    if frozen is not None and "reward" in frozen:  # read at each completion's last token
      whole_seg = jnp.concatenate([seg, seg[:, -1:]], axis=1)
      out["reward"] = sequence_rewards(self.reward_model, frozen["reward"], out["tokens"],
                                       P + length_B - 1, whole_seg)
    return out

  def _jitted(self, temperature: float):
    batch_sharded = sharding.batch_sharding(self.mesh)
    return jax.jit(lambda p, f, x, pad, rng: self._sample(p, f, x, pad, rng, temperature),
                   out_shardings=batch_sharded)

  def _completions(self, out: dict, index, records: list):
    """(prompt indices, completion texts cut at end of turn, rewards) of every row of the
    global batch, on the host of every process."""
    from jax.experimental import multihost_utils
    g = self.config.grpo
    host = {k: np.asarray(multihost_utils.process_allgather(out[k], tiled=True))
            for k in ("tokens", "length") + (("reward",) if "reward" in out else ())}
    N = g.max_new_tokens
    texts = [self.tokenizer.decode([t for t in row[-N:][:n].tolist()
                                    if t < self.tokenizer.vocab_size and t != self._stop()])
             for row, n in zip(host["tokens"], host["length"])]
    index = np.asarray(multihost_utils.process_allgather(index, tiled=True))
    if "reward" in host:
      return index, texts, host["reward"].astype(np.float32)
    scored = [records[i] if i >= 0 else records[0] for i in index]
    return index, texts, np.asarray(rewards_lib.get(g.reward_fn)(texts, scored), np.float32)

  def _stop(self) -> int:
    from gptjax.data import chat_template
    return chat_template.end_of_turn_id(self.tokenizer)

  def rollout(self, params, batch, frozen, step: int):
    """(the train batch of this step's prompts, host metrics of the rollout)."""
    g = self.config.grpo
    if self._rollout_fn is None:
      self._rollout_fn = self._jitted(g.temperature)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.config.seed), step),
                             ROLLOUT_STREAM)
    t0 = time.perf_counter()
    out = self._rollout_fn(params, frozen, batch["prompt"], batch["left_pad"], rng)
    _, texts, rewards_B = self._completions(out, batch["index"], self.data.train_records)
    seconds = time.perf_counter() - t0
    advantage_B = group_advantages(rewards_B, g.group_size, g.advantage)
    lengths = np.asarray([len(t) for t in texts])
    train = {k: out[k] for k in ("tokens", "mask", "segment_ids", "old_logp")}
    if "ref_logp" in out:
      train["ref_logp"] = out["ref_logp"]
    if g.mask_truncated:
      train["mask"] = train["mask"] * (~out["truncated"])[:, None]
    train["advantage"] = self._put(advantage_B)
    spread = rewards_B.reshape(-1, g.group_size).std(axis=1)
    new_tokens = float(np.asarray(jax.device_get(out["length"])).sum())
    metrics = {"rollout/reward_mean": float(rewards_B.mean()),
               "rollout/reward_std": float(rewards_B.std()),
               "rollout/zero_spread_groups": float((spread == 0).mean()),
               "rollout/completion_tokens": new_tokens / len(rewards_B),
               "rollout/completion_chars": float(lengths.mean()),
               "rollout/truncated": float(np.asarray(jax.device_get(out["truncated"])).mean()),
               "rollout/tokens_per_sec": new_tokens / max(seconds, 1e-9)}
    return train, metrics

  def _put(self, values_B: np.ndarray):
    """A host array of every row (the same on every process) onto the batch sharding."""
    shard = sharding.batch_sharding(self.mesh)
    return jax.make_array_from_callback(values_B.shape, shard, lambda idx: values_B[idx])

  # -- the loss and held-out reward -------------------------------------------------------------

  def loss(self, params, batch, rng, frozen):
    g = self.config.grpo
    tokens = batch["tokens"]
    logp_BT = logprobs.token_logprobs(
        self.model, params, tokens[:, :-1], tokens[:, 1:], rng=rng,
        segment_ids=batch["segment_ids"], chunk=self.config.task.loss_chunk,
        temperature=g.temperature, valid_vocab=self.tokenizer.vocab_size)
    normalizer = tokens.shape[0] * g.max_new_tokens if g.advantage == "dr_grpo" else None
    return policy_loss(logp_BT, batch["old_logp"], batch.get("ref_logp"), batch["advantage"],
                       batch["mask"], g.clip_eps, g.kl_coef, g.kl_estimator, normalizer)

  def heldout_completions(self, params, frozen, limit: int = 0, sampled: bool = False) -> list:
    """Completions of the held-out prompts (the first `limit`; 0 = all) with rewards: greedy,
    or `sampled` at grpo.temperature with a fixed key per batch (every evaluation draws the
    same noise, so a change between steps is the policy's)."""
    if sampled and self._rollout_fn is None:
      self._rollout_fn = self._jitted(self.config.grpo.temperature)
    if not sampled and self._greedy_fn is None:
      self._greedy_fn = self._jitted(0.0)
    fn = self._rollout_fn if sampled else self._greedy_fn
    rows = []
    for i, batch in enumerate(self.data.eval_batches()):
      device = sharding.shard_batch(batch, self.mesh)
      out = fn(params, frozen, device["prompt"], device["left_pad"],
               jax.random.fold_in(jax.random.key(EVAL_KEY), i))
      index, texts, scores = self._completions(out, device["index"], self.data.eval_records)
      for j, text, score in zip(index, texts, scores):
        if j >= 0:
          rows.append({"index": int(j), "completion": text, "reward": float(score)})
      if limit and len(rows) >= limit:
        return rows[:limit]
    return rows

  def evaluators(self) -> dict:
    """Held-out reward of greedy replies ("greedy") and of replies sampled as in rollouts
    ("sampled": the expected reward the policy gradient raises)."""
    def heldout(sampled):
      def score(params, frozen):
        rows = self.heldout_completions(params, frozen, sampled=sampled)
        return {"reward": float(np.mean([r["reward"] for r in rows])),
                "completion_chars": float(np.mean([len(r["completion"]) for r in rows])),
                "prompts": float(len(rows))}
      return score
    return {"greedy": heldout(False), "sampled": heldout(True)}
