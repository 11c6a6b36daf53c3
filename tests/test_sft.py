"""Chat fine-tuning: packed == unpacked, LoRA and freezing, starting from a checkpoint."""

import dataclasses
import json

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from test_train import Killed, assert_same_metrics, kill_at, load_config
from gptjax import attention, init_from, lora, sharding, state as state_lib, trainable
from gptjax import train as train_lib
from gptjax.config import base_config
from gptjax.data import chat_data
from gptjax.data.pipeline import document_segments
from gptjax.load import load_workdir
from gptjax.model import GPT, GPTConfig
from gptjax.tasks.lm import LMTask, token_losses

CFG = GPTConfig(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, max_len=128)
LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False,
             num_kv_heads=2, use_bias=False)


def examples(lengths, seed=0):
  """Rendered-like conversations: random ids, every second half trained."""
  rng = np.random.RandomState(seed)
  out = []
  for n in lengths:
    trained = np.arange(n) >= n // 2
    out.append((rng.randint(0, CFG.vocab_size, n).astype(np.int32), trained))
  return out


def batch_of(exs, window, packing):
  rows = chat_data.windows(exs, window, packing)
  return chat_data._Rows(rows, packing)(np.arange(len(rows["tokens"]))), rows


def init(model, tokens, seed=0):
  return nn.unbox(model.init(jax.random.key(seed), tokens)["params"])


def task_for(model):
  task = LMTask(base_config())
  task.bind(model)
  return task


def per_token(model, params, batch):
  tokens = batch["tokens"]
  loss, _ = token_losses(model, params, tokens[:, :-1], tokens[:, 1:], None, 0,
                         batch.get("segment_ids"))
  return np.asarray(loss)


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_packed_equals_unpacked_per_conversation_loss_and_gradients(layout):
  model = GPT(CFG if layout == "gpt2" else dataclasses.replace(CFG, **LLAMA))
  exs = examples([9, 13, 7])
  unpacked, _ = batch_of(exs, 16, packing=False)
  packed, rows = batch_of(exs, 32, packing=True)
  assert len(rows["tokens"]) == 1 and set(rows["segments"][0]) == {0, 1, 2, 3}
  params = init(model, packed["tokens"][:, :-1])
  lu, lp = per_token(model, params, unpacked), per_token(model, params, packed)
  seg = rows["segments"][0]
  for s in (1, 2, 3):  # the packer may reorder; segment s is one of the conversations
    where = np.flatnonzero(seg == s)
    n = len(where)
    row = next(i for i, (ids, _) in enumerate(exs) if len(ids) == n)
    np.testing.assert_array_equal(packed["tokens"][0, where], exs[row][0])
    np.testing.assert_allclose(lp[0, where[:-1]], lu[row, :n - 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(packed["mask"][0, where[:-1]], unpacked["mask"][row, :n - 1])
  assert packed["mask"].sum() == unpacked["mask"].sum() == sum(t[1:].sum() for _, t in exs)
  task = task_for(model)
  grads = [jax.grad(lambda p, b=b: (lambda l, a: l * a["weight"])(*task.loss(p, b, None, None)))(
      params) for b in (unpacked, packed)]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         *grads)


def test_a_token_of_one_conversation_never_changes_another_conversations_logits():
  model = GPT(CFG)
  packed, rows = batch_of(examples([20, 30, 12]), 64, packing=True)
  params = init(model, packed["tokens"][:, :-1], 1)
  seg = rows["segments"][0, :-1]
  logits = lambda b: np.asarray(model.apply({"params": params}, b["tokens"][:, :-1],
                                            segment_ids=b["segment_ids"]))
  before = logits(packed)
  for s in (1, 2, 3):
    changed = {k: v.copy() for k, v in packed.items()}
    first = np.flatnonzero(seg == s)[0]
    changed["tokens"][0, first] = (changed["tokens"][0, first] + 1) % CFG.vocab_size
    after = logits(changed)
    others = seg != s
    np.testing.assert_array_equal(after[0, others], before[0, others])
    assert not np.allclose(after[0, seg == s], before[0, seg == s])


@pytest.mark.parametrize("layout", ["gpt2", "llama"])  # llama: grouped-query (MQA kernel)
def test_segment_masking_is_the_same_through_the_splash_kernel(layout):
  """The TPU kernel masks by segment ids like XLA does (Pallas interpreter on CPU)."""
  cfg = CFG if layout == "gpt2" else dataclasses.replace(CFG, **LLAMA)
  model = GPT(cfg)
  packed, _ = batch_of(examples([40, 50, 30]), 129, packing=True)
  inputs, seg = packed["tokens"][:, :-1], packed["segment_ids"]
  params = init(model, inputs, 2)
  xla = model.apply({"params": params}, inputs, segment_ids=seg)
  with attention.compiling_for("tpu"):
    splash = GPT(dataclasses.replace(cfg, attention="splash")).apply(
        {"params": params}, inputs, segment_ids=seg)
  np.testing.assert_allclose(splash, xla, rtol=1e-5, atol=1e-5)


def test_document_segments_start_at_each_end_of_document_token():
  ids = np.asarray([[5, 6, 2, 7, 8, 2, 2, 9]])
  np.testing.assert_array_equal(document_segments(ids, eos_id=2), [[0, 0, 1, 1, 1, 2, 3, 3]])


# ---------------------------------------------------------------------------------------------
# LoRA


def lora_params(cfg, base_params, seed=0, b_scale=0.0):
  """A LoRA model's params: `base_params` for the base weights, fresh adapters (B scaled)."""
  model = GPT(cfg)
  fresh = init(model, np.zeros((1, 8), np.int32), seed)
  params = trainable.merge(fresh, base_params)
  if b_scale:
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: (x + b_scale * jax.random.normal(jax.random.key(7), x.shape)
                      if trainable.path_of(p).endswith(lora.B_SUFFIX) else x), params)
  return model, params


def base_model():
  """(tokens, the base GPT, its params, its logits on the tokens)."""
  tokens = np.asarray(jax.random.randint(jax.random.key(3), (2, 24), 0, CFG.vocab_size))
  base = GPT(CFG)
  base_params = init(base, tokens)
  return tokens, base, base_params, np.asarray(base.apply({"params": base_params}, tokens))


def test_lora_at_init_is_bit_identical_and_merged_equals_unmerged():
  tokens, base, base_params, base_logits = base_model()
  cfg = dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0)
  model, params = lora_params(cfg, base_params)
  adapters = [p for p in lora.adapters(params)]
  assert len(adapters) == 2 * CFG.num_layers * 6  # q, k, v, o, mlp in and out: A and B each
  np.testing.assert_array_equal(np.asarray(model.apply({"params": params}, tokens)), base_logits)
  model, params = lora_params(cfg, base_params, b_scale=0.05)
  unmerged = np.asarray(model.apply({"params": params}, tokens))
  assert not np.allclose(unmerged, base_logits, atol=1e-3)
  merged = np.asarray(base.apply({"params": lora.merge(params, cfg)}, tokens))
  np.testing.assert_allclose(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_lora_dropout_drops_only_the_adapter_input_and_only_in_training():
  tokens, base, base_params, base_logits = base_model()
  cfg = dataclasses.replace(CFG, lora_rank=4, lora_dropout=0.5)
  train_mode = lambda m, p, seed: np.asarray(m.apply(  # noqa: E731
      {"params": p}, tokens, deterministic=False, rngs={"dropout": jax.random.key(seed)}))
  model, params = lora_params(cfg, base_params)  # B = 0: dropout has nothing to drop
  np.testing.assert_array_equal(train_mode(model, params, 0), base_logits)
  model, params = lora_params(cfg, base_params, b_scale=0.05)
  evaluation = np.asarray(model.apply({"params": params}, tokens))
  assert not np.allclose(train_mode(model, params, 0), evaluation, atol=1e-4)
  assert not np.allclose(train_mode(model, params, 0), train_mode(model, params, 1), atol=1e-4)
  merged = np.asarray(base.apply({"params": lora.merge(params, cfg)}, tokens))
  np.testing.assert_allclose(evaluation, merged, atol=1e-5)  # no dropout when evaluating


def grads_on(mesh_shape, cfg, config, base_params, data):
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(ml_collections.ConfigDict(
      dict(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])), devices)
  model, params = lora_params(cfg, base_params, b_scale=0.05 if cfg.lora_rank else 0.0)
  task = LMTask(config)
  task.bind(model)
  mask = task.trainable(params)
  _, shardings = state_lib.abstract_params(model, mesh)
  params = jax.device_put(params, shardings)
  fn = jax.jit(lambda p, b: train_lib._weighted_grads(task, p, mask, b, None, None))
  with sharding.rules_context(mesh):
    grads, aux = fn(params, sharding.shard_batch(data, mesh))
  return jax.device_get(aux["loss"]), jax.device_get(grads), mask


@pytest.mark.parametrize("variant", ["lora", "frozen"])
def test_lora_and_freezing_on_a_mesh_equal_single_device_and_train_only_their_part(variant):
  config = base_config()
  cfg = CFG
  if variant == "lora":
    config.lora.rank = 4
    cfg = dataclasses.replace(CFG, lora_rank=4)
  else:
    config.train.trainable, config.train.frozen = r"^block_1/|^ln_f/", r"_bias$"
  tokens = np.asarray(jax.random.randint(jax.random.key(4), (8, 17), 0, CFG.vocab_size),
                      np.int32)
  data = {"tokens": tokens}
  base_params = init(GPT(CFG), tokens[:, :-1])
  ref_loss, ref_grads, mask = grads_on((1, 1, 1), cfg, config, base_params, data)
  trained = {trainable.path_of(p) for p, _ in jax.tree_util.tree_leaves_with_path(ref_grads)}
  if variant == "lora":
    assert trained and all(lora.is_adapter(p) for p in trained)
  else:
    assert trained == {"block_1/attn/wq", "block_1/attn/wk", "block_1/attn/wv", "block_1/attn/wo",
                       "block_1/attn/bq", "block_1/attn/bk", "block_1/attn/bv", "block_1/attn/bo",
                       "block_1/ln1/norm/scale", "block_1/ln1/norm/bias", "block_1/ln2/norm/scale",
                       "block_1/ln2/norm/bias", "block_1/mlp/wi", "block_1/mlp/wo",
                       "ln_f/norm/scale", "ln_f/norm/bias"}
  for shape in [(2, 2, 2), (1, 4, 2)]:
    loss, grads, _ = grads_on(shape, cfg, config, base_params, data)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                           grads, ref_grads)


def test_the_planner_counts_only_the_trained_parameters_optimizer_state():
  from gptjax import chips, plan
  from gptjax.optim import make_optimizer
  config = base_config()
  config.model.vocab_size, config.model.num_heads = 128, 4
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  config.lora.rank = 8
  lay = plan.layout(config, chips.CHIPS["h100"], 8)
  planned = plan.state_bytes(config, lay)
  model = GPT(lay.model)
  mesh = sharding.make_mesh(config.mesh)
  params_abstract, params_shardings = state_lib.abstract_params(model, mesh)
  mask = trainable.trainable_mask(config, params_abstract)
  tx = make_optimizer(config.optim, config.train.steps)
  shardings = state_lib.state_shardings(tx, params_abstract, params_shardings, mesh, mask)
  state = state_lib.init_state(model, tx, mesh, shardings, 0, mask)
  device0 = lambda tree: sum(  # noqa: E731
      x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(tree))
  assert planned["optimizer"] == device0(state.opt_state)
  assert planned["num_trained"] == trainable.count(state.params, mask) < planned["num_params"]
  assert planned["gradients"] == device0(trainable.select(state.params, mask))  # float32
  assert planned["gradients"] < planned["params"] / 4


# ---------------------------------------------------------------------------------------------
# End to end: a base run, fine-tuned from it


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A tiny char-level LM (no chat tokens: fine-tuning must grow its vocabulary)."""
  tmp = tmp_path_factory.mktemp("base")
  config = load_config("tiny")
  config.data.data_dir = str(tmp / "data")
  train_lib.train(config, str(tmp / "w"))
  return str(tmp / "w")


def arithmetic_chats(path, n=64):
  """OpenAI-messages JSONL in plain ASCII (the tiny base run's characters)."""
  rng = np.random.RandomState(0)
  with open(path, "w") as f:
    for _ in range(n):
      a, b = rng.randint(0, 50, 2)
      messages = [{"role": "user", "content": f"what is {a} + {b}?"},
                  {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]
      if rng.rand() < 0.5:
        messages = [{"role": "system", "content": "answer in full"}] + messages
      f.write(json.dumps({"messages": messages}) + "\n")
  return str(path)


def sft_config(base_run, tmp_path, **overrides):
  c = load_config("sft", "smoke")
  base = load_config("tiny")
  c.model = base.model  # the base run's architecture and tokenizer
  c.data.seq_len = base.data.seq_len
  c.data.path = arithmetic_chats(tmp_path / "chats.jsonl")
  c.data.eval_fraction = 0.25
  c.train.log_every = 1
  c.init.workdir = base_run
  c.train.steps, c.eval.every, c.checkpoint.every, c.eval.max_batches = 6, 3, 3, 2
  for key, value in overrides.items():
    group, name = key.split("__")
    c[group][name] = value
  return c


def test_fine_tuning_grows_the_vocabulary_keeping_every_existing_logit(base_run, tmp_path):
  config = sft_config(base_run, tmp_path)
  config.train.steps = 1
  run = train_lib.build_run(config, tokenizer=init_from.source_tokenizer(config.init))
  source = init_from.open_source(config.init, run.mesh)
  fresh = state_lib.init_params(run.model, run.mesh, run.shardings.params, 0)
  params, record = init_from.load(source, fresh, run)
  known = source.tokenizer.vocab_size
  assert record["grown"] == ["wte"] and record["added_tokens"] == list(
      run.datasets.tokenizer.added_tokens) and record["fresh"] == []
  tokens = np.asarray(jax.random.randint(jax.random.key(5), (4, 32), 0, known))
  old = np.asarray(source.model.apply({"params": source.params}, tokens))
  new = np.asarray(run.model.apply({"params": params}, tokens))
  np.testing.assert_allclose(new[..., :known], old[..., :known], rtol=1e-6, atol=1e-6)
  wte = np.asarray(params["wte"])
  np.testing.assert_allclose(wte[known:known + 4],  # new rows: the mean of the loaded ones
                             np.broadcast_to(np.asarray(source.params["wte"])[:known].mean(0),
                                             (4, wte.shape[1])), rtol=1e-5)


def test_loading_onto_another_mesh_gives_identical_logits(base_run, tmp_path):
  config = load_config("tiny")
  config.init.workdir = base_run
  config.data.data_dir = str(tmp_path / "data")
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 4, 2
  run = train_lib.build_run(config, tokenizer=init_from.source_tokenizer(config.init))
  source = load_workdir(base_run)  # on its own mesh: data over all 8 devices
  params, record = init_from.load(init_from.open_source(config.init, run.mesh),
                                  state_lib.init_params(run.model, run.mesh,
                                                        run.shardings.params, 0), run)
  assert params["block_0"]["attn"]["wq"].sharding.spec == run.shardings.params[
      "block_0"]["attn"]["wq"].spec
  tokens = np.asarray(jax.random.randint(jax.random.key(6), (8, 32), 0,
                                         source.tokenizer.vocab_size))
  known = source.tokenizer.vocab_size
  old = np.asarray(source.model.apply({"params": source.params}, tokens))
  with sharding.rules_context(run.mesh):
    new = np.asarray(jax.jit(lambda p, t: run.model.apply({"params": p}, t))(params, tokens))
  np.testing.assert_allclose(new[..., :known], old[..., :known], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # fast beside it: test_lora_at_init_is_bit_identical_and_merged_equals_unmerged
def test_lora_fine_tuning_keeps_the_base_bit_identical_and_merges_to_a_checkpoint(
    base_run, tmp_path):
  from gptjax import lora_cli
  from gptjax.evaluate import evaluate_workdir
  config = sft_config(base_run, tmp_path, lora__rank=4, optim__lr=1e-2)
  train_lib.train(config, str(tmp_path / "ft"))
  base, tuned = load_workdir(base_run), load_workdir(str(tmp_path / "ft"))
  known = base.tokenizer.vocab_size
  record = json.load(open(tmp_path / "ft" / "init.json"))
  assert record["step"] == base.step and record["grown"] == ["wte"]
  flat_base = {trainable.path_of(p): np.asarray(x) for p, x in
               jax.tree_util.tree_leaves_with_path(base.params)}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tuned.params):
    name, value = trainable.path_of(path), np.asarray(leaf)
    if name.endswith(lora.B_SUFFIX):
      assert np.abs(value).max() > 0, f"{name} did not train"
    elif name == "wte":
      np.testing.assert_array_equal(value[:known], flat_base[name][:known])
    elif not lora.is_adapter(name):
      np.testing.assert_array_equal(value, flat_base[name], err_msg=name)
  # Merged: an ordinary checkpoint whose model equals the adapted one.
  lora_cli.save_merged(tuned, str(tmp_path / "merged"))
  merged = load_workdir(str(tmp_path / "merged"))
  assert merged.model.cfg.lora_rank == 0 and merged.step == tuned.step
  tokens = np.asarray(jax.random.randint(jax.random.key(8), (2, 32), 0, known))
  np.testing.assert_allclose(merged.model.apply({"params": merged.params}, tokens),
                             tuned.model.apply({"params": tuned.params}, tokens), atol=1e-5)
  assert abs(evaluate_workdir(str(tmp_path / "merged"))["eval/loss"]
             - evaluate_workdir(str(tmp_path / "ft"))["eval/loss"]) < 1e-4
  # Adapters alone: back onto the same LoRA model they give the same params.
  lora_cli.save_adapters(tuned, str(tmp_path / "adapters"))
  fresh = lora_params(tuned.model.cfg, trainable.merge(
      jax.device_get(tuned.params), {}))[1]
  restored = lora_cli.load_adapters(fresh, str(tmp_path / "adapters"))
  for name, value in lora.adapters(tuned.params).items():
    np.testing.assert_array_equal(lora.adapters(restored)[name], value)


@pytest.mark.slow  # fast beside it: tests/test_train.py's killed-then-resumed run (same loop)
def test_a_killed_fine_tuning_run_resumes_exactly(base_run, tmp_path):
  config = sft_config(base_run, tmp_path, train__trainable=r"^block_1/")
  train_lib.train(config, str(tmp_path / "straight"))
  with pytest.raises(Killed):
    train_lib.train(config, str(tmp_path / "resumed"), hooks=[kill_at(4)])
  train_lib.train(config, str(tmp_path / "resumed"))
  assert_same_metrics(tmp_path / "straight", tmp_path / "resumed")
  a, b = load_workdir(str(tmp_path / "straight")), load_workdir(str(tmp_path / "resumed"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)


def test_pretraining_with_document_masking_trains(tmp_path):
  config = load_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  config.data.tokenizer.kind, config.data.tokenizer.vocab_size = "sentencepiece", 512
  config.data.document_mask = True
  config.train.steps = config.eval.every = config.checkpoint.every = 2
  task = LMTask(config)
  ds = task.datasets()
  eos, spans = ds.tokenizer.eos_id, 0
  for _ in range(40):
    batch = next(ds.train)
    np.testing.assert_array_equal(batch["segment_ids"],
                                  np.cumsum(batch["tokens"][:, :-1] == eos, axis=1))
    spans += int((batch["segment_ids"][:, -1] > 0).sum())
  assert spans  # some windows really span two documents
  final = train_lib.train(config, str(tmp_path / "w"))
  assert np.isfinite(final["eval/loss"])
