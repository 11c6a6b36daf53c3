"""Hugging Face model families as data: one name-and-transform table per family drives both
import (HF -> gptjax) and export (gptjax -> HF).

A row is (HF tensor name, gptjax parameter path(s), layout, HF shape). "{i}" stands for the
layer; the shape is in the letters of `hf_dims` (V vocabulary, D width, P positions, F MLP
width, Q query and K key/value projection widths), so a config.json can be checked against
the safetensors headers before any model is built.
A layout converts one tensor both ways and knows nothing of names:
  same     identical arrays (norm scales, embeddings)
  linear   torch nn.Linear weight [out, in] <-> ours [in axes..., out axes...]
  conv1d   GPT-2's Conv1D weight [in, out] <-> ours [in axes..., out axes...]
  flat     a bias [n] <-> ours [n] or [heads, head_dim]
  qkv      GPT-2's fused c_attn [D, 3D] (or its bias [3D]) <-> our wq, wk, wv (or bq, bk, bv)
Our shapes come from the model's abstract parameters, so every reshape is checked.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
  """to_ours(hf_array, our_shapes) -> [our arrays]; to_hf([our arrays]) -> hf_array."""
  name: str
  n_in: int = 1  # our leading axes that are the layer's input (linear / conv1d)

  def to_ours(self, x: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    (shape,) = shapes if self.name != "qkv" else shapes[:1]
    if self.name == "same":
      return [_checked(x, shape)]
    if self.name == "flat":
      return [x.reshape(shape)]
    if self.name == "linear":
      return [np.ascontiguousarray(x.T).reshape(shape)]
    if self.name == "conv1d":
      return [x.reshape(shape)]
    if self.name == "qkv":  # [..., 3D] split on the last axis, each part like conv1d / flat
      sizes = [math.prod(s[self.n_in:]) if x.ndim == 2 else math.prod(s) for s in shapes]
      parts = np.split(x, np.cumsum(sizes)[:-1], axis=-1)
      return [p.reshape(s) for p, s in zip(parts, shapes)]
    raise ValueError(self.name)

  def to_hf(self, ours: list[np.ndarray]) -> np.ndarray:
    if self.name == "same":
      return ours[0]
    if self.name == "flat":
      return ours[0].reshape(-1)
    if self.name == "linear":
      y = ours[0]
      return np.ascontiguousarray(y.reshape(math.prod(y.shape[:self.n_in]), -1).T)
    if self.name == "conv1d":
      y = ours[0]
      return y.reshape(math.prod(y.shape[:self.n_in]), -1)
    if self.name == "qkv":
      flat = [y.reshape(y.shape[0], -1) if y.ndim == 3 else y.reshape(-1) for y in ours]
      return np.concatenate(flat, axis=-1)
    raise ValueError(self.name)


def _checked(x, shape):
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"shape {tuple(x.shape)} where {tuple(shape)} was expected")
  return x


SAME, FLAT = Layout("same"), Layout("flat")
LINEAR_IN1, LINEAR_IN2 = Layout("linear", 1), Layout("linear", 2)
CONV1D_IN1, CONV1D_IN2 = Layout("conv1d", 1), Layout("conv1d", 2)
QKV = Layout("qkv", 1)


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str
  ours: tuple[str, ...]
  layout: Layout
  when: str = ""  # only when this model flag is set: "untied", "bias", "qkv_bias"
  shape: str = ""  # the HF tensor's shape, "V D": letters of hf_dims, "+" for a sum

  def hf_shape(self, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(sum(dims[x] for x in axis.split("+")) for axis in self.shape.split())


def _rule(hf, ours, layout, shape, when=""):
  return Rule(hf, (ours,) if isinstance(ours, str) else tuple(ours), layout, when, shape)


def hf_dims(cfg) -> dict[str, int]:
  """The sizes a GPTConfig gives the Hugging Face tensors (no model is built)."""
  return {"V": cfg.vocab_size, "D": cfg.embed_dim, "P": cfg.max_len, "F": cfg.hidden_dim,
          "Q": cfg.num_heads * cfg.head_dim, "K": cfg.kv_heads * cfg.head_dim}


GPT2 = (
    _rule("transformer.wte.weight", "wte", SAME, "V D"),
    _rule("transformer.wpe.weight", "wpe", SAME, "P D"),
    _rule("transformer.h.{i}.ln_1.weight", "block_{i}/ln1/norm/scale", SAME, "D"),
    _rule("transformer.h.{i}.ln_1.bias", "block_{i}/ln1/norm/bias", SAME, "D", when="bias"),
    _rule("transformer.h.{i}.attn.c_attn.weight",
          ["block_{i}/attn/wq", "block_{i}/attn/wk", "block_{i}/attn/wv"], QKV, "D Q+K+K"),
    _rule("transformer.h.{i}.attn.c_attn.bias",
          ["block_{i}/attn/bq", "block_{i}/attn/bk", "block_{i}/attn/bv"], QKV, "Q+K+K",
          when="bias"),
    _rule("transformer.h.{i}.attn.c_proj.weight", "block_{i}/attn/wo", CONV1D_IN2, "Q D"),
    _rule("transformer.h.{i}.attn.c_proj.bias", "block_{i}/attn/bo", SAME, "D", when="bias"),
    _rule("transformer.h.{i}.ln_2.weight", "block_{i}/ln2/norm/scale", SAME, "D"),
    _rule("transformer.h.{i}.ln_2.bias", "block_{i}/ln2/norm/bias", SAME, "D", when="bias"),
    _rule("transformer.h.{i}.mlp.c_fc.weight", "block_{i}/mlp/wi", CONV1D_IN1, "D F"),
    _rule("transformer.h.{i}.mlp.c_fc.bias", "block_{i}/mlp/wi_bias", SAME, "F", when="bias"),
    _rule("transformer.h.{i}.mlp.c_proj.weight", "block_{i}/mlp/wo", CONV1D_IN1, "F D"),
    _rule("transformer.h.{i}.mlp.c_proj.bias", "block_{i}/mlp/wo_bias", SAME, "D", when="bias"),
    _rule("transformer.ln_f.weight", "ln_f/norm/scale", SAME, "D"),
    _rule("transformer.ln_f.bias", "ln_f/norm/bias", SAME, "D", when="bias"),
    _rule("lm_head.weight", "lm_head", LINEAR_IN1, "V D", when="untied"),
)

LLAMA = (
    _rule("model.embed_tokens.weight", "wte", SAME, "V D"),
    _rule("model.layers.{i}.input_layernorm.weight", "block_{i}/ln1/norm/scale", SAME, "D"),
    _rule("model.layers.{i}.self_attn.q_proj.weight", "block_{i}/attn/wq", LINEAR_IN1, "Q D"),
    _rule("model.layers.{i}.self_attn.k_proj.weight", "block_{i}/attn/wk", LINEAR_IN1, "K D"),
    _rule("model.layers.{i}.self_attn.v_proj.weight", "block_{i}/attn/wv", LINEAR_IN1, "K D"),
    _rule("model.layers.{i}.self_attn.q_proj.bias", "block_{i}/attn/bq", FLAT, "Q",
          when="qkv_bias"),
    _rule("model.layers.{i}.self_attn.k_proj.bias", "block_{i}/attn/bk", FLAT, "K",
          when="qkv_bias"),
    _rule("model.layers.{i}.self_attn.v_proj.bias", "block_{i}/attn/bv", FLAT, "K",
          when="qkv_bias"),
    _rule("model.layers.{i}.self_attn.o_proj.weight", "block_{i}/attn/wo", LINEAR_IN2, "D Q"),
    _rule("model.layers.{i}.post_attention_layernorm.weight", "block_{i}/ln2/norm/scale", SAME,
          "D"),
    _rule("model.layers.{i}.mlp.gate_proj.weight", "block_{i}/mlp/wi_gate", LINEAR_IN1, "F D"),
    _rule("model.layers.{i}.mlp.up_proj.weight", "block_{i}/mlp/wi_up", LINEAR_IN1, "F D"),
    _rule("model.layers.{i}.mlp.down_proj.weight", "block_{i}/mlp/wo", LINEAR_IN1, "D F"),
    _rule("model.norm.weight", "ln_f/norm/scale", SAME, "D"),
    _rule("lm_head.weight", "lm_head", LINEAR_IN1, "V D", when="untied"),
)

TABLES = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA}
# HF tensors that are buffers, not weights (GPT-2's causal-mask buffers in old checkpoints).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def rules_for(family: str, num_layers: int, flags: set[str]) -> list[Rule]:
  """The table of `family` with "{i}" expanded per layer; rows whose `when` flag is not in
  `flags` left out (an untied head, Qwen2's q/k/v biases)."""
  out = []
  for rule in TABLES[family]:
    if rule.when and rule.when not in flags:
      continue
    layers = range(num_layers) if "{i}" in rule.hf else [None]
    for i in layers:
      fmt = (lambda s: s) if i is None else (lambda s, i=i: s.replace("{i}", str(i)))
      out.append(dataclasses.replace(rule, hf=fmt(rule.hf),
                                     ours=tuple(fmt(o) for o in rule.ours)))
  return out


def layers_in(family: str, names) -> set[int]:
  """The layer numbers that tensor `names` (canonical) hold, e.g. {0, 1} for
  transformer.h.0.* and transformer.h.1.*."""
  prefix = next(r.hf for r in TABLES[family] if "{i}" in r.hf).split("{i}")[0]
  found = set()
  for name in names:
    number = name[len(prefix):].split(".")[0] if name.startswith(prefix) else ""
    if number.isdigit():
      found.add(int(number))
  return found
