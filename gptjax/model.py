"""Decoder-only transformer in Flax Linen: GPT-2 layout by default, Llama layout by config.

One module, functional init/apply. Every parameter and activation names its logical axes
(batch, length, embed, heads, kv, mlp, vocab); `gptjax.sharding` maps those to the mesh, so a
new parallelism strategy never touches this file.

Shapes use suffixes: B batch, T query length, S key length, D embed, N query heads,
K kv heads, H head dim, F mlp width, V vocab.

Calls:
  logits_BTV = model.apply(params, tokens_BT)                          # training / eval
  logits_BTV = model.apply(params, tokens_BT, segment_ids=seg_BT)      # packed documents
  logits_BTV, cache = model.apply(params, tokens_BT, cache=c, start=i) # prefill / decode
where `c = init_cache(cfg, batch, max_len)` and `start` is the position of tokens_BT[:, 0]:
one for the batch, or int32[B], one per row (the server's decode slots).
Cached calls take `left_pad` (int32[B]): row b's first left_pad[b] slots are padding that no
query attends to, and its positions count from the first real token; the whole-sequence call
with segment ids 0 on the padding and 1 after it computes the same.
With `segment_ids` (int32[B, T], equal ids = one document) attention never crosses a
document boundary and positions restart at 0 in each document.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax import attention, lora
from gptjax.errors import UserError

Cache = list[dict[str, jax.Array]]  # per layer {"k": [B,S,K,H], "v": [B,S,K,H]}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  vocab_size: int
  num_layers: int
  num_heads: int
  embed_dim: int
  max_len: int
  num_kv_heads: int = 0
  mlp_dim: int = 0
  dropout: float = 0.0
  use_bias: bool = True
  positions: str = "learned"
  rope_theta: float = 10000.0
  rope_scaling: str = ""
  rope_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  qkv_bias: bool = False
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  mlp: str = "gelu"
  tie_embeddings: bool = True
  dtype: str = "float32"
  attention: str = "xla"
  remat: str = "none"
  init_std: float = 0.02
  lora_rank: int = 0  # LoRA adapters on the weights lora_targets matches (0 = none)
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: str = ""
  score_head: bool = False  # a scalar head beside the output layer (reward models, tasks/reward)

  def __post_init__(self):
    kv = self.num_kv_heads or self.num_heads
    checks = [
        (self.embed_dim % self.num_heads == 0,
         f"model.embed_dim={self.embed_dim} must divide by model.num_heads={self.num_heads}"),
        (self.num_heads % kv == 0,
         f"model.num_heads={self.num_heads} must divide by model.num_kv_heads={kv}"),
        (self.positions in ("learned", "rope"), "model.positions must be learned or rope"),
        (self.rope_scaling in ("", "llama3"), "model.rope_scaling must be '' or llama3"),
        (self.norm in ("layernorm", "rmsnorm"), "model.norm must be layernorm or rmsnorm"),
        (self.mlp in ("gelu", "gelu_exact", "swiglu"),
         "model.mlp must be gelu, gelu_exact or swiglu"),
        (self.dtype in _DTYPES, f"model.dtype must be one of {sorted(_DTYPES)}"),
        (self.attention in ("xla", "cudnn", "splash", "auto"),
         "model.attention must be xla, cudnn, splash or auto"),
        (self.remat in ("none", *_REMAT_POLICIES), "model.remat must be none, save_dots or full"),
        (0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)"),
        (self.lora_rank >= 0 and 0.0 <= self.lora_dropout < 1.0,
         "lora.rank must be >= 0 and lora.dropout in [0, 1)"),
        (min(self.vocab_size, self.num_layers, self.max_len) > 0,
         "model.vocab_size, model.num_layers and model.max_len must be positive"),
    ]
    for ok, message in checks:
      if not ok:
        raise UserError(message)

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def hidden_dim(self) -> int:
    if self.mlp_dim:
      return self.mlp_dim
    if self.mlp != "swiglu":
      return 4 * self.embed_dim
    return 256 * math.ceil(8 * self.embed_dim / 3 / 256)  # Llama's SwiGLU width

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @classmethod
  def from_config(cls, config, vocab_size: int) -> GPTConfig:
    """The model a whole run config describes; `vocab_size` is the tokenizer's unless
    model.vocab_size fixes it. The table is padded to model.vocab_multiple and to the
    tensor axis (the output layer is split over it), so every mesh.tensor divides it."""
    model_cfg = config.model
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in model_cfg.items() if k in fields}
    vocab = model_cfg.vocab_size or vocab_size
    if model_cfg.vocab_size and model_cfg.vocab_size < vocab_size:
      raise UserError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the "
                      f"tokenizer's {vocab_size}: raise it or set it to 0")
    kwargs["vocab_size"] = padded(vocab, vocab_multiple(config))
    kwargs["max_len"] = model_cfg.max_len or config.data.seq_len
    adapters = config.get("lora")
    if adapters is not None and adapters.rank:
      kwargs.update(lora_rank=adapters.rank, lora_alpha=adapters.alpha,
                    lora_dropout=adapters.dropout, lora_targets=adapters.targets)
    return cls(**kwargs)


def padded(size: int, multiple: int) -> int:
  return multiple * math.ceil(size / multiple)


def vocab_multiple(config) -> int:
  """What the vocabulary is padded to: model.vocab_multiple and the mesh's tensor axis."""
  tensor = config.mesh.tensor if config.mesh.tensor > 0 else 1
  return math.lcm(config.model.get("vocab_multiple", 1) or 1, tensor)


def init_cache(cfg: GPTConfig, batch: int, max_len: int | None = None) -> Cache:
  """Zeroed KV cache for `max_len` positions, in the compute dtype."""
  shape = (batch, max_len or cfg.max_len, cfg.kv_heads, cfg.head_dim)
  return [{"k": jnp.zeros(shape, cfg.compute_dtype), "v": jnp.zeros(shape, cfg.compute_dtype)}
          for _ in range(cfg.num_layers)]


def _dense_init(std: float, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def _constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


def _platform() -> str:
  return attention._target_platform or jax.default_backend()


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _project_xt_grad(spec: str, x, w):
  return jnp.einsum(spec, x, w)


def _project_fwd(spec, x, w):
  return jnp.einsum(spec, x, w), (x, w)


def _project_bwd(spec, residuals, g):
  x, w = residuals
  inputs, out = spec.split("->")
  x_axes, w_axes = inputs.split(",")
  # The weight gradient as x^T g (output in the weight's own axis order): XLA:CPU then
  # transposes the activation x for its dot kernel, not the 4x wider MLP gradient, and drops
  # the transposing copy of the weight gradient. Same products and sums, same result.
  return (jnp.einsum(f"{out},{w_axes}->{x_axes}", g, w),
          jnp.einsum(f"{x_axes},{out}->{w_axes}", x, g))


_project_xt_grad.defvjp(_project_fwd, _project_bwd)


def project(spec: str, x, w):
  """jnp.einsum(spec, x, w) for an activation x and a weight w. On CPU its backward pass is
  written out so that XLA:CPU makes fewer, smaller transposing copies (about 10% of a step on
  nanoGPT's CPU configuration); GPU/TPU dot kernels transpose operands for free, so there it
  is the plain einsum."""
  if _platform() == "cpu":
    return _project_xt_grad(spec, x, w)
  return jnp.einsum(spec, x, w)


def rope_frequencies(cfg: GPTConfig) -> jax.Array:
  """The rotation frequency of each pair of head dimensions: theta^(-2i/H), and with
  rope_scaling="llama3" Llama 3.1's rescaling (wavelengths longer than the original context
  / low_freq_factor divided by rope_factor, shorter than / high_freq_factor kept, a linear
  blend between), as Hugging Face computes it."""
  half = cfg.head_dim // 2
  freqs_h = 1.0 / cfg.rope_theta ** (jnp.arange(half, dtype=jnp.float32) / half)
  if cfg.rope_scaling != "llama3":
    return freqs_h
  wavelen_h = 2 * math.pi / freqs_h
  old_len, factor = cfg.rope_original_max_len, cfg.rope_factor
  low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  smooth_h = (old_len / wavelen_h - low) / (high - low)
  blended_h = (1 - smooth_h) * freqs_h / factor + smooth_h * freqs_h
  return jnp.where(wavelen_h > old_len / low, freqs_h / factor,
                   jnp.where(wavelen_h < old_len / high, freqs_h, blended_h))


def rope(x_BTNH: jax.Array, positions_BT: jax.Array, freqs_H) -> jax.Array:
  """Rotary embedding, Llama/Hugging Face convention (rotate the two halves of each head).
  positions_BT: [B, T] or [1, T] (shared by every row); freqs_H from `rope_frequencies`."""
  angles_BTH = positions_BT.astype(jnp.float32)[..., None] * freqs_H
  sin, cos = jnp.sin(angles_BTH)[:, :, None, :], jnp.cos(angles_BTH)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)


def segment_positions(segment_ids_BT: jax.Array) -> jax.Array:
  """Each token's position inside its segment: 0 where the id changes, counting up after."""
  T = segment_ids_BT.shape[1]
  index_BT = jnp.broadcast_to(jnp.arange(T), segment_ids_BT.shape)
  starts_BT = jnp.concatenate([jnp.ones_like(segment_ids_BT[:, :1], bool),
                               segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]], axis=1)
  first_BT = jax.lax.cummax(jnp.where(starts_BT, index_BT, 0), axis=1)
  return index_BT - first_BT


class Norm(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.cfg
    common = dict(epsilon=cfg.norm_eps, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
                  scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)))
    if cfg.norm == "rmsnorm":
      return nn.RMSNorm(name="norm", **common)(x_BTD)
    return nn.LayerNorm(use_bias=cfg.use_bias, name="norm",
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        **common)(x_BTD)


def dense(module: nn.Module, name: str, spec: str, x, shape: tuple[int, ...],
          axes: tuple[str, ...], std: float, deterministic: bool):
  """x @ weight `name` (einsum `spec`), plus a LoRA update when model.lora_targets names it."""
  cfg: GPTConfig = module.cfg
  w = module.param(name, _dense_init(std, axes), shape)
  y = project(spec, x, w.astype(cfg.compute_dtype))
  path = "/".join((*module.scope.path, name))
  if not lora.applies(cfg, path):
    return y
  n_in = lora.contracted_axes(spec)
  a = module.param(name + lora.A_SUFFIX, nn.with_logical_partitioning(
      lora.a_init(shape[:n_in]), (*axes[:n_in], None)), (*shape[:n_in], cfg.lora_rank))
  b = module.param(name + lora.B_SUFFIX, _zeros((None, *axes[n_in:])),
                   (cfg.lora_rank, *shape[n_in:]))
  if cfg.lora_dropout and not deterministic:
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - cfg.lora_dropout, x.shape)
    x = jnp.where(keep, x / (1.0 - cfg.lora_dropout), 0).astype(x.dtype)
  return y + lora.delta(spec, x, a.astype(y.dtype), b.astype(y.dtype), lora.scale(cfg))


class Attention(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, layer_cache, start, deterministic,
               left_pad_B=None):
    cfg = self.cfg
    dt, D, N, K, H = cfg.compute_dtype, cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)

    def proj(name, heads):
      y = dense(self, f"w{name}", "btd,dnh->btnh", x_BTD, (D, heads, H),
                ("embed", "heads", "kv"), cfg.init_std, deterministic)
      if cfg.use_bias or cfg.qkv_bias:
        y = y + self.param(f"b{name}", _zeros(("heads", "kv")), (heads, H)).astype(dt)
      return _constrain(y, ("batch", "length", "heads", "kv"))

    q_BTNH, k_BTKH, v_BTKH = proj("q", N), proj("k", K), proj("v", K)
    if cfg.positions == "rope":
      freqs_H = rope_frequencies(cfg)
      q_BTNH = rope(q_BTNH, positions_BT, freqs_H)
      k_BTKH = rope(k_BTKH, positions_BT, freqs_H)

    new_cache = None
    if layer_cache is None:
      out_BTNH = attention.causal(q_BTNH, k_BTKH, v_BTKH, cfg.attention, cfg.dtype,
                                  segment_ids_BT)
    else:
      # Write this chunk's keys/values at `start`, then attend over every cached position
      # up to each query's own position (prefill: a causal block; decode: one row).
      # `start` may be one position per row (continuous batching: every slot at its own).
      if jnp.ndim(start) == 0:
        write = lambda c, x: jax.lax.dynamic_update_slice(c, x, (0, start, 0, 0))
      else:
        write = lambda c, x: jax.vmap(
            lambda c1, x1, s: jax.lax.dynamic_update_slice(c1, x1, (s, 0, 0)))(c, x, start)
      start_B = jnp.broadcast_to(jnp.asarray(start, jnp.int32), (x_BTD.shape[0],))
      k_BSKH = write(layer_cache["k"], k_BTKH.astype(dt))
      v_BSKH = write(layer_cache["v"], v_BTKH.astype(dt))
      new_cache = {"k": k_BSKH, "v": v_BSKH}
      S = k_BSKH.shape[1]
      query_BT = start_B[:, None] + jnp.arange(q_BTNH.shape[1])[None]
      mask_BTS = jnp.arange(S)[None, None, :] <= query_BT[:, :, None]
      if left_pad_B is not None:
        mask_BTS = mask_BTS & (jnp.arange(S) >= left_pad_B[:, None])[:, None, :]
      out_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH,
                                              mask=mask_BTS[:, None])

    out_BTNH = _constrain(out_BTNH, ("batch", "length", "heads", "kv"))
    y_BTD = dense(self, "wo", "btnh,nhd->btd", out_BTNH, (N, H, D), ("heads", "kv", "embed"),
                  out_std, deterministic)
    if cfg.use_bias:
      y_BTD = y_BTD + self.param("bo", _zeros(("embed",)), (D,)).astype(dt)
    return y_BTD, new_cache


class Mlp(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BTD, deterministic):
    cfg = self.cfg
    dt, D, F = cfg.compute_dtype, cfg.embed_dim, cfg.hidden_dim
    out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)

    def up(name):
      y = dense(self, name, "btd,df->btf", x_BTD, (D, F), ("embed", "mlp"), cfg.init_std,
                deterministic)
      if cfg.use_bias:
        y = y + self.param(f"{name}_bias", _zeros(("mlp",)), (F,)).astype(dt)
      return _constrain(y, ("batch", "length", "mlp"))

    if cfg.mlp == "swiglu":
      h_BTF = nn.silu(up("wi_gate")) * up("wi_up")
    else:  # GPT-2's tanh approximation, or the exact erf form (PyTorch nn.GELU, nanoGPT)
      h_BTF = nn.gelu(up("wi"), approximate=cfg.mlp == "gelu")
    y_BTD = dense(self, "wo", "btf,fd->btd", h_BTF, (F, D), ("mlp", "embed"), out_std,
                  deterministic)
    if cfg.use_bias:
      y_BTD = y_BTD + self.param("wo_bias", _zeros(("embed",)), (D,)).astype(dt)
    return y_BTD


class Block(nn.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""
  cfg: GPTConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, layer_cache, start,
               deterministic: bool, left_pad_B=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout)
    y_BTD, new_cache = Attention(cfg, name="attn")(Norm(cfg, name="ln1")(x_BTD), positions_BT,
                                                   segment_ids_BT, layer_cache, start,
                                                   deterministic, left_pad_B)
    x_BTD = x_BTD + drop(y_BTD, deterministic=deterministic)
    x_BTD = x_BTD + drop(Mlp(cfg, name="mlp")(Norm(cfg, name="ln2")(x_BTD), deterministic),
                         deterministic=deterministic)
    return _constrain(x_BTD, ("batch", "length", "embed")), new_cache


class GPT(nn.Module):
  cfg: GPTConfig

  @nn.compact
  def __call__(self, tokens_BT, *, deterministic: bool = True, cache: Cache | None = None,
               start: Any = 0, return_hidden: bool = False, segment_ids=None, left_pad=None):
    """Logits; or with `return_hidden`, (final hidden states, output head) for a loss that
    computes logits chunk by chunk (gptjax.losses.chunked_cross_entropy). `segment_ids`
    (int32[B, T]) packs documents: attention stays inside each, positions restart."""
    cfg = self.cfg
    dt, T = cfg.compute_dtype, tokens_BT.shape[1]
    if cache is None and T > cfg.max_len:
      raise UserError(f"sequence length {T} exceeds model.max_len={cfg.max_len}")
    if segment_ids is not None and cache is not None:
      raise ValueError("segment_ids are for whole-sequence calls, not cached decoding")
    if left_pad is not None and cache is None:
      raise ValueError("left_pad is for cached calls; whole sequences take segment_ids")
    per_row = jnp.ndim(start) == 1  # cached calls: one start position per row
    positions_BT = ((jnp.asarray(start)[:, None] if per_row else start) + jnp.arange(T)[None]
                    if segment_ids is None else segment_positions(segment_ids))
    if left_pad is not None:
      positions_BT = jnp.maximum(positions_BT - left_pad[:, None], 0)

    wte = self.param("wte", _dense_init(cfg.init_std, ("vocab", "embed")),
                     (cfg.vocab_size, cfg.embed_dim))
    x_BTD = jnp.take(wte, tokens_BT, axis=0).astype(dt)
    if cfg.positions == "learned":
      wpe = self.param("wpe", _dense_init(cfg.init_std, ("length", "embed")),
                       (cfg.max_len, cfg.embed_dim))
      if segment_ids is None and left_pad is None and not per_row:
        x_BTD = x_BTD + jax.lax.dynamic_slice_in_dim(wpe, start, T, axis=0).astype(dt)[None]
      else:
        x_BTD = x_BTD + jnp.take(wpe, positions_BT, axis=0).astype(dt)
    x_BTD = nn.Dropout(cfg.dropout)(x_BTD, deterministic=deterministic)
    x_BTD = _constrain(x_BTD, ("batch", "length", "embed"))

    block_cls = Block
    if cfg.remat != "none" and cache is None:
      block_cls = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], static_argnums=(6,))
    new_cache = []
    for i in range(cfg.num_layers):
      layer_cache = None if cache is None else cache[i]
      x_BTD, layer_new = block_cls(cfg, name=f"block_{i}")(x_BTD, positions_BT, segment_ids,
                                                           layer_cache, start, deterministic,
                                                           left_pad)
      new_cache.append(layer_new)

    x_BTD = Norm(cfg, name="ln_f")(x_BTD)
    if cfg.tie_embeddings:
      head_DV = wte.T
    else:
      head_DV = self.param("lm_head", _dense_init(cfg.init_std, ("embed", "vocab")),
                           (cfg.embed_dim, cfg.vocab_size))
    if cfg.score_head:  # read by the task from params["score_head"]: hidden @ score -> scalar
      self.param("score_head", _dense_init(1.0 / math.sqrt(cfg.embed_dim + 1), ("embed",)),
                 (cfg.embed_dim,))
    if return_hidden:
      return x_BTD, head_DV
    logits_BTV = jnp.einsum("btd,dv->btv", x_BTD, head_DV.astype(dt),
                            preferred_element_type=jnp.float32)
    logits_BTV = _constrain(logits_BTV, ("batch", "length", "vocab"))
    return logits_BTV if cache is None else (logits_BTV, new_cache)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
