"""THE trainer: one jitted, sharded train step and the loop around it.

    gptjax-train --config=configs/NAME.py[:ARG] --workdir=DIR [--config.a.b=VALUE ...]

Re-running the same command on the same workdir resumes from the newest checkpoint exactly
(train state, data-iterator position, metrics file). Objectives plug in through
`gptjax.tasks`; the loop never branches on the task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gptjax import checkpoint, distributed, init_from, metrics as metrics_lib, sharding
from gptjax import state as state_lib, storage, trainable, xla_flags
from gptjax.config import planned_vocab_size
from gptjax.errors import Preempted, UserError, define_config_flag, run_app, run_cli, warn
from gptjax.model import GPT, GPTConfig, count_params, padded
from gptjax.optim import decay_length, effective_warmup, learning_rate_schedule, make_optimizer
from gptjax.checkpoint_cadence import WallClockCadence
from gptjax.preemption import PreemptionWatch
from gptjax.prefetch import DevicePrefetcher
from gptjax.tasks import make_task

Hook = Callable[[int, Any], None]  # (completed steps, state), called after every step


class NonFiniteLossError(UserError):
  """Training produced NaN/inf; the newest checkpoint on disk is still the last good one."""


def validate(config) -> None:
  """Config mistakes as one clear line each, before anything is compiled."""
  tr = config.train
  checks = [
      (tr.steps > 0, f"train.steps must be positive, got {tr.steps}"),
      (tr.grad_accum > 0 and tr.batch_size % tr.grad_accum == 0,
       f"train.batch_size={tr.batch_size} must divide by train.grad_accum={tr.grad_accum}"),
      (tr.batch_size % jax.process_count() == 0,
       f"train.batch_size={tr.batch_size} must divide by the {jax.process_count()} processes"),
      (config.data.seq_len > 0, f"data.seq_len must be positive, got {config.data.seq_len}"),
      (config.eval.every > 0 and config.checkpoint.every > 0 and tr.log_every > 0,
       "eval.every, checkpoint.every and train.log_every must be positive"),
      (0 <= config.checkpoint.get("every_minutes", 0) < float("inf"),
       "checkpoint.every_minutes must be 0 (off) or a positive number of minutes"),
      (0.0 < config.data.eval_fraction < 1.0, "data.eval_fraction must be in (0, 1)"),
      (not (config.data.eval_path or config.data.format == "parallel")
       or config.task.name == "sft", "data.eval_path and data.format=parallel are read by "
       f"task.name=sft (conversations), not {config.task.name!r}"),
  ]
  for ok, message in checks:
    if not ok:
      raise UserError(message)
  if config.eval.evaluators:  # a misspelt name fails now, not at the first evaluation
    from gptjax.evals import registry
    registry.names(config.eval.evaluators)


def join_processes(config) -> None:
  """Multi-host: join the other processes (gptjax.distributed) before JAX starts."""
  distributed.initialize(config.train.distributed, config.train.heartbeat_timeout)


def check_batch_fits_mesh(config, mesh) -> None:
  shards = sharding.batch_divisor(mesh)
  micro = config.train.batch_size // config.train.grad_accum
  if micro % shards:
    raise UserError(f"microbatch train.batch_size/train.grad_accum={micro} must divide by "
                    f"mesh.data*mesh.fsdp={shards}")
  if config.data.eval_batch_size % shards:
    raise UserError(f"data.eval_batch_size={config.data.eval_batch_size} must divide by "
                    f"mesh.data*mesh.fsdp={shards}")


# ---------------------------------------------------------------------------------------------
# The step functions


def _microbatches(batch: dict, n: int) -> dict:
  """[B, ...] -> [n, B/n, ...] taking every n-th row, so each device keeps an equal share."""
  def split(x):
    x = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(None, ("data", "fsdp")))
  return jax.tree_util.tree_map(split, batch)


def _weighted_grads(task, params, mask, batch, rng, frozen):
  """Gradient of the weight-scaled loss, so microbatch sums equal the large-batch gradient;
  only of the trainable parameters (`mask`), so frozen ones get no gradient at all."""
  def scaled(trained):
    loss, aux = task.loss(trainable.merge(params, trained), batch, rng, frozen)
    return loss * aux["weight"], aux
  grads, aux = jax.grad(scaled, has_aux=True)(trainable.select(params, mask))
  return grads, aux


def make_train_step(task, tx, grad_accum: int, seed: int, schedule: optax.Schedule, mask=None):
  """(state, batch, frozen) -> (state, metrics); jit and shard it with `jit_train_step`.
  `mask` (gptjax.trainable) picks the parameters that train; the optimizer sees only them."""

  def train_step(state, batch, frozen):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    if grad_accum == 1:
      grads, aux = _weighted_grads(task, state.params, mask, batch, rng, frozen)
    else:
      micro = _microbatches(batch, grad_accum)

      def body(carry, xs):
        index, mb = xs
        g, a = _weighted_grads(task, state.params, mask, mb, jax.random.fold_in(rng, index),
                               frozen)
        a = {k: v * a["weight"] if k != "weight" else v for k, v in a.items()}
        return jax.tree_util.tree_map(jnp.add, carry, (g, a)), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, trainable.select(state.params, mask))
      aux_shape = jax.eval_shape(lambda: task.loss(state.params, jax.tree_util.tree_map(
          lambda x: x[0], micro), rng, frozen)[1])
      aux0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), aux_shape)
      (grads, aux), _ = jax.lax.scan(body, (zeros, aux0), (jnp.arange(grad_accum), micro))
      aux = {k: v / aux["weight"] if k != "weight" else v for k, v in aux.items()}
    total = jnp.maximum(aux["weight"], 1e-9)
    grads = jax.tree_util.tree_map(lambda g: g / total, grads)
    trained = trainable.select(state.params, mask)
    updates, opt_state = tx.update(grads, state.opt_state, trained)
    params = trainable.merge(state.params, optax.apply_updates(trained, updates))
    out = {f"train/{k}": v for k, v in aux.items() if k != "weight"}
    out["train/grad_norm"] = optax.global_norm(grads)
    out["train/lr"] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out

  return train_step


def jit_train_step(step_fn, mesh, state_shardings, frozen_shardings=None, donate: bool = True):
  return jax.jit(step_fn, donate_argnums=(0,) if donate else (),
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh), frozen_shardings),
                 out_shardings=(state_shardings, sharding.replicated(mesh)))


def make_eval_step(task, mesh):
  """(params, batch, frozen) -> weighted sums of the task's metrics over the batch."""
  def eval_step(params, batch, frozen):
    _, aux = task.loss(params, batch, None, frozen)
    w = aux["weight"]
    return {k: (v * w if k != "weight" else w) for k, v in aux.items()}
  return jax.jit(eval_step, in_shardings=(None, sharding.batch_sharding(mesh), None),
                 out_shardings=sharding.replicated(mesh))


def evaluate(eval_step, params, frozen, eval_splits: dict, mesh, max_batches: int = 0,
             weight_unit: str = "tokens", perplexity_of: str = "loss") -> dict:
  """Whole-split (or first `max_batches`) held-out metrics: weighted means over every item
  (token, pair, ...) of the split; perplexity = exp of the metric `perplexity_of` names
  (a per-token cross-entropy; "" = none)."""
  results = {}
  for split, make_iter in eval_splits.items():
    sums = None
    for i, batch in enumerate(make_iter()):
      if max_batches and i >= max_batches:
        break
      out = eval_step(params, sharding.shard_batch(batch, mesh), frozen)
      sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    if sums is None:
      raise UserError(f"held-out split {split!r} is empty: raise data.eval_fraction")
    sums = jax.device_get(sums)
    weight = float(sums.pop("weight"))
    prefix = "eval" if split == "validation" else f"eval_{split}"
    for k, v in sums.items():
      results[f"{prefix}/{k}"] = float(v) / weight
    if perplexity_of:
      results[f"{prefix}/perplexity"] = math.exp(min(results[f"{prefix}/{perplexity_of}"], 700.0))
    results[f"{prefix}/{weight_unit}"] = weight
  return results


# ---------------------------------------------------------------------------------------------
# Building a run


@dataclasses.dataclass
class Run:
  config: Any
  mesh: Any
  task: Any
  datasets: Any
  model: GPT
  model_cfg: GPTConfig
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  shardings: state_lib.TrainState
  abstract: state_lib.TrainState
  frozen: Any
  mask: Any  # which parameters train (gptjax.trainable); None = all


def build_run(config, tokenizer=None, with_data: bool = True, devices=None) -> Run:
  """Everything a run needs but its state; `tokenizer`: reuse a checkpoint's. Without data
  (shape-only uses: compiling for memory checks) the vocabulary comes from the config;
  `devices` (default: all) may be another machine's, to compile for them ahead of time."""
  join_processes(config)
  validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  check_batch_fits_mesh(config, mesh)
  task = make_task(config)
  datasets = task.datasets(tokenizer=tokenizer) if with_data else None
  vocab = datasets.tokenizer.vocab_size if with_data else planned_vocab_size(config)
  model_cfg = GPTConfig.from_config(config, vocab)
  _note_adjustments(config, vocab, model_cfg)
  if config.data.seq_len > model_cfg.max_len:
    raise UserError(f"data.seq_len={config.data.seq_len} exceeds model.max_len="
                    f"{model_cfg.max_len}")
  tensor = mesh.shape["tensor"]
  if model_cfg.num_heads % tensor or model_cfg.kv_heads % tensor:
    raise UserError(f"model.num_heads={model_cfg.num_heads} and its key/value heads "
                    f"({model_cfg.kv_heads}) must divide by mesh.tensor={tensor}: change one")
  model = GPT(model_cfg)
  task.bind(model)
  params_abstract, params_shardings = state_lib.abstract_params(model, mesh)
  mask = task.trainable(params_abstract)
  tx = make_optimizer(config.optim, config.train.steps)
  shardings = state_lib.state_shardings(tx, params_abstract, params_shardings, mesh, mask)
  return Run(config=config, mesh=mesh, task=task, datasets=datasets, model=model,
             model_cfg=model_cfg, tx=tx,
             schedule=learning_rate_schedule(config.optim, config.train.steps),
             shardings=shardings, abstract=state_lib.abstract_state(tx, params_abstract, mask),
             frozen=task.init_frozen(mesh), mask=mask)


def _note_adjustments(config, vocab: int, model_cfg: GPTConfig) -> None:
  """Say what the run changed from the config on the user's behalf."""
  own = padded(config.model.vocab_size or vocab, config.model.vocab_multiple or 1)
  if model_cfg.vocab_size != own:
    warn(f"vocabulary padded from {own} to {model_cfg.vocab_size}, a multiple "
         f"of mesh.tensor={config.mesh.tensor}, so the output layer splits over it (padded "
         "ids are never sampled)")
  warmup = effective_warmup(config.optim, config.train.steps)
  if warmup != config.optim.warmup_steps:
    warn(f"optim.warmup_steps={config.optim.warmup_steps} capped at {warmup}, half of the "
         f"{decay_length(config.optim, config.train.steps)}-step decay, for this shorter run")


# How a model runs, not what it is: these may change between a run and its resumption.
RUNTIME_MODEL_KEYS = ("dtype", "attention", "remat", "dropout", "lora_dropout")


def jitted_step(run: Run):
  """The run's sharded, donated train step: what the loop and the benchmarks execute."""
  cfg = run.config
  return jit_train_step(make_train_step(run.task, run.tx, cfg.train.grad_accum, cfg.seed,
                                        run.schedule, run.mask), run.mesh, run.shardings,
                        donate=cfg.train.donate)


# Settings a model's shape follows when its own key is left at 0 (model.max_len, vocab_size).
_DERIVED_FROM = {"max_len": "data.seq_len",
                 "vocab_size": "the tokenizer, model.vocab_multiple and mesh.tensor"}


def check_same_model(saved_config: dict, config, workdir: str, vocab_size: int) -> None:
  """Refuse to resume a workdir that holds a different model, before touching its arrays.

  Compares the models the two configs describe (every derived shape: context length from
  data.seq_len, padded vocabulary, widths), not only the keys the user set."""
  saved, now = (dataclasses.asdict(GPTConfig.from_config(c, vocab_size)) for c in
                (ml_collections.ConfigDict(saved_config), config))
  diffs = []
  for key, value in now.items():
    if key in RUNTIME_MODEL_KEYS or saved[key] == value:
      continue
    source = _DERIVED_FROM.get(key) if not config.model.get(key) else None
    via = f" (from {source})" if source else ""
    diffs.append(f"model.{key}{via}: {saved[key]!r} saved vs {value!r} now")
  if diffs:
    raise UserError(f"workdir {workdir} holds a checkpoint of a different model ("
                    + "; ".join(diffs) + "): resume with the saved settings or use a new "
                    "--workdir")


# ---------------------------------------------------------------------------------------------
# The loop


class _MetricsWindow:
  """Host-side means of step metrics between log rows, and the steps/time behind them."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.sums, self.counts, self.steps, self.t0 = {}, {}, 0, time.perf_counter()

  @property
  def count(self) -> int:
    return max(self.counts.values(), default=0)

  def add(self, row: dict):
    """Step metrics, or a rollout's (rows may hold different keys: each is its own mean)."""
    for k, v in row.items():
      self.sums[k] = self.sums.get(k, 0.0) + float(v)
      self.counts[k] = self.counts.get(k, 0) + 1

  def row(self, tokens_per_step: int, flops_per_token: float, peak_flops: float | None) -> dict:
    out = {k: v / self.counts[k] for k, v in self.sums.items()}
    elapsed = max(time.perf_counter() - self.t0, 1e-9)
    if self.steps:
      tps = self.steps * tokens_per_step / elapsed
      out["perf/tokens_per_sec"] = tps
      out["perf/step_time"] = elapsed / self.steps
      if peak_flops:
        out["perf/mfu"] = tps * flops_per_token / peak_flops
    return out


def run_evaluation(run: Run, params, eval_step) -> dict:
  """Held-out loss/perplexity over the eval splits plus the task's own evaluators."""
  cfg = run.config
  results = evaluate(eval_step, params, run.frozen, run.datasets.eval_splits, run.mesh,
                     cfg.eval.max_batches, run.task.weight_unit,
                     run.task.perplexity_of)
  for name, fn in run.task.evaluators().items():
    results.update({f"eval/{name}/{k}": v for k, v in fn(params, run.frozen).items()})
  if cfg.eval.evaluators:  # gptjax.evals by name: the same functions gptjax-eval --eval runs
    from gptjax.evals import registry
    from gptjax.load import Loaded
    loaded = Loaded(config=cfg, model=run.model, params=params, mesh=run.mesh, step=-1,
                    tokenizer=run.datasets.tokenizer)
    for name in registry.names(cfg.eval.evaluators):
      figures = registry.run(loaded, name).figures
      results.update({f"eval/{name}/{k}": v for k, v in figures.items()})
  return results


def _check_finite(step: int, row: dict, ckpt: checkpoint.Checkpointer, workdir: str) -> None:
  bad = {k: v for k, v in row.items() if k in ("train/loss", "train/grad_norm")
         and not math.isfinite(float(v))}
  if bad:
    last = ckpt.latest_step()
    kept = (f"the last good checkpoint, step {last}, is kept in {checkpoint.checkpoint_dir(workdir)}"
            if last is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"non-finite {bad} at step {step}; training stopped and {kept}. Lower --config.optim.lr, "
        "lengthen --config.optim.warmup_steps or set --config.optim.grad_clip")


def _resume(ckpt: checkpoint.Checkpointer, config, workdir: str):
  """(run, step, state) from the newest intact checkpoint, its data position restored; damaged
  newer ones are named and moved aside. (None, None, None) when the workdir has none."""
  from gptjax.data import tokenizer_from_json
  built = {}

  def attempt(step):
    saved_config, tokenizer_json = ckpt.restore_meta(step)
    with ckpt.reading(step):
      tokenizer = tokenizer_from_json(tokenizer_json)
    check_same_model(saved_config, config, workdir, tokenizer.vocab_size)
    if "run" not in built:  # one tokenizer per workdir: build the run once
      built["run"] = build_run(config, tokenizer=tokenizer)
    run = built["run"]
    target = checkpoint.abstract_with_shardings(run.abstract, run.shardings)
    state, data_state = ckpt.restore_state(step, target)
    with ckpt.reading(step):
      run.datasets.train.set_state(data_state)
    return run, state

  step, restored = ckpt.restore_newest_intact(attempt, move_damaged=True)
  return (None, None, None) if step is None else (restored[0], step, restored[1])


def train(config, workdir: str, hooks: Iterable[Hook] = ()) -> dict:
  """Train (or resume) to config.train.steps; returns the last eval metrics."""
  cfg = config
  join_processes(cfg)
  if storage.exists(workdir) and not storage.is_dir(workdir):
    raise UserError(f"--workdir={workdir} is a file, not a folder: choose another --workdir")
  if storage.exists(storage.join(workdir, checkpoint.IMPORTED_MARKER)):
    raise UserError(f"--workdir={workdir} holds a model imported by gptjax-convert, a starting "
                    "point rather than a run to resume: train in a new --workdir with "
                    f"--config.init.workdir={workdir}")
  if cfg.init.workdir and cfg.init.get("architecture"):
    init_from.adopt_architecture(cfg)
  storage.makedirs(workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=cfg.checkpoint.keep,
                                 keep_best=cfg.checkpoint.keep_best)
  run, latest, state = _resume(ckpt, cfg, workdir)
  started_from = None
  if run is None:
    run = build_run(cfg, tokenizer=init_from.source_tokenizer(cfg.init) if cfg.init.workdir
                    else None)
    params = None
    if cfg.init.workdir:
      source = init_from.open_source(cfg.init, run.mesh)
      fresh = state_lib.init_params(run.model, run.mesh, run.shardings.params, cfg.seed)
      params, started_from = init_from.load(source, fresh, run, cfg.init.exclude)
    state = state_lib.init_state(run.model, run.tx, run.mesh, run.shardings, cfg.seed, run.mask,
                                 params=params)
  mesh, ds = run.mesh, run.datasets
  writer = metrics_lib.MetricsWriter(workdir)
  is_main = jax.process_index() == 0
  config_json = json.loads(cfg.to_json_best_effort())
  if started_from is not None:
    init_from.record(workdir, started_from, config_json)
    if is_main:
      print(init_from.describe(started_from))
  tokenizer_json = ds.tokenizer.to_json()
  writer.truncate_after(-1 if latest is None else latest)  # rows a (re)started run will redo
  if latest is not None:
    if is_main:
      print(f"resumed from {checkpoint.checkpoint_dir(workdir)} at step {latest}")

  n_params = count_params(state.params)
  n_trained = trainable.count(state.params, run.mask)
  n_devices = jax.device_count()
  tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
  flops_token = metrics_lib.model_flops_per_token(state.params, run.model_cfg, cfg.data.seq_len)
  peak = metrics_lib.peak_flops_per_device()
  if is_main:
    trains = "" if run.mask is None else f" ({n_trained / 1e6:.3f}M trained)"
    print(f"model: {n_params / 1e6:.2f}M params{trains}, vocab {run.model_cfg.vocab_size}; mesh "
          f"{dict(mesh.shape)}; data: {ds.train_tokens:,} train / {ds.eval_tokens:,} held-out "
          f"tokens; {cfg.train.steps} steps of {tokens_per_step:,} tokens")

  step_fn = jitted_step(run)
  eval_step = make_eval_step(run.task, mesh)
  total = cfg.train.steps
  start = int(jax.device_get(state.step))
  progress = _progress_bar(is_main and cfg.train.progress, start, total)
  window = _MetricsWindow()
  batches = DevicePrefetcher(ds.train, mesh, cfg.data.prefetch)
  sync_each_step = sharding.must_sync_each_step()
  preemption = PreemptionWatch()
  cadence = WallClockCadence(cfg.checkpoint.every_minutes)
  pending = None  # (step, device metrics): fetched one step late so the host never stalls
  batch = None  # with a rollout (RL), its batch serves task.updates_per_rollout steps
  eval_metrics: dict = metrics_lib.last_eval(workdir)  # what a finished run re-run reports
  finished_marker = storage.join(workdir, FINISHED)
  if is_main and start < total and storage.exists(finished_marker):
    storage.remove(finished_marker)  # a finished run extended (more train.steps) runs again

  def drain():
    nonlocal pending
    if pending is not None:
      s, dev = pending
      pending = None
      row = jax.device_get(dev)
      _check_finite(s, row, ckpt, workdir)
      window.add(row)

  try:
    with sharding.rules_context(mesh):
      if start == 0 and cfg.eval.at_start:  # the starting weights' figures: a "before" row
        eval_metrics = run_evaluation(run, state.params, eval_step)
        writer.write(0, eval_metrics)
      for step in range(start, total):
        s = step + 1  # steps completed once this one is done
        if step == cfg.train.profile_start:
          trace_dir, upload_to = _trace_folder(workdir)
          jax.profiler.start_trace(trace_dir)
        if run.task.rollout is None:
          batch = next(batches)
        elif step % run.task.updates_per_rollout == 0 or batch is None:
          batch, rollout_metrics = run.task.rollout(state.params, next(batches), run.frozen, step)
          window.add(rollout_metrics)
        state, dev_metrics = step_fn(state, batch, run.frozen)
        if sync_each_step:
          jax.block_until_ready(dev_metrics)
        drain()
        pending = (s, dev_metrics)
        if not cfg.train.async_metrics:
          drain()
        window.steps += 1
        if step == start:  # the first step compiled: time throughput from here
          jax.block_until_ready(dev_metrics)
          window.t0, window.steps = time.perf_counter(), 0
        if cfg.train.profile_start >= 0 and s == cfg.train.profile_start + cfg.train.profile_steps:
          jax.block_until_ready(dev_metrics)
          jax.profiler.stop_trace()
          if upload_to:
            storage.upload_tree(trace_dir, upload_to)
        progress.update(1)

        at_log, at_eval = s % cfg.train.log_every == 0, s % cfg.eval.every == 0 or s == total
        at_ckpt = s % cfg.checkpoint.every == 0 or s == total or (at_log and cadence.due())
        if at_log or at_eval or at_ckpt:
          drain()  # these need this step's metrics, and a checkpoint needs a finite state
        if at_log and window.count:
          row = window.row(tokens_per_step, flops_token, peak and peak * n_devices)
          writer.write(s, row)
          progress.set_postfix(loss=f"{row['train/loss']:.4f}")
          window.reset()
        if at_eval:
          eval_metrics = run_evaluation(run, state.params, eval_step)
          writer.write(s, eval_metrics)
          if is_main:
            progress.write(f"step {s}: " + ", ".join(f"{k} {v:.4f}" for k, v in
                           eval_metrics.items() if k.endswith(("/loss", "perplexity"))))
        if at_ckpt:
          writer.flush()  # a run resumed from this checkpoint finds every row up to it
          ckpt.save(s, state, batches.get_state(), config_json, tokenizer_json,
                    metrics=eval_metrics if at_eval else None)
          cadence.saved()
        if at_eval or at_ckpt:  # keep their time out of the throughput figures
          window.t0, window.steps = time.perf_counter(), 0
        for hook in hooks:
          hook(s, state)
        if s < total and preemption.reached(s):
          if not at_ckpt:
            drain()
            writer.flush()
            ckpt.save(s, state, batches.get_state(), config_json, tokenizer_json)
          ckpt.wait()
          raise Preempted(f"SIGTERM: stopped after step {s} of {total} and saved checkpoint "
                          f"step {s} in {checkpoint.checkpoint_dir(workdir)}; run the same "
                          "command again to resume")
    drain()
    ckpt.wait()
    if is_main:  # what tpu_scripts/watch.sh looks for in the bucket: done, do not relaunch
      storage.write_text(finished_marker, json.dumps({"step": total, "time": time.time()}))
  finally:  # a started checkpoint is finished even when the loop dies; every closer runs
    with contextlib.ExitStack() as closing:
      closing.callback(preemption.close)
      closing.callback(writer.close)
      closing.callback(progress.close)
      closing.callback(ckpt.close)
      ckpt.wait()
  return eval_metrics


FINISHED = "finished.json"  # in the workdir once every step has run and been saved


def _trace_folder(workdir: str) -> tuple[str, str | None]:
  """(where jax.profiler writes, where to upload it after): it writes to this host's disk,
  so a bucket workdir's trace goes to a local folder first."""
  target = storage.join(workdir, "profile")
  if not storage.is_url(workdir):
    return target, None
  import tempfile
  return tempfile.mkdtemp(prefix="gptjax-profile-"), target


def _progress_bar(enabled: bool, start: int, total: int):
  import sys

  from tqdm import tqdm
  # Redraw often on a terminal; into a log file only every 30 s (and at each log row).
  interval = 0.1 if sys.stderr.isatty() else 30.0
  return tqdm(total=total, initial=start, disable=not enabled, dynamic_ncols=True, unit="step",
              desc="train", mininterval=interval, maxinterval=max(10.0, interval))


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> None:
  from absl import flags

  import gptjax.config as config_module

  flags_ = flags.FLAGS
  define_config_flag(config_module.__file__,
                     "config file (default: the embedded default)")
  flags.DEFINE_string("workdir", None, "run folder: checkpoints, metrics.jsonl, tensorboard")

  def _main(_):
    config = flags_.config
    workdir = flags_.workdir or os.path.join("runs", "default")
    xla_flags.prepare_host(config)

    def body():
      final = train(config, workdir)
      if jax.process_index() == 0:
        _finish(config, workdir, final)
    run_cli(body)

  run_app(_main, argv)


def _finish(config, workdir: str, final: dict) -> None:
  from gptjax import plots
  print(json.dumps({k: round(v, 4) for k, v in final.items()}))
  path = plots.plot_loss_curve(workdir)
  print(f"metrics: {storage.join(workdir, 'metrics.jsonl')}; loss curve: {path}")
  curves = plots.plot_eval_curves(workdir)
  if curves:
    print(f"evaluator curves: {curves}")
  if config.train.sample_prompt:
    from gptjax import generate
    text = generate.sample_from_workdir(workdir, config.train.sample_prompt,
                                        max_new_tokens=config.train.sample_tokens)
    print("sample:\n" + text)


if __name__ == "__main__":
  main()
