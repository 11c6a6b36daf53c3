"""Learning from feedback: reward model, DPO and GRPO, by closed forms and equivalences."""

import dataclasses
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from test_train import Killed, kill_at
from gptjax import logprobs, lora, rollout, sharding, state as state_lib
from gptjax import train as train_lib
from gptjax.config import base_config
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics
from gptjax.model import GPT, GPTConfig
from gptjax.tasks.dpo import DPOTask, preference_loss
from gptjax.tasks.grpo import GRPOTask, group_advantages, policy_loss
from gptjax.tasks.reward import RewardTask

CFG = GPTConfig(vocab_size=32, num_layers=2, num_heads=2, embed_dim=32, max_len=24)
T = 16


def init(model, seed=0):
  return nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, T), jnp.int32))["params"])


def pair_batch(B=8, seed=0, padding_rows=2):
  """Random preference pairs: each response is a span of targets; the last rows are the
  all-zero-mask padding a held-out batch ends with."""
  rng = np.random.default_rng(seed)
  batch = {}
  for side in ("chosen", "rejected"):
    batch[side] = rng.integers(0, CFG.vocab_size, (B, T + 1)).astype(np.int32)
    mask = np.zeros((B, T), np.float32)
    for b in range(B - padding_rows):
      start = rng.integers(2, 8)
      mask[b, start:rng.integers(start + 1, T)] = 1
    batch[f"{side}_mask"] = mask
  batch["index"] = np.where(np.arange(B) < B - padding_rows, np.arange(B), -1).astype(np.int32)
  return batch


def bound(task_cls, config, cfg=CFG):
  task = task_cls(config)
  model = GPT(cfg)
  task.bind(model)
  return task, model


# -- DPO ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["reference", "lora", "smoothed", "ipo"])
def test_dpo_starts_at_log_2_with_zero_margin_when_the_policy_is_the_reference(variant):
  config = base_config()
  config.dpo.label_smoothing = 0.2 if variant == "smoothed" else 0.0
  config.dpo.loss = "ipo" if variant == "ipo" else "sigmoid"
  cfg = dataclasses.replace(CFG, lora_rank=4) if variant == "lora" else CFG
  task, model = bound(DPOTask, config, cfg)
  params = init(model)
  frozen = None
  if variant != "lora":  # the reference: another copy of the same weights
    task.reference, frozen = GPT(CFG), {"reference": params}
  loss, metrics = task.loss(params, pair_batch(), None, frozen)
  expected = 1.0 / (2 * config.dpo.beta) ** 2 if variant == "ipo" else math.log(2)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert float(metrics["margin"]) == 0.0 and float(metrics["accuracy"]) == 0.0
  assert float(metrics["weight"]) == 6  # the two padding rows count nothing


def test_the_dpo_gradient_with_respect_to_the_margin_is_the_closed_form():
  margin = jnp.linspace(-20.0, 20.0, 41)
  for beta in (0.1, 0.5):
    grad = jax.grad(lambda m: preference_loss(m, beta).sum())(margin)
    np.testing.assert_allclose(grad, -beta * jax.nn.sigmoid(-beta * margin), rtol=1e-5)
    smoothed = jax.grad(lambda m: preference_loss(m, beta, label_smoothing=0.1).sum())(margin)
    np.testing.assert_allclose(smoothed, -beta * (0.9 * jax.nn.sigmoid(-beta * margin)
                                                   - 0.1 * jax.nn.sigmoid(beta * margin)),
                               rtol=1e-5, atol=1e-7)
    ipo = jax.grad(lambda m: preference_loss(m, beta, "ipo").sum())(margin)
    np.testing.assert_allclose(ipo, 2 * (margin - 1 / (2 * beta)), rtol=1e-5)


def test_dpo_implicit_rewards_are_beta_times_the_log_ratios_of_each_response():
  config = base_config()
  task, model = bound(DPOTask, config)
  policy, reference = init(model, 0), init(model, 1)
  task.reference = model
  batch = pair_batch(padding_rows=0)
  _, metrics = task.loss(policy, batch, None, {"reference": reference})
  seq = lambda p, side: logprobs.sequence_logprobs(model, p, batch[side], batch[f"{side}_mask"])
  rho_c = seq(policy, "chosen") - seq(reference, "chosen")
  rho_r = seq(policy, "rejected") - seq(reference, "rejected")
  beta = config.dpo.beta
  np.testing.assert_allclose(metrics["reward_chosen"], beta * rho_c.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["margin"], beta * (rho_c - rho_r).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], (rho_c > rho_r).mean())
  loss = -jax.nn.log_sigmoid(beta * (rho_c - rho_r)).mean()
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  # Reference log-probs carried by the batch (precomputed) replace the reference forward.
  carried = {**batch, "ref_chosen": seq(reference, "chosen"),
             "ref_rejected": seq(reference, "rejected")}
  _, same = task.loss(policy, carried, None, None)
  for k in metrics:
    np.testing.assert_allclose(same[k], metrics[k], rtol=1e-6, err_msg=k)


# -- reward model ---------------------------------------------------------------------------------


@pytest.mark.slow  # fast beside it: test_dpo_implicit_rewards_... (carried reference log-probs)
def test_dpo_with_precomputed_reference_log_probs_trains_as_with_a_live_reference(tmp_path):
  """dpo.precompute_reference scores every pair once and holds no reference: the run logs
  the same losses and held-out figures as one that runs the reference in every step."""
  from test_train import load_config, without_perf
  base = load_config("sft", "smoke")
  base.train.steps, base.data.seq_len = 2, load_config("dpo", "smoke").data.seq_len
  base.data.data_dir = str(tmp_path / "data")
  train_lib.train(base, str(tmp_path / "sft"))
  runs = {}
  for precompute in (False, True):
    c = load_config("dpo", "smoke")
    c.lora.rank, c.init.workdir = 0, str(tmp_path / "sft")
    c.dpo.precompute_reference = precompute
    c.data.data_dir = str(tmp_path / "data")
    run = train_lib.build_run(c, tokenizer=load_workdir(c.init.workdir).tokenizer)
    assert (run.frozen is None) == precompute
    train_lib.train(c, str(tmp_path / f"dpo_{precompute}"))
    runs[precompute] = without_perf(read_metrics(str(tmp_path / f"dpo_{precompute}")))
  assert [r["step"] for r in runs[True]] == [r["step"] for r in runs[False]]
  assert runs[False][0]["eval/loss"] == pytest.approx(math.log(2), abs=1e-6)  # at_start
  for a, b in zip(runs[False], runs[True]):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} {a['step']}")


@pytest.mark.parametrize("name", ["dpo", "reward"])
def test_pair_losses_accumulated_over_microbatches_equal_one_large_batch(name):
  """Microbatches with different numbers of real pairs (padding rows count nothing) give the
  update of the whole batch: metrics["weight"] counts pairs."""
  import optax
  cfg = dataclasses.replace(CFG, score_head=True) if name == "reward" else CFG
  task, model = bound(DPOTask if name == "dpo" else RewardTask, base_config(), cfg)
  frozen = None
  if name == "dpo":
    task.reference, frozen = model, {"reference": init(model, 6)}
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=1, tensor=1)),
                            jax.devices()[:2])
  data = pair_batch(8, seed=3, padding_rows=3)
  tx = optax.sgd(1.0)  # linear in the gradient
  params_abstract, params_shardings = state_lib.abstract_params(model, mesh)
  shardings = state_lib.state_shardings(tx, params_abstract, params_shardings, mesh)
  updated = {}
  for accum in (1, 4):
    state = state_lib.init_state(model, tx, mesh, shardings, seed=0)
    step = train_lib.jit_train_step(train_lib.make_train_step(
        task, tx, accum, 0, optax.constant_schedule(1e-2)), mesh, shardings)
    with sharding.rules_context(mesh):
      state, metrics = step(state, sharding.shard_batch(data, mesh), frozen)
    updated[accum] = jax.device_get((state.params, metrics))
  (big, big_m), (acc, acc_m) = updated[1], updated[4]
  for k in ("train/loss", "train/accuracy", "train/grad_norm"):
    np.testing.assert_allclose(acc_m[k], big_m[k], rtol=1e-5, err_msg=k)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), acc, big)


def test_the_reward_model_starts_at_log_2_when_its_head_outputs_are_equal():
  config = base_config()
  task, model = bound(RewardTask, config, dataclasses.replace(CFG, score_head=True))
  params = init(model)
  params = {**params, "score_head": jnp.zeros_like(params["score_head"])}
  loss, metrics = task.loss(params, pair_batch(), None, None)
  np.testing.assert_allclose(loss, math.log(2), rtol=1e-6)
  assert float(metrics["margin"]) == 0.0 and float(metrics["weight"]) == 6


def test_held_out_reward_accuracy_counts_every_pair_once_and_no_padding():
  config = base_config()
  cfg = dataclasses.replace(CFG, score_head=True)
  task, model = bound(RewardTask, config, cfg)
  params = init(model, 3)
  batches = [pair_batch(8, seed=s, padding_rows=3 if s == 2 else 0) for s in range(3)]
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  with sharding.rules_context(mesh):
    results = train_lib.evaluate(train_lib.make_eval_step(task, mesh), params, None,
                                 {"validation": lambda: iter(batches)}, mesh, 0, "pairs",
                                 task.perplexity_of)
  wins = []
  for b in batches:
    from gptjax.tasks.reward import last_token_index, sequence_rewards
    r = {s: sequence_rewards(model, params, b[s][:, :-1], last_token_index(b[f"{s}_mask"]))
         for s in ("chosen", "rejected")}
    valid = b["chosen_mask"].sum(1) > 0
    wins += list(np.asarray(r["chosen"] > r["rejected"])[valid])
  assert results["eval/pairs"] == len(wins) == 21
  np.testing.assert_allclose(results["eval/accuracy"], np.mean(wins), rtol=1e-6)
  assert "eval/perplexity" not in results


# -- GRPO -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_rollout_log_probs_are_the_ones_the_loss_recomputes(positions):
  """Exactly on-policy: what the sampler recorded (KV cache, left-padded prompts of
  different lengths, temperature) is what the trainer's full forward scores."""
  cfg = dataclasses.replace(CFG, positions=positions)
  model = GPT(cfg)
  params = init(model, 2)
  prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12], [13]]
  prompt_BP, pad_B = rollout.left_padded(prompts, 6)
  tokens_BN, logp_BN, length_B = jax.jit(lambda p, x, pad: rollout.sample(
      model, p, x, jax.random.key(0), max_new_tokens=8, left_pad_B=pad, temperature=0.7,
      valid_vocab=30, stop_id=5))(params, prompt_BP, pad_B)
  assert int(length_B.min()) >= 1
  seqs = rollout.as_sequences(jnp.asarray(prompt_BP), jnp.asarray(pad_B), tokens_BN, length_B)
  recomputed = logprobs.token_logprobs(model, params, seqs["tokens"][:, :-1],
                                       seqs["tokens"][:, 1:], segment_ids=seqs["segment_ids"],
                                       temperature=0.7, valid_vocab=30)
  recorded = rollout.place_on_targets(logp_BN, 6)
  mask = np.asarray(seqs["mask"]) > 0
  assert mask.sum() == int(length_B.sum())
  np.testing.assert_allclose(np.asarray(recomputed)[mask], np.asarray(recorded)[mask], atol=1e-5)
  # At the first update the policy is the sampler and the reference: ratio 1, KL 0.
  adv = jnp.asarray(group_advantages(np.arange(4.0), 2, "grpo"))
  _, m = policy_loss(recomputed, recorded, recomputed, adv, seqs["mask"], 0.2, 0.04)
  np.testing.assert_allclose(m["ratio"], 1.0, atol=1e-5)
  np.testing.assert_allclose(m["kl"], 0.0, atol=1e-6)
  assert float(m["clip_fraction"]) == 0.0


def test_group_advantages_and_the_dr_grpo_normaliser():
  r = np.array([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
  grpo = group_advantages(r, 4, "grpo")
  np.testing.assert_allclose(grpo[:4], (r[:4] - 0.25) / (np.std(r[:4], ddof=1) + 1e-4), rtol=1e-5)
  np.testing.assert_array_equal(grpo[4:], 0.0)  # no spread, no signal
  rloo = group_advantages(r, 4, "rloo")
  np.testing.assert_allclose(rloo[0], 1.0 - 0.0, rtol=1e-6)  # r_0 - mean of the other three
  np.testing.assert_allclose(group_advantages(r, 4, "dr_grpo")[:4], r[:4] - 0.25)
  logp = jnp.zeros((2, 4))
  mask = jnp.asarray([[1, 1, 0, 0], [1, 0, 0, 0]], jnp.float32)
  loss, m = policy_loss(logp, logp, None, jnp.asarray([1.0, -1.0]), mask, 0.2, 0.0,
                        normalizer=8)
  np.testing.assert_allclose(loss, (-2 + 1) / 8)  # summed over tokens / (rows x max tokens)
  assert float(m["weight"]) == 8


def toy_prompts(path, n=120, seed=0):
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for _ in range(n):
      f.write(json.dumps({"prompt": "".join(rng.choice(list("bcdef"), 3)), "answer": "aaaa"})
              + "\n")
  return str(path)


def grpo_config(tmp_path, steps, **grpo):
  c = base_config()
  c.task.name = "grpo"
  c.data.path = toy_prompts(tmp_path / "prompts.jsonl")
  c.data.tokenizer.kind = "char"
  c.data.seq_len, c.data.eval_batch_size = 16, 16
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
  c.grpo.update(max_new_tokens=6, group_size=4, reward_fn="answer_prefix_chars", kl_coef=0.0,
                **grpo)
  c.train.update(batch_size=32, steps=steps, log_every=1, progress=False)
  c.eval.every = c.checkpoint.every = steps
  c.optim.update(lr=1e-2, warmup_steps=0, weight_decay=0.0)
  return c


@pytest.mark.slow
def test_grpo_teaches_a_tiny_model_a_toy_task_on_a_mesh(tmp_path):
  """The reward ("aaaa" then end of turn, partial credit) rises from a fresh model."""
  config = grpo_config(tmp_path, 30)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  train_lib.train(config, str(tmp_path / "run"))
  rewards = [r["rollout/reward_mean"] for r in read_metrics(str(tmp_path / "run"))
             if "rollout/reward_mean" in r]
  assert len(rewards) == 30
  assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 1.0, rewards


@pytest.mark.slow  # fast beside it: tests/test_train.py's killed-then-resumed run (same loop)
def test_a_killed_grpo_run_resumes_exactly(tmp_path):
  """Several updates per rollout; killed between checkpoints; the resumed run samples the
  same completions (the rollout key is the step's) from the same prompts."""
  config = grpo_config(tmp_path, 4, updates_per_rollout=2)
  config.checkpoint.every = 2
  config.grpo.kl_coef = 0.0
  train_lib.train(config, str(tmp_path / "straight"))
  with pytest.raises(Killed):
    train_lib.train(config, str(tmp_path / "resumed"), hooks=[kill_at(3)])
  train_lib.train(config, str(tmp_path / "resumed"))
  strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf/")
                         and k != "rollout/tokens_per_sec"} for r in rows]
  a, b = (strip(read_metrics(str(tmp_path / n))) for n in ("straight", "resumed"))
  assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 4
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for k in ra:
      np.testing.assert_allclose(rb[k], ra[k], rtol=1e-6, err_msg=f"{k} at step {ra['step']}")
  ratios = [r["train/ratio"] for r in a if "train/ratio" in r]
  assert ratios[0] == pytest.approx(1.0, abs=1e-6) and ratios[1] != pytest.approx(1.0, abs=1e-6)
  pa, pb = (load_workdir(str(tmp_path / n)).params for n in ("straight", "resumed"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)


def test_rollout_scores_full_length_completions_as_each_row_scored_alone(tmp_path):
  """Prompts fill data.seq_len - max_new_tokens, so a completion that runs to its cap still
  fits the context: the reward model's score and the reference log-probs of each left-padded
  rollout row equal those of the row scored alone, unpadded."""
  from gptjax.data import chat_template, prompts
  from gptjax.data.tokenizers import CharTokenizer
  from gptjax.tasks.reward import sequence_rewards
  config = base_config()
  config.task.name = "grpo"
  config.data.path = toy_prompts(tmp_path / "prompts.jsonl")
  config.data.seq_len = CFG.max_len
  config.grpo.update(max_new_tokens=8, group_size=4, kl_coef=0.04, reward_workdir="rm")
  config.train.batch_size = 8
  task, model = bound(GRPOTask, config)
  task.tokenizer = chat_template.with_chat_tokens(CharTokenizer("abcdefghij"))
  batch = next(prompts.make_prompt_datasets(config, task.tokenizer, 0, 1).train)
  P = batch["prompt"].shape[1]
  assert P == CFG.max_len - 8
  reward_model = GPT(dataclasses.replace(CFG, score_head=True))
  task.reference, task.reward_model = model, reward_model
  params, frozen = init(model, 1), {"reference": init(model, 2), "reward": init(reward_model, 3)}
  out = jax.device_get(jax.jit(lambda p, f, x, pad: task._sample(p, f, x, pad, jax.random.key(4),
                                                                 1.0))(
      params, frozen, batch["prompt"], batch["left_pad"]))
  assert out["length"].max() == 8  # some row ran to the cap: P + 8 == the model's context
  for b in range(len(out["length"])):
    pad, end = int(batch["left_pad"][b]), P + int(out["length"][b])
    row = jnp.asarray(out["tokens"][b, pad:end])[None]
    alone = sequence_rewards(reward_model, frozen["reward"], row, jnp.asarray([end - pad - 1]))
    np.testing.assert_allclose(out["reward"][b], alone[0], rtol=1e-5, atol=1e-5)
    ref = logprobs.token_logprobs(model, frozen["reference"], row[:, :-1], row[:, 1:], rng=None,
                                  valid_vocab=task.tokenizer.vocab_size)
    on = out["mask"][b, pad:end - 1] > 0
    np.testing.assert_allclose(out["ref_logp"][b, pad:end - 1][on], np.asarray(ref[0])[on],
                               rtol=1e-5, atol=1e-5)


# -- every new loss on a mesh ---------------------------------------------------------------------


def grpo_batch(model, params, seed=0):
  prompt_BP, pad_B = rollout.left_padded([[3, 4, 5], [6], [7, 8], [9, 10, 11, 12]] * 2, 6)
  tokens_BN, logp_BN, length_B = rollout.sample(
      model, params, jnp.asarray(prompt_BP), jax.random.key(seed), max_new_tokens=T + 1 - 6,
      left_pad_B=jnp.asarray(pad_B), temperature=1.0, stop_id=5)
  batch = rollout.as_sequences(jnp.asarray(prompt_BP), jnp.asarray(pad_B), tokens_BN, length_B)
  batch["old_logp"] = rollout.place_on_targets(logp_BN, 6) - 0.05  # a moved policy: clipping
  batch["ref_logp"] = batch["old_logp"] + 0.1
  batch["advantage"] = jnp.asarray(group_advantages(np.arange(8.0) % 3, 2, "grpo"))
  return jax.device_get(batch)


def loss_and_grads(mesh_shape, task, params, batch, frozen):
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(ml_collections.ConfigDict(
      dict(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])), devices)
  _, shardings = state_lib.abstract_params(task.model, mesh)
  put = lambda tree: jax.device_put(tree, shardings)
  params = put(params)
  frozen = None if frozen is None else {k: put(v) for k, v in frozen.items()}
  fn = jax.jit(lambda p, b, f: train_lib._weighted_grads(task, p, None, b, None, f))
  with sharding.rules_context(mesh):
    grads, aux = fn(params, sharding.shard_batch(batch, mesh), frozen)
  return jax.device_get(aux), jax.device_get(grads)


@pytest.mark.parametrize("name", ["reward", "dpo", "dpo_lora", "grpo"])
def test_each_new_loss_on_a_mesh_equals_single_device(name):
  config = base_config()
  cfg = {"reward": dataclasses.replace(CFG, score_head=True),
         "dpo_lora": dataclasses.replace(CFG, lora_rank=4)}.get(name, CFG)
  cls = {"reward": RewardTask, "grpo": GRPOTask}.get(name, DPOTask)
  if name == "grpo":
    config.grpo.reward_fn = "exact_match"
    config.train.steps = config.checkpoint.every = 2
  task, model = bound(cls, config, cfg)
  params = init(model, 5)
  frozen = None
  if name == "dpo":
    task.reference, frozen = model, {"reference": init(model, 6)}
  if name == "dpo_lora":  # adapters that have moved: the policy differs from its base
    noise = iter(jax.random.split(jax.random.key(7), 64))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.02 * jax.random.normal(next(noise), x.shape)
        if str(p[-1].key).endswith(lora.B_SUFFIX) else x, params)
  if name == "grpo":
    task.tokenizer = type("Vocab", (), {"vocab_size": CFG.vocab_size})()
    batch = grpo_batch(model, params)
  else:
    batch = pair_batch(padding_rows=0)
  ref_aux, ref_grads = loss_and_grads((1, 1, 1), task, params, batch, frozen)
  assert np.isfinite(ref_aux["loss"]) and float(ref_aux["loss"]) != 0.0
  for shape in [(2, 2, 2), (1, 4, 2)]:
    aux, grads = loss_and_grads(shape, task, params, batch, frozen)
    for k in ref_aux:
      np.testing.assert_allclose(aux[k], ref_aux[k], rtol=2e-5, atol=1e-5, err_msg=k)
    # Sums of log-probs over whole responses: float32 reduction order shows at ~1e-4 of the
    # largest gradient, so compare at that scale (a sharding bug is off by O(1)).
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(ref_grads))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(
        a, b, atol=1e-4 * scale, rtol=1e-4), grads, ref_grads)
