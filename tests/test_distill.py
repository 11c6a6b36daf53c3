"""Distillation: the divergences against numpy, a student equal to its teacher, no gradient
into the teacher, chunked == whole, meshes == one device, and teacher -> student end to end."""

import functools

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
TEACHER = GPTConfig(vocab_size=72, num_layers=2, num_heads=4, embed_dim=48, max_len=32,
                    dropout=0.5)  # configured, yet a teacher's forward never drops
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


def models():
  student, teacher = GPT(STUDENT), GPT(TEACHER)
  return student, teacher, init(student, 0), {"teacher": init(teacher, 1)}


def jsd_task(student, teacher, loss_chunk=0):
  return task_for(student, teacher, loss_chunk, divergence="jsd", alpha=0.5, temperature=2.0)


@functools.lru_cache
def reference():
  """Loss, metrics and gradients (student's, teacher's) of the jsd task, whole, on one device:
  what chunking and meshes must reproduce. Compiled once for the tests that share it."""
  student, teacher, params, frozen = models()
  task, data = jsd_task(student, teacher), batch()
  fn = jax.value_and_grad(lambda p, f: task.loss(p, data, None, f), argnums=(0, 1),
                          has_aux=True)
  (loss, metrics), grads = jax.jit(fn)(params, frozen)
  return jax.device_get((loss, metrics, grads))


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


def test_a_student_equal_to_its_teacher_has_zero_divergence_and_the_lm_loss():
  model = GPT(STUDENT)
  params = init(model)
  data = batch()
  lm = LMTask(config_for())
  lm.bind(model)
  lm_loss, lm_metrics = jax.jit(lambda p: lm.loss(p, data, None, None))(params)
  for kind in KINDS:
    task = task_for(model, model, divergence=kind, alpha=0.3, temperature=2.0)
    loss, m = jax.jit(lambda p, f: task.loss(p, data, None, f))(params, {"teacher": params})
    assert abs(float(m["kl"])) < 1e-6, kind
    np.testing.assert_allclose(loss, 0.7 * m["ce"], rtol=1e-6)
    np.testing.assert_allclose(m["ce"], lm_loss, rtol=1e-6)  # ce is exactly the LM loss
    np.testing.assert_allclose(m["accuracy"], lm_metrics["accuracy"])
    assert m["weight"] == data["mask"].sum()


def test_the_loss_mixes_cross_entropy_and_the_scaled_divergence():
  student, teacher, params, frozen = models()
  data = batch()
  task = task_for(student, teacher, alpha=0.25, temperature=3.0, divergence="reverse")

  def both(params, frozen):
    inputs = data["tokens"][:, :-1]
    s = student.apply({"params": params}, inputs)[..., :VOCAB]
    t = teacher.apply({"params": frozen["teacher"]}, inputs)[..., :VOCAB]
    div = distill_divergence(s, t, "reverse", 0.5, 3.0)
    return task.loss(params, data, None, frozen), (div * data["mask"]).sum()

  (loss, m), div_sum = jax.jit(both)(params, frozen)
  np.testing.assert_allclose(loss, 0.75 * m["ce"] + 0.25 * m["kl"], rtol=1e-6)
  np.testing.assert_allclose(m["kl"], 9.0 * div_sum / data["mask"].sum(), rtol=1e-5)


def test_no_gradient_reaches_the_teacher_and_its_forward_is_deterministic():
  student, teacher, params, frozen = models()
  task, data = jsd_task(student, teacher), batch()
  _, _, (grads, to_teacher) = reference()
  assert all(not np.any(x) for x in jax.tree_util.tree_leaves(to_teacher))
  assert all(np.any(x) for x in jax.tree_util.tree_leaves(grads))
  f = lambda p, fr, rng=None: task.loss(p, data, rng, fr)[0]  # noqa: E731
  stopped = jax.jit(jax.grad(lambda p, fr: f(p, jax.lax.stop_gradient(fr))))(params, frozen)
  jax.tree_util.tree_map(np.testing.assert_array_equal, grads, stopped)
  # The student has no dropout: a dropout rng may change nothing, so the teacher ignores it.
  with_rng = jax.jit(f)
  np.testing.assert_array_equal(with_rng(params, frozen, jax.random.key(0)),
                                with_rng(params, frozen, jax.random.key(1)))


def test_chunked_equals_whole():
  student, teacher, params, frozen = models()
  task, data = jsd_task(student, teacher, loss_chunk=4), batch()
  fn = jax.value_and_grad(lambda p: task.loss(p, data, None, frozen)[0])
  loss, grads = jax.jit(fn)(params)
  ref_loss, _, (ref_grads, _) = reference()
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert_trees_close(grads, ref_grads, 1e-5)


def grads_on(mesh):
  student, teacher, params, frozen = models()
  task = jsd_task(student, teacher)
  params = jax.device_put(params, state_lib.abstract_params(student, mesh)[1])
  frozen = {"teacher": jax.device_put(frozen["teacher"], state_lib.abstract_params(
      teacher, mesh, replicate_indivisible=True)[1])}
  fn = jax.jit(jax.value_and_grad(lambda p, b, f: task.loss(p, b, None, f), has_aux=True))
  with sharding.rules_context(mesh):
    (loss, metrics), grads = fn(params, sharding.shard_batch(batch(), mesh), frozen)
  assert grads["wte"].sharding.mesh.shape == mesh.shape  # it really ran on that mesh
  return jax.device_get((loss, metrics, grads))


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 4, 2)])
def test_loss_and_grads_on_a_mesh_equal_single_device(shape):
  ref_loss, ref_metrics, (ref_grads, _) = reference()
  loss, metrics, grads = grads_on(sharding.make_mesh(ml_collections.ConfigDict(
      dict(data=shape[0], fsdp=shape[1], tensor=shape[2]))))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  for k in ("ce", "kl", "accuracy", "weight"):
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5, err_msg=k)
  assert_trees_close(grads, ref_grads, 1e-5)


def test_config_mistakes_are_user_errors():
  student, teacher, _, _ = models()
  with pytest.raises(UserError, match="distill.divergence"):
    DistillTask(config_for(divergence="kl"))
  with pytest.raises(UserError, match="jsd_beta"):
    DistillTask(config_for(jsd_beta=1.5))
  task = DistillTask(config_for())
  task.config.data.seq_len = 32
  task.bind(teacher)
  with pytest.raises(UserError, match="max_len=16, shorter than data.seq_len=32"):
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
  c.data.max_chars = 20_000  # fewer distinct characters than the teacher's corpus has
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
  assert final["eval/perplexity"] == pytest.approx(np.exp(final["eval/ce"]), rel=1e-9)  # not the mix
  teacher = load_workdir(teacher_run[0])
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(kept["frozen"]["teacher"]),
                         jax.device_get(teacher.params))
  student = load_workdir(str(tmp_path / "s"))  # the teacher's tokenizer, not its own corpus'
  assert student.tokenizer.to_json() == teacher.tokenizer.to_json()
  assert len(set(SHAKESPEARE.read_text()[:20_000])) < teacher.tokenizer.vocab_size
  assert student.model.cfg.num_layers < teacher.model.cfg.num_layers


def test_a_teacher_with_another_tokenizer_is_one_user_error(teacher_run):
  task = DistillTask(student_config(teacher_run))
  task.tokenizer = CharTokenizer("abc")
  mesh = sharding.make_mesh(task.config.mesh)
  with pytest.raises(UserError, match="another tokenizer"):
    task.init_frozen(mesh)
  task.config.distill.teacher_step = 7
  with pytest.raises(UserError, match="teacher_step=7 is not among"):
    task.datasets()
