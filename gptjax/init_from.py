"""Start a run from another run's weights (`init.*`), as big_vision's model_init.

Only parameters come over, restored straight onto this run's mesh; the optimizer, schedule
and data start fresh, and the other run's tokenizer becomes this run's (a chat task adds
its control tokens). Every parameter must match by path and shape except:
- those `init.exclude` matches, which keep their fresh init;
- LoRA adapters this run adds (B = 0: the model starts equal to the loaded one);
- a reward model's scalar head (`model.score_head`) on a language model's weights;
- the token embedding (and an untied head) when this run's tokenizer extends the loaded
  one with special tokens: loaded rows are copied, each new token's row is the mean of the
  loaded rows, so every existing token's logit is unchanged.
The run records where it started in WORKDIR/init.json and in its saved config.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import ml_collections

from gptjax import checkpoint, lora, storage
from gptjax.errors import UserError
from gptjax.load import Loaded, load_workdir
from gptjax.trainable import path_of

FLAG = "--config.init.workdir"
VOCAB_AXIS = {"wte": 0, "lm_head": 1}  # parameters with a row (column) per token
ADDED_HEADS = ("score_head",)  # a reward model's head starts fresh on a language model


def _steps(init_cfg) -> list[int]:
  workdir = init_cfg.workdir
  steps = []
  if storage.is_dir(workdir):
    ckpt = checkpoint.Checkpointer(workdir, read_only=True)
    steps = ckpt.all_steps()
    ckpt.close()
  if not steps:
    raise UserError(f"{FLAG}={workdir} holds no checkpoint: point it at a trained run's workdir")
  if init_cfg.step and init_cfg.step not in steps:
    raise UserError(f"--config.init.step={init_cfg.step} is not among the checkpoints {steps} "
                    f"of {workdir} (0 = the newest)")
  return steps


def source_tokenizer(init_cfg):
  """The tokenizer of the checkpoint init.* names (this run's, before any added tokens)."""
  from gptjax.data import tokenizer_from_json
  steps = _steps(init_cfg)
  ckpt = checkpoint.Checkpointer(init_cfg.workdir, read_only=True)
  try:
    step = init_cfg.step or steps[-1]
    _, tokenizer_json = ckpt.restore_meta(step)
    with ckpt.reading(step):
      return tokenizer_from_json(tokenizer_json)
  finally:
    ckpt.close()


# Settings that make up the model's function; the rest of model.* (dtype, attention kernel,
# remat, dropout, LoRA) is how this run computes it and stays this run's.
ARCHITECTURE = ("vocab_size", "vocab_multiple", "num_layers", "num_heads", "num_kv_heads",
                "embed_dim", "mlp_dim", "max_len", "use_bias", "qkv_bias", "positions",
                "rope_theta", "rope_scaling", "rope_factor", "rope_low_freq_factor",
                "rope_high_freq_factor", "rope_original_max_len", "norm", "norm_eps", "mlp",
                "tie_embeddings")


def adopt_architecture(config) -> None:
  """With init.architecture: this run's model.* shape becomes that of the checkpoint it
  starts from (an imported Hugging Face model, say), so no one restates it by hand. The
  vocabulary follows the tokenizer where the source's table has no spare rows, so a chat
  task can still append its control tokens."""
  steps = _steps(config.init)
  ckpt = checkpoint.Checkpointer(config.init.workdir, read_only=True)
  try:
    saved, tokenizer_json = ckpt.restore_meta(config.init.step or steps[-1])
  finally:
    ckpt.close()
  from gptjax.data import tokenizer_from_json
  from gptjax.model import GPTConfig
  source_vocab = tokenizer_from_json(tokenizer_json).vocab_size
  table = GPTConfig.from_config(ml_collections.ConfigDict(saved), source_vocab).vocab_size
  for key in ARCHITECTURE:
    if key in saved["model"]:
      config.model[key] = saved["model"][key]
  config.model.vocab_size = table if table > source_vocab else 0


def open_source(init_cfg, mesh=None) -> Loaded:
  """The checkpoint init.* names (0: the newest intact), its params restored onto `mesh`."""
  _steps(init_cfg)
  return load_workdir(init_cfg.workdir, init_cfg.step or None, mesh=mesh)


def _extends(base, tokenizer) -> bool:
  """Whether `tokenizer` is `base` plus special tokens appended after base's."""
  strip = lambda t: {k: v for k, v in t.to_json().items() if k != "added_tokens"}
  return (strip(base) == strip(tokenizer)
          and tokenizer.added_tokens[:len(base.added_tokens)] == base.added_tokens)


def _plan(source: Loaded, fresh, tokenizer, exclude: str) -> dict[str, str]:
  """path -> "load" | "grow" | "fresh", or one error naming every mismatch."""
  try:
    skip = re.compile(exclude) if exclude else None
  except re.error as e:
    raise UserError(f"--config.init.exclude={exclude!r} is not a regular expression ({e})") from None
  src = {path_of(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(source.params)}
  here = {path_of(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(fresh)}
  growable = _extends(source.tokenizer, tokenizer)
  plan, missing, differ = {}, [], []
  for path, shape in here.items():
    if skip and skip.search(path):
      plan[path] = "fresh"
    elif path not in src:
      if lora.is_adapter(path) or path in ADDED_HEADS:
        plan[path] = "fresh"
      else:
        missing.append(path)
    elif src[path] == shape:
      plan[path] = "load"
    elif path in VOCAB_AXIS and growable and _only_vocab_differs(src[path], shape, path):
      plan[path] = "grow"
    else:
      differ.append(f"{path} {src[path]} there, {shape} here")
  unused = [p for p in src if p not in here and not (skip and skip.search(p))]
  problems = []
  if differ:
    problems.append(f"shapes differ: {_some(differ)}")
  if missing:
    problems.append(f"{len(missing)} parameters of this model are not in it: {_some(missing)}")
  if any(lora.is_adapter(p) for p in unused):
    problems.append("it has LoRA adapters: merge them first (gptjax-lora)")
  unused = [p for p in unused if not lora.is_adapter(p)]
  if unused:
    problems.append(f"{len(unused)} of its parameters are not in this model: {_some(unused)}")
  if problems:
    raise UserError(f"{FLAG}={source.workdir} step {source.step} does not fit this model ("
                    + "; ".join(problems) + "): match --config.model.* to it, or name "
                    "parameters in --config.init.exclude")
  return plan


def _some(items: list[str], shown: int = 4) -> str:
  return ", ".join(items[:shown]) + (f", ... ({len(items)} in all)" if len(items) > shown else "")


def _only_vocab_differs(src_shape, shape, path) -> bool:
  axis = VOCAB_AXIS[path]
  return (len(src_shape) == len(shape) and src_shape[axis] <= shape[axis]
          and all(a == b for i, (a, b) in enumerate(zip(src_shape, shape)) if i != axis))


def load(source: Loaded, fresh, run, exclude: str = ""):
  """(params on the run's shardings, a record of what was loaded)."""
  tokenizer = run.datasets.tokenizer
  plan = _plan(source, fresh, tokenizer, exclude)
  known = source.tokenizer.vocab_size  # rows of the loaded table that are real tokens
  src_flat = {path_of(p): x for p, x in jax.tree_util.tree_leaves_with_path(source.params)}

  def build(src_flat, fresh):
    def one(key_path, leaf):
      path = path_of(key_path)
      if plan[path] == "load":
        return src_flat[path].astype(leaf.dtype)
      if plan[path] == "fresh":
        return leaf
      axis = VOCAB_AXIS[path]
      rows = jax.lax.slice_in_dim(src_flat[path], 0, known, axis=axis)
      mean = jnp.mean(rows, axis=axis, keepdims=True)
      added = jnp.repeat(mean, tokenizer.vocab_size - known, axis=axis)
      padding = jax.lax.slice_in_dim(leaf, tokenizer.vocab_size, leaf.shape[axis], axis=axis)
      return jnp.concatenate([rows, added, padding], axis=axis).astype(leaf.dtype)
    return jax.tree_util.tree_map_with_path(one, fresh)

  needed = {p: x for p, x in src_flat.items() if plan.get(p) in ("load", "grow")}
  params = jax.jit(build, out_shardings=run.shardings.params, donate_argnums=(1,))(needed, fresh)
  record = {"workdir": storage.absolute(source.workdir), "step": source.step,
            "loaded": sorted(p for p, how in plan.items() if how == "load"),
            "grown": sorted(p for p, how in plan.items() if how == "grow"),
            "fresh": sorted(p for p, how in plan.items() if how == "fresh"),
            "added_tokens": list(tokenizer.added_tokens[len(source.tokenizer.added_tokens):])}
  return params, record


def record(workdir: str, started_from: dict, config_json: dict) -> None:
  """Write where the run started: init.json, and the resolved step into the saved config."""
  config_json.setdefault("init", {})["step"] = started_from["step"]
  if jax.process_index() == 0:
    storage.write_text(storage.join(workdir, "init.json"), json.dumps(started_from, indent=1))


def describe(started_from: dict) -> str:
  grown = (f"; embedding grown by {len(started_from['added_tokens'])} tokens "
           f"{started_from['added_tokens']}" if started_from["grown"] else "")
  return (f"initialised from {started_from['workdir']} step {started_from['step']}: "
          f"{len(started_from['loaded'])} parameters loaded, {len(started_from['fresh'])} "
          f"fresh{grown}")
