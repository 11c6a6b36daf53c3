"""Knowledge distillation (task.name=distill): a student learns the next token and, token by
token, the whole next-token distribution of a frozen teacher (Hinton et al. 2015).

    loss = (1 - alpha) * CE(student, targets) + alpha * T^2 * D(student / T, teacher / T)

per target token, averaged over the batch's "mask" (metrics["weight"] counts those tokens).
The data is the pretraining data (tasks/lm.py) tokenized with the TEACHER's tokenizer: both
models must give a distribution over the same ids. D compares the two over the tokenizer's
real vocabulary (the tables' padding ids are sliced off first) and is `distill.divergence`:

    forward  KL(teacher || student)  mass-covering: the student spreads over all the teacher's
    reverse  KL(student || teacher)  mode-seeking: the student may drop some of the teacher's
    jsd      generalised Jensen-Shannon of GKD (Agarwal et al. 2024) with beta = jsd_beta:
             m = beta * p_teacher + (1 - beta) * p_student,
             JSD = beta * KL(teacher || m) + (1 - beta) * KL(student || m)

`distill_divergence` follows TRL's GKDTrainer.generalized_jsd_loss (trl/experimental/gkd):
the same mixture and weights, and beta = 0 / beta = 1 computed as exactly forward / reverse
KL. The mixture formula itself goes to 0 at both ends (m becomes one of the two), so those
endpoints are special cases, not limits: for small beta, JSD is about beta times smaller than
forward KL. TRL applies no T^2; this task does (Hinton's scaling keeps the gradient of the
soft term comparable across temperatures). metrics["kl"] is T^2 * D, the term alpha weights,
and metrics["ce"] the plain next-token cross-entropy at T = 1 over the student's whole table,
exactly task.name=lm's loss, so eval/ce compares with an LM baseline's eval/loss.

The teacher (`distill.teacher_workdir`, gptjax.frozen) may be larger than the student; its
forward is deterministic and under stop_gradient. With task.loss_chunk both models' final
hidden states are computed whole and their float32 logits one chunk of positions at a time.
"""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp

from gptjax import frozen as frozen_lib, init_from, logprobs, losses
from gptjax.errors import UserError
from gptjax.tasks.lm import LMTask

FLAG = "--config.distill.teacher_workdir"
DIVERGENCES = ("forward", "reverse", "jsd")


def _kl(logp_BTV, logq_BTV):
  """KL(p || q) per position, from log-probs (finite: they come from finite logits)."""
  return jnp.sum(jnp.exp(logp_BTV) * (logp_BTV - logq_BTV), axis=-1)


def distill_divergence(student_logits_BTV, teacher_logits_BTV, kind: str = "forward",
                       beta: float = 0.5, temperature: float = 1.0) -> jax.Array:
  """Per-position divergence [B, T] (float32, nats) between softmax(logits / temperature) of
  the student and the teacher: "forward" KL(teacher||student), "reverse" KL(student||teacher)
  or "jsd" (TRL's generalised JSD; beta 0 / 1 are exactly forward / reverse KL)."""
  logs_BTV = jax.nn.log_softmax(student_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
  logt_BTV = jax.nn.log_softmax(teacher_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
  if kind == "jsd" and beta in (0.0, 1.0):
    kind = "forward" if beta == 0.0 else "reverse"
  if kind == "forward":
    return _kl(logt_BTV, logs_BTV)
  if kind == "reverse":
    return _kl(logs_BTV, logt_BTV)
  if kind != "jsd":
    raise UserError(f"distill.divergence={kind!r} is not one of {DIVERGENCES}")
  logm_BTV = jnp.logaddexp(logs_BTV + math.log1p(-beta), logt_BTV + math.log(beta))
  return beta * _kl(logt_BTV, logm_BTV) + (1.0 - beta) * _kl(logs_BTV, logm_BTV)


def teacher_tokenizer(distill_cfg):
  """The tokenizer of the teacher's checkpoint, read without restoring its params."""
  if not distill_cfg.teacher_workdir:
    raise UserError(f"{FLAG} is not set: point it at a trained run's workdir (the teacher)")
  source = types.SimpleNamespace(workdir=distill_cfg.teacher_workdir,
                                 step=distill_cfg.teacher_step)
  try:
    return init_from.source_tokenizer(source)
  except UserError as e:  # its messages name init.*: name the setting the user gave here
    raise UserError(str(e).replace("--config.init.workdir", FLAG).replace(
        "--config.init.step", "--config.distill.teacher_step")) from None


class DistillTask(LMTask):
  perplexity_of = "ce"  # the student's own cross-entropy, not the mixed loss

  def __init__(self, config):
    super().__init__(config)
    ds = config.distill
    checks = [
        (ds.divergence in DIVERGENCES,
         f"distill.divergence={ds.divergence!r} is not one of {DIVERGENCES}"),
        (0.0 <= ds.alpha <= 1.0, f"distill.alpha={ds.alpha} must be in [0, 1]"),
        (ds.temperature > 0, f"distill.temperature={ds.temperature} must be positive"),
        (0.0 <= ds.jsd_beta <= 1.0, f"distill.jsd_beta={ds.jsd_beta} must be in [0, 1]"),
    ]
    for ok, message in checks:
      if not ok:
        raise UserError(message)
    self.teacher = None  # the teacher's module, once init_frozen (or bind_teacher) ran
    self.vocab_size = 0  # the real vocabulary both distributions are compared over

  def datasets(self, tokenizer=None):
    """LM windows in the teacher's tokenizer (or `tokenizer`: a resumed run's own, checked
    against the teacher's in init_frozen)."""
    return super().datasets(tokenizer or teacher_tokenizer(self.config.distill))

  def init_frozen(self, mesh):
    ds = self.config.distill
    loaded = frozen_lib.load(ds.teacher_workdir, ds.teacher_step, mesh, FLAG)
    frozen_lib.require_same_tokenizer(loaded, self.tokenizer, FLAG)
    self.bind_teacher(loaded.model, loaded.tokenizer.vocab_size, loaded.workdir)
    return {"teacher": loaded.params}

  def bind_teacher(self, teacher, vocab_size: int, workdir: str = "") -> None:
    """Keep the teacher's module; both tables must hold the `vocab_size` real tokens and
    the teacher must read a whole window."""
    where = f"{FLAG}={workdir}" if workdir else "the teacher"
    seq_len = self.config.data.seq_len
    if teacher.cfg.max_len < seq_len:
      raise UserError(f"{where} has model.max_len={teacher.cfg.max_len}, shorter than "
                      f"data.seq_len={seq_len}: lower --config.data.seq_len to it")
    tables = {"teacher": teacher.cfg.vocab_size, "student": self.model.cfg.vocab_size}
    if min(tables.values()) < vocab_size:
      raise UserError(f"{where}: the output tables {tables} must each cover the "
                      f"tokenizer's {vocab_size} ids")
    self.teacher, self.vocab_size = teacher, vocab_size

  def loss(self, params, batch, rng, frozen):
    ds = self.config.distill
    tokens = batch["tokens"]
    inputs_BT, targets_BT = tokens[:, :-1], tokens[:, 1:]
    segment_ids = batch.get("segment_ids")
    hidden_BTD, head_DV = logprobs.forward_hidden(self.model, params, inputs_BT, rng, segment_ids)
    teacher_params = jax.lax.stop_gradient(frozen["teacher"])  # frozen: never a gradient
    thidden_BTE, thead_EV = logprobs.forward_hidden(self.teacher, teacher_params, inputs_BT,
                                                    None, segment_ids)
    V = self.vocab_size

    def per_token(h_BtD, th_BtE, t_Bt):
      logits_BtV = losses.logits_from_hidden(h_BtD, head_DV)
      tlogits_BtV = losses.logits_from_hidden(th_BtE, thead_EV)
      div_Bt = distill_divergence(logits_BtV[..., :V], tlogits_BtV[..., :V], ds.divergence,
                                  ds.jsd_beta, ds.temperature)
      return (losses.token_cross_entropy(logits_BtV, t_Bt), div_Bt,
              losses.accuracy(logits_BtV, t_Bt))

    chunk = self.config.task.loss_chunk
    if chunk:
      ce_BT, div_BT, hit_BT = losses.map_over_length(per_token, chunk, hidden_BTD, thidden_BTE,
                                                     targets_BT)
    else:
      ce_BT, div_BT, hit_BT = per_token(hidden_BTD, thidden_BTE, targets_BT)
    mask = batch.get("mask")
    ce, weight = losses.masked_mean(ce_BT, mask)
    kl = ds.temperature ** 2 * losses.masked_mean(div_BT, mask)[0]
    loss = (1.0 - ds.alpha) * ce + ds.alpha * kl
    acc, _ = losses.masked_mean(hit_BT, mask)
    return loss, {"loss": loss, "ce": ce, "kl": kl, "accuracy": acc, "weight": weight}
