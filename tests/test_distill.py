"""Distillation: the divergences against numpy, a student equal to its teacher, no gradient
into the teacher, chunked == whole, meshes == one device, and teacher -> student end to end."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import SHAKESPEARE
from test_train import load_config
from gptjax import sharding, state as state_lib, train as train_lib
from gptjax.config import base_config
from gptjax.data.tokenizers import CharTokenizer
from gptjax.errors import UserError
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics
from gptjax.model import GPT, GPTConfig
from gptjax.tasks.distill import DistillTask, distill_divergence
from gptjax.tasks.lm import LMTask

VOCAB = 60  # the tokenizer's ids; both tables are padded beyond it (and differently)
STUDENT = GPTConfig(vocab_size=64, num_layers=1, num_heads=4, embed_dim=32, max_len=16)
TEACHER = GPTConfig(vocab_size=72, num_layers=2, num_heads=4, embed_dim=48, max_len=32)
KINDS = ["forward", "reverse", "jsd"]


def config_for(loss_chunk=0, **distill):
  c = base_config()
  c.task.name, c.task.loss_chunk, c.data.seq_len = "distill", loss_chunk, 16
  c.distill.update(distill)
  return c


def task_for(student, teacher, loss_chunk=0, **distill):
  task = DistillTask(config_for(loss_chunk, **distill))
  task.bind(student)
  task.bind_teacher(teacher, VOCAB)
  return task


def init(model, seed=0):
  return nn.unbox(model.init(jax.random.key(seed), np.zeros((1, 16), np.int32))["params"])


def batch(n=8, seed=0):
  """Tokens below VOCAB and a ragged mask: rows count different numbers of targets."""
  tokens = np.asarray(jax.random.randint(jax.random.key(seed), (n, 17), 0, VOCAB), np.int32)
  lengths = np.random.RandomState(seed).randint(1, 17, size=n)
  return {"tokens": tokens,
          "mask": (np.arange(16)[None] < lengths[:, None]).astype(np.float32)}


def models(teacher_cfg=TEACHER):
  student, teacher = GPT(STUDENT), GPT(teacher_cfg)
  return student, teacher, init(student, 0), {"teacher": init(teacher, 1)}


def assert_trees_close(a, b, tol):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


# ---------------------------------------------------------------------------------------------
# The divergence math


def np_kl(p, q):
  return (p * (np.log(p) - np.log(q))).sum(-1)


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_two_symbol_divergences_by_hand():
  student = jnp.asarray([[[0.0, 0.0]]])  # (1/2, 1/2)
  teacher = jnp.asarray([[[np.log(3.0), 0.0]]])  # (3/4, 1/4)
  forward = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
  reverse = 0.5 * np.log(2 / 3) + 0.5 * np.log(2.0)
  m = np.asarray([0.625, 0.375])  # beta = 1/2: the plain Jensen-Shannon divergence
  jsd = 0.5 * np_kl(np.asarray([0.75, 0.25]), m) + 0.5 * np_kl(np.asarray([0.5, 0.5]), m)
  for kind, beta, want in [("forward", 0.5, forward), ("reverse", 0.5, reverse),
                           ("jsd", 0.0, forward), ("jsd", 1.0, reverse), ("jsd", 0.5, jsd)]:
    got = distill_divergence(student, teacher, kind, beta)
    np.testing.assert_allclose(got, [[want]], rtol=1e-6, err_msg=f"{kind} beta={beta}")
  # Temperature 2 on logits (2 log 3, 0) is the teacher above.
  np.testing.assert_allclose(distill_divergence(student, 2 * teacher, "forward", 0.5, 2.0),
                             [[forward]], rtol=1e-6)


@pytest.mark.parametrize("kind, beta", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.0),
                                        ("jsd", 1.0), ("jsd", 0.5), ("jsd", 0.1), ("jsd", 0.9)])
def test_divergences_match_numpy(kind, beta):
  rng = np.random.RandomState(0)
  s, t, temperature = 3 * rng.randn(2, 3, 11), 3 * rng.randn(2, 3, 11), 1.5
  ps, pt = np_softmax(s / temperature), np_softmax(t / temperature)
  if kind == "forward" or (kind == "jsd" and beta == 0.0):
    want = np_kl(pt, ps)
  elif kind == "reverse" or beta == 1.0:
    want = np_kl(ps, pt)
  else:  # TRL: m = beta * teacher + (1 - beta) * student
    m = beta * pt + (1 - beta) * ps
    want = beta * np_kl(pt, m) + (1 - beta) * np_kl(ps, m)
  got = distill_divergence(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), kind, beta,
                           temperature)
  assert got.shape == (2, 3) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The task's loss


@pytest.mark.parametrize("kind", KINDS)
def test_a_student_equal_to_its_teacher_has_zero_divergence_and_the_lm_loss(kind):
  model = GPT(STUDENT)
  params = init(model)
  task = task_for(model, model, divergence=kind, alpha=0.3, temperature=2.0)
  data = batch()
  loss, m = jax.jit(lambda p, f: task.loss(p, data, None, f))(params, {"teacher": params})
  assert abs(float(m["kl"])) < 1e-6
  np.testing.assert_allclose(loss, 0.7 * m["ce"], rtol=1e-6)
  lm = LMTask(task.config)
  lm.bind(model)
  lm_loss, lm_metrics = lm.loss(params, data, None, None)
  np.testing.assert_allclose(m["ce"], lm_loss, rtol=1e-6)  # ce is exactly the LM loss
  np.testing.assert_allclose(m["accuracy"], lm_metrics["accuracy"])
  assert m["weight"] == data["mask"].sum()


def test_the_loss_mixes_cross_entropy_and_the_scaled_divergence():
  student, teacher, params, frozen = models()
  data = batch()
  task = task_for(student, teacher, alpha=0.25, temperature=3.0, divergence="reverse")
  loss, m = task.loss(params, data, None, frozen)
  np.testing.assert_allclose(loss, 0.75 * m["ce"] + 0.25 * m["kl"], rtol=1e-6)
  s = student.apply({"params": params}, data["tokens"][:, :-1])[..., :VOCAB]
  t = teacher.apply({"params": frozen["teacher"]}, data["tokens"][:, :-1])[..., :VOCAB]
  div = distill_divergence(s, t, "reverse", 0.5, 3.0)
  want = 9.0 * (div * data["mask"]).sum() / data["mask"].sum()
  np.testing.assert_allclose(m["kl"], want, rtol=1e-5)


def test_no_gradient_reaches_the_teacher_and_its_forward_is_deterministic():
  student, _, params, _ = models()
  teacher = GPT(dataclasses.replace(TEACHER, dropout=0.5))
  frozen = {"teacher": init(teacher, 1)}
  task = task_for(student, teacher, divergence="jsd", alpha=0.5, temperature=2.0)
  data = batch()
  f = lambda p, fr, rng=None: task.loss(p, data, rng, fr)[0]  # noqa: E731
  to_teacher = jax.jit(jax.grad(f, argnums=1))(params, frozen)
  assert all(not np.any(x) for x in jax.tree_util.tree_leaves(to_teacher))
  grads = jax.jit(jax.grad(f))(params, frozen)
  stopped = jax.jit(jax.grad(lambda p, fr: f(p, jax.lax.stop_gradient(fr))))(params, frozen)
  assert any(np.any(x) for x in jax.tree_util.tree_leaves(grads))
  jax.tree_util.tree_map(np.testing.assert_array_equal, grads, stopped)
  # The student has no dropout: a dropout rng may change nothing, so the teacher ignores it.
  with_rng = jax.jit(f)
  np.testing.assert_array_equal(with_rng(params, frozen, jax.random.key(0)),
                                with_rng(params, frozen, jax.random.key(1)))


@pytest.mark.parametrize("kind", ["forward", "jsd"])
def test_chunked_equals_whole(kind):
  student, teacher, params, frozen = models()
  data = batch()
  out = []
  for chunk in (0, 4):
    task = task_for(student, teacher, chunk, divergence=kind, alpha=0.5, temperature=2.0)
    out.append(jax.jit(jax.value_and_grad(lambda p: task.loss(p, data, None, frozen)[0]))(params))
  np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-5)
  assert_trees_close(out[1][1], out[0][1], 1e-5)


def grads_on(mesh):
  student, teacher, params, frozen = models()
  task = task_for(student, teacher, divergence="jsd", alpha=0.5, temperature=2.0)
  params = jax.device_put(params, state_lib.abstract_params(student, mesh)[1])
  frozen = {"teacher": jax.device_put(frozen["teacher"], state_lib.abstract_params(
      teacher, mesh, replicate_indivisible=True)[1])}
  fn = jax.jit(jax.value_and_grad(lambda p, b, f: task.loss(p, b, None, f), has_aux=True))
  with sharding.rules_context(mesh):
    (loss, metrics), grads = fn(params, sharding.shard_batch(batch(), mesh), frozen)
  return jax.device_get((loss, metrics, grads, params["wte"]))


def test_loss_and_grads_on_a_mesh_equal_single_device():
  single = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
  ref_loss, ref_metrics, ref_grads, _ = grads_on(single)
  for shape in [(2, 2, 2), (1, 4, 2)]:
    mesh = sharding.make_mesh(ml_collections.ConfigDict(
        dict(data=shape[0], fsdp=shape[1], tensor=shape[2])))
    loss, metrics, grads, _ = grads_on(mesh)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], ref_metrics["kl"], rtol=1e-5)
    assert_trees_close(grads, ref_grads, 1e-5)


def test_config_mistakes_are_user_errors():
  student, teacher, _, _ = models()
  with pytest.raises(UserError, match="distill.divergence"):
    DistillTask(config_for(divergence="kl"))
  with pytest.raises(UserError, match="jsd_beta"):
    DistillTask(config_for(jsd_beta=1.5))
  with pytest.raises(UserError, match="max_len=16, shorter than data.seq_len=32"):
    task = DistillTask(config_for())
    task.config.data.seq_len = 32
    task.bind(teacher)
    task.bind_teacher(student, VOCAB)
  with pytest.raises(UserError, match="teacher_workdir is not set"):
    DistillTask(config_for()).datasets()


# ---------------------------------------------------------------------------------------------
# End to end: a tiny teacher, then a student of it


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  if not SHAKESPEARE.exists():
    pytest.skip(f"{SHAKESPEARE} not found (../shared/data beside the repo)")
  tmp = tmp_path_factory.mktemp("teacher")
  c = load_config("distill", "smoke_teacher")
  c.data.path, c.data.data_dir = str(SHAKESPEARE), str(tmp / "data")
  c.train.steps = c.eval.every = c.checkpoint.every = 2
  train_lib.train(c, str(tmp / "w"))
  return str(tmp / "w"), str(tmp / "data")


def student_config(teacher_run):
  workdir, data_dir = teacher_run
  c = load_config("distill", "smoke")
  c.data.path, c.data.data_dir = str(SHAKESPEARE), data_dir
  c.distill.teacher_workdir = workdir
  c.train.steps = c.eval.every = c.checkpoint.every = 3
  c.train.log_every = 1
  return c


def test_a_student_trains_from_a_saved_teacher_that_stays_unchanged(teacher_run, tmp_path,
                                                                     monkeypatch):
  kept = {}
  real = DistillTask.init_frozen

  def keep(self, mesh):
    kept["frozen"] = real(self, mesh)
    return kept["frozen"]

  monkeypatch.setattr(DistillTask, "init_frozen", keep)
  final = train_lib.train(student_config(teacher_run), str(tmp_path / "s"))
  rows = read_metrics(str(tmp_path / "s"))
  train_rows = [r for r in rows if "train/kl" in r]
  assert len(train_rows) == 3
  for row in train_rows + [final]:
    assert all(np.isfinite(v) for v in row.values()), row
  assert final["eval/kl"] > 0 and final["eval/ce"] > 0
  teacher = load_workdir(teacher_run[0])
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(kept["frozen"]["teacher"]),
                         jax.device_get(teacher.params))
  student = load_workdir(str(tmp_path / "s"))  # tokenized with the teacher's tokenizer
  assert student.tokenizer.to_json() == teacher.tokenizer.to_json()
  assert student.model.cfg.num_layers < teacher.model.cfg.num_layers


def test_a_teacher_with_another_tokenizer_is_one_user_error(teacher_run):
  task = DistillTask(student_config(teacher_run))
  task.tokenizer = CharTokenizer("abc")
  mesh = sharding.make_mesh(task.config.mesh)
  with pytest.raises(UserError, match="another tokenizer"):
    task.init_frozen(mesh)
  with pytest.raises(UserError, match="teacher_step=7 is not among"):
    task.config.distill.teacher_step = 7
    task.datasets()
