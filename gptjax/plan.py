"""Memory and step time on paper: will a config fit a slice, and how long will a step take?

    gptjax-plan --config=configs/gpt2_124m.py --topology=h100 [--config.x=y ...] [--json]
    gptjax-plan --config=configs/llama.py:7b --topology=v5p-128

Nothing is compiled or allocated, so it answers in a second for any topology (names as in
gptjax.chips: v5p-128 counts TensorCores as Cloud TPU does; h100-8 counts GPUs). The mesh is
the config's (`mesh.*`, -1 filled from the device count), the parameters' sharding the rule
table's (gptjax.sharding.RULES), so the plan is of the run `gptjax-train` would launch.

Per device, bytes:
  params       float32 master weights, sharded like the run shards them.
  optimizer    the optimizer's state, sharded like its parameters (AdamW: two moments).
  gradients    sharded like the params, in the compute dtype (XLA fuses the cast to float32
               into clipping and the update), plus a float32 running sum with grad_accum > 1.
  gathered     FSDP: layers' weights all-gathered in the compute dtype, two layers at a time.
  activations  what the backward pass keeps of one microbatch under model.remat.
  working      the larger of the loss's float32 logits (of the microbatch, or of one
               task.loss_chunk) and a rematerialised layer's recomputed activations.
Step time: model FLOPs (gptjax.metrics.model_flops_per_token, as the trainer's MFU, plus
what remat recomputes) at the chip's peak divided by an assumed MFU (--mfu), and the
collectives' bytes over the link bandwidth; they are assumed to overlap (the larger of the
two). benchmarks/memory.py checks the memory figures against what XLA allocates for the real
step; the step time is not checked yet.
"""

from __future__ import annotations

import dataclasses
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gptjax import attention, chips, metrics as metrics_lib, sharding
from gptjax.chips import Chip
from gptjax.config import planned_vocab_size
from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig

# Fitted to XLA:GPU's buffer assignment of the real GPT-2 124M step (deviceless H100
# compiles, benchmarks/memory.py); the check on other models: benchmarks/results/memory.md.
ATTENTION_SCORE_BYTES = 6  # xla attention keeps f32 scores and compute-dtype probabilities
LOGIT_COPIES = 1.9  # f32 [tokens, vocab] arrays alive at once: logits and their gradient


@dataclasses.dataclass
class Layout:
  """The run's shapes as the planner needs them."""
  model: GPTConfig
  mesh: dict  # axis -> size
  micro_per_device: int  # sequences per device per microbatch
  seq_len: int
  grad_accum: int
  platform: str  # "gpu" or "tpu": decides the attention kernel


def layout(config, chip: Chip, num_devices: int, vocab_size: int | None = None) -> Layout:
  model = GPTConfig.from_config(config, vocab_size or planned_vocab_size(config))
  data, fsdp, tensor = sharding.mesh_shape(config.mesh, num_devices)
  tr = config.train
  if tr.batch_size % tr.grad_accum or (tr.batch_size // tr.grad_accum) % (data * fsdp):
    raise UserError(f"microbatch train.batch_size/train.grad_accum={tr.batch_size}/"
                    f"{tr.grad_accum} must divide by mesh.data*mesh.fsdp={data * fsdp}")
  return Layout(model=model, mesh={"data": data, "fsdp": fsdp, "tensor": tensor},
                micro_per_device=tr.batch_size // tr.grad_accum // (data * fsdp),
                seq_len=config.data.seq_len, grad_accum=tr.grad_accum,
                platform="gpu" if chip.name in ("a100", "h100", "h200") else "tpu")


def _params_and_fractions(lay: Layout):
  """Abstract params and, per leaf, the fraction of it one device holds."""
  model = GPT(dataclasses.replace(lay.model, attention="xla"))  # shapes only: no kernel choice
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                            jnp.zeros((1, 8), jnp.int32))["params"])
  specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), sharding.RULES)
  params = nn.unbox(boxed)
  sharding.check_divisible(params, specs, lay.mesh)

  def fraction(spec):
    axes = [a for entry in spec for a in ((entry,) if isinstance(entry, str) else entry or ())]
    return 1.0 / math.prod(lay.mesh[a] for a in axes)
  return params, jax.tree_util.tree_map(fraction, specs, is_leaf=sharding.is_spec)


def _bytes(tree) -> float:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def state_bytes(config, lay: Layout, params=None, fractions=None) -> dict:
  """params, optimizer state and gradients per device (exact for the config's optimizer).
  Optimizer state and gradients exist only for the trainable parameters (train.trainable,
  train.frozen, LoRA: gptjax.trainable), as in the trainer."""
  from gptjax.optim import make_optimizer
  from gptjax.trainable import select, trainable_mask
  if params is None:
    params, fractions = _params_and_fractions(lay)
  per_device = lambda p, f: p.size * p.dtype.itemsize * f  # noqa: E731
  total = lambda tree: float(sum(jax.tree_util.tree_leaves(tree)))  # noqa: E731
  param_bytes = total(jax.tree_util.tree_map(per_device, params, fractions))
  mask = trainable_mask(config, params)
  trained, trained_fractions = select(params, mask), select(fractions, mask)
  trained_bytes = total(jax.tree_util.tree_map(per_device, trained, trained_fractions))
  tx = make_optimizer(config.optim, config.train.steps)
  opt_abstract = jax.eval_shape(tx.init, trained)
  opt_bytes = optax.tree_map_params(tx, per_device, opt_abstract, trained_fractions,
                                    transform_non_params=lambda x: x.size * x.dtype.itemsize)
  # The gradient of a weight used in the compute dtype is that dtype until XLA fuses its
  # cast into clipping and the update; accumulation adds a float32 running sum.
  compute_bytes = jnp.dtype(lay.model.compute_dtype).itemsize
  grads = trained_bytes * (compute_bytes / 4 + (1 if lay.grad_accum > 1 else 0))
  # FSDP gathers a layer's weights (in the compute dtype) before using them; XLA keeps the
  # next layer's gather in flight, so two layers' are alive at once.
  gathered = 0.0
  if lay.mesh["fsdp"] > 1:
    layer = _bytes(params["block_0"]) / 4 * jnp.dtype(lay.model.compute_dtype).itemsize
    gathered = 2 * layer / lay.mesh["tensor"]
  return {"params": param_bytes, "optimizer": total(opt_bytes), "gradients": grads,
          "gathered": gathered, "num_params": _bytes(params) / 4,
          "num_trained": _bytes(trained) / 4}


def _layer_bytes_per_token(m: GPTConfig, tp: int) -> dict:
  """Bytes per token one layer keeps for backward: "kept" under model.remat, "all" with none.

  Without remat a GPT-2 block keeps its input, two norm inputs and outputs (plus their float32
  upcasts in half precision), q/k/v, the attention output and the MLP's up-projection and
  activation. save_dots keeps the projections' outputs (no-batch-dim dots); full keeps the
  block input only. Attention scores are separate (`_score_bytes_per_token`).
  """
  s = jnp.dtype(m.compute_dtype).itemsize
  d, f, h = m.embed_dim, m.hidden_dim, m.head_dim
  qkv = (m.num_heads + 2 * m.kv_heads) * h / tp
  heads_out = m.num_heads * h / tp
  mlp_in = (2 if m.mlp == "swiglu" else 1) * f / tp  # up-projection outputs
  mlp_act = f / tp  # the activation, input of the down projection
  norm_upcasts = 2 * d * 4 if s < 4 else 0  # norms compute in float32
  dropout_masks = 2 * d if m.dropout > 0 else 0  # one bool per element per residual branch
  everything = s * (4 * d + qkv + heads_out + mlp_in + mlp_act) + norm_upcasts + dropout_masks
  kept = {"none": everything, "save_dots": s * (qkv + mlp_in + 2 * d), "full": s * d}[m.remat]
  return {"kept": kept, "all": everything}


def _score_bytes_per_token(m: GPTConfig, tp: int, seq_len: int, platform: str) -> float:
  """XLA attention materialises [heads, T, T] scores; the flash kernels keep none."""
  if attention.resolve(m.attention, m.dtype, m.head_dim, platform, seq_len) != "xla":
    return 0.0
  return m.num_heads / tp * seq_len * ATTENTION_SCORE_BYTES


def activation_bytes(config, lay: Layout) -> dict:
  """{"activations": kept for backward, "working": the larger of the two peaks on top}.

  Backward peaks either in the loss (float32 logits of the whole microbatch, or of one
  task.loss_chunk) or while a rematerialised layer is recomputed; whichever is larger.
  """
  m, tp = lay.model, lay.mesh["tensor"]
  tokens = lay.micro_per_device * lay.seq_len
  layer = _layer_bytes_per_token(m, tp)
  scores = _score_bytes_per_token(m, tp, lay.seq_len, lay.platform)
  kept_per_layer = layer["kept"] + (scores if m.remat == "none" else 0.0)
  final = 2 * m.embed_dim * jnp.dtype(m.compute_dtype).itemsize  # final norm in and out
  kept = tokens * (m.num_layers * kept_per_layer + final)
  recompute = 0.0 if m.remat == "none" else tokens * (layer["all"] + scores)
  chunk = config.task.loss_chunk
  logit_tokens = lay.micro_per_device * chunk if chunk else tokens
  logits = LOGIT_COPIES * logit_tokens * m.vocab_size / tp * 4
  return {"activations": kept, "working": max(recompute, logits)}


def step_time(config, lay: Layout, chip: Chip, params, mfu: float) -> dict:
  """Roofline step time: model FLOPs at `mfu` of peak, and ring collectives over the links,
  assumed to overlap (the step takes the longer of the two)."""
  m, T = lay.model, lay.seq_len
  devices = math.prod(lay.mesh.values())
  tokens = config.train.batch_size * T
  flops_token = metrics_lib.model_flops_per_token(params, m, T)
  # Recomputed in backward: full remat the whole forward (a third of 6N + 12LTd); save_dots
  # the attention (a third of 12LTd), projections being kept.
  recompute = {"none": 0.0, "save_dots": 4 * m.num_layers * T * m.embed_dim,
               "full": flops_token / 3}[m.remat]
  compute = tokens * (flops_token + recompute) / (devices * chip.peak_flops)

  def ring(nbytes: float, n: int) -> float:  # one all-gather or reduce-scatter over n devices
    return nbytes * (n - 1) / n / chip.link_bandwidth if n > 1 else 0.0

  s = jnp.dtype(m.compute_dtype).itemsize
  fsdp, data, tp = lay.mesh["fsdp"], lay.mesh["data"], lay.mesh["tensor"]
  weights = _bytes(params) / 4 / tp  # parameters one tensor-parallel shard holds
  # FSDP, every microbatch: gather the weights for forward and again for backward, and
  # reduce-scatter the float32 gradients.
  comm = lay.grad_accum * (2 * ring(weights * s, fsdp) + ring(weights * 4, fsdp))
  # Data parallel, once a step: all-reduce (= reduce-scatter + all-gather) of the gradients.
  comm += 2 * ring(weights * 4 / fsdp, data)
  # Tensor parallel: two all-reduces of the activations a layer in forward, two in backward.
  activation = lay.micro_per_device * T * m.embed_dim * s
  comm += lay.grad_accum * m.num_layers * 4 * 2 * ring(activation, tp)
  step = max(compute / mfu, comm)
  return {"flops_per_token": flops_token, "compute_s_at_peak": compute,
          "compute_s": compute / mfu, "communication_s": comm, "step_s": step,
          "tokens_per_sec": tokens / step, "assumed_mfu": mfu}


def plan(config, topology: str, vocab_size: int | None = None, mfu: float = 0.5) -> dict:
  chip, num_devices = chips.parse_topology(topology)
  lay = layout(config, chip, num_devices, vocab_size)
  params, fractions = _params_and_fractions(lay)
  state = state_bytes(config, lay, params, fractions)
  acts = activation_bytes(config, lay)
  memory = {k: state[k] for k in ("params", "optimizer", "gradients", "gathered")}
  memory.update(acts)
  total = sum(memory.values())
  usable = chip.hbm_bytes * _usable_fraction(config, chip)
  return {
      "topology": topology, "chip": chip.name, "devices": num_devices, "mesh": lay.mesh,
      "num_params": state["num_params"], "num_trained": state["num_trained"],
      "micro_per_device": lay.micro_per_device,
      "memory": memory, "total_bytes": total, "usable_bytes": usable, "fits": total <= usable,
      "step": step_time(config, lay, chip, params, mfu),
  }


def _usable_fraction(config, chip: Chip) -> float:
  from gptjax import xla_flags
  if chip.usable_fraction < 1.0 and config.train.xla_flags == "auto":
    return float(xla_flags.GPU_ENV["XLA_PYTHON_CLIENT_MEM_FRACTION"])
  return chip.usable_fraction


def format_plan(p: dict) -> str:
  gb = lambda b: f"{b / 1e9:8.2f} GB"  # noqa: E731
  lines = [f"{p['topology']}: {p['devices']} x {p['chip']}, mesh {p['mesh']}, "
           f"{p['num_params'] / 1e6:,.1f}M params"
           + (f" ({p['num_trained'] / 1e6:,.3f}M trained)" if p["num_trained"] != p["num_params"]
              else "") + f", {p['micro_per_device']} sequences per "
           "device per microbatch", "memory per device:"]
  lines += [f"  {k:<12}{gb(v)}" for k, v in p["memory"].items()]
  verdict = "fits" if p["fits"] else "does NOT fit"
  lines.append(f"  {'total':<12}{gb(p['total_bytes'])}  of {gb(p['usable_bytes']).strip()} "
               f"usable: {verdict}")
  st = p["step"]
  lines.append(f"step: {st['step_s'] * 1e3:,.1f} ms at {st['assumed_mfu']:.0%} MFU (compute "
               f"{st['compute_s'] * 1e3:,.1f} ms, collectives {st['communication_s'] * 1e3:,.1f}"
               f" ms), {st['tokens_per_sec']:,.0f} tokens/s")
  return "\n".join(lines)


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import define_config_flag, run_app, run_cli

  define_config_flag(None, "config file to plan", lock_config=True)
  flags.DEFINE_string("topology", "h100", "chip and count: v5p-128, v5e-16, v6e-8, h100-8, ...")
  flags.DEFINE_integer("vocab_size", None, "vocabulary, when the config takes it from a corpus")
  flags.DEFINE_float("mfu", 0.5, "model FLOPs utilisation assumed for the step time")
  flags.DEFINE_bool("json", False, "print JSON instead of the table")
  FLAGS = flags.FLAGS

  def _main(_):
    jax.config.update("jax_platforms", "cpu")  # planning never needs an accelerator

    def body():
      if FLAGS.config is None:
        raise UserError("pass --config=configs/NAME.py[:ARG]")
      p = plan(FLAGS.config, FLAGS.topology, FLAGS.vocab_size, FLAGS.mfu)
      print(json.dumps(p, indent=2) if FLAGS.json else format_plan(p))
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
