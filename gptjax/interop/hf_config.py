"""Hugging Face config.json <-> gptjax model settings, per family (gpt2, llama, mistral,
qwen2). Anything the gptjax model cannot compute exactly is refused with the field named,
never converted into a model that silently differs."""

from __future__ import annotations

from gptjax.errors import UserError, warn
from gptjax.model import GPTConfig

ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                 "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}


def family_of(hf: dict) -> str:
  model_type = hf.get("model_type", "")
  if model_type not in ARCHITECTURES:
    raise UserError(f"config.json model_type={model_type!r} is not supported: gptjax-convert "
                    f"reads {sorted(ARCHITECTURES)}")
  return model_type


def _refuse(ok: bool, field: str, why: str) -> None:
  if not ok:
    raise UserError(f"config.json {field}: {why}; gptjax cannot compute this model exactly")


def _rope(hf: dict) -> dict:
  """RoPE settings from either transformers 5's `rope_parameters` or 4.x's `rope_theta` +
  `rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  source = params if params.get("rope_type") else scaling
  out = {"rope_theta": float(theta), "rope_scaling": ""}
  if kind == "llama3":
    out.update(rope_scaling="llama3", rope_factor=float(source["factor"]),
               rope_low_freq_factor=float(source["low_freq_factor"]),
               rope_high_freq_factor=float(source["high_freq_factor"]),
               rope_original_max_len=int(source["original_max_position_embeddings"]))
  else:
    _refuse(kind == "default", "rope type", f"{kind!r} (supported: default, llama3)")
  return out


def model_settings(hf: dict) -> dict:
  """gptjax `config.model` fields for a Hugging Face config.json."""
  family = family_of(hf)
  if family == "gpt2":
    act = hf.get("activation_function", "gelu_new")
    _refuse(act in GPT2_ACTIVATIONS, "activation_function", repr(act))
    _refuse(hf.get("scale_attn_weights", True), "scale_attn_weights", "false")
    _refuse(not hf.get("scale_attn_by_inverse_layer_idx", False),
            "scale_attn_by_inverse_layer_idx", "true")
    return dict(vocab_size=hf["vocab_size"], num_layers=hf["n_layer"], num_heads=hf["n_head"],
                num_kv_heads=0, embed_dim=hf["n_embd"], mlp_dim=hf.get("n_inner") or 0,
                max_len=hf["n_positions"], use_bias=True, qkv_bias=False, positions="learned",
                norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                mlp=GPT2_ACTIVATIONS[act], tie_embeddings=hf.get("tie_word_embeddings", True),
                rope_scaling="")
  heads, width = hf["num_attention_heads"], hf["hidden_size"]
  _refuse(hf.get("hidden_act", "silu") == "silu", "hidden_act", repr(hf.get("hidden_act")))
  head_dim = hf.get("head_dim") or width // heads
  _refuse(head_dim * heads == width, "head_dim",
          f"{head_dim} x {heads} heads != hidden_size {width}")
  _refuse(not hf.get("attention_bias", False) or family == "qwen2", "attention_bias",
          "true (biases on every attention projection)")
  _refuse(not hf.get("mlp_bias", False), "mlp_bias", "true")
  max_len = hf["max_position_embeddings"]
  window = hf.get("sliding_window") if hf.get("use_sliding_window", family == "mistral") else None
  if window and window < max_len:
    warn(f"config.json sliding_window={window}: the model attends to at most {window} "
         f"positions, so its context here is {window} (exact up to that length)")
    max_len = window
  return dict(vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], num_heads=heads,
              num_kv_heads=hf.get("num_key_value_heads") or heads, embed_dim=width,
              mlp_dim=hf["intermediate_size"], max_len=max_len, use_bias=False,
              qkv_bias=family == "qwen2", positions="rope", norm="rmsnorm",
              norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu",
              tie_embeddings=hf.get("tie_word_embeddings", False), **_rope(hf))


def family_for(cfg: GPTConfig) -> str:
  """The Hugging Face family that computes what `cfg` does."""
  if cfg.positions == "learned" and cfg.norm == "layernorm" and cfg.mlp != "swiglu":
    if cfg.num_kv_heads and cfg.num_kv_heads != cfg.num_heads:
      raise UserError("a GPT-2-layout model with grouped-query attention has no Hugging Face "
                      "family to export to")
    return "gpt2"
  if cfg.positions == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu" and not cfg.use_bias:
    return "qwen2" if cfg.qkv_bias else "llama"
  raise UserError(f"no Hugging Face family computes this model (positions={cfg.positions}, "
                  f"norm={cfg.norm}, mlp={cfg.mlp}, use_bias={cfg.use_bias}): export supports "
                  "the GPT-2 layout and the Llama layout")


def hf_config_for(cfg: GPTConfig, family: str, vocab_size: int, ids: dict,
                  dtype: str) -> dict:
  """config.json for `cfg` (vocabulary cut to `vocab_size`, the tokenizer's)."""
  common = dict(architectures=[ARCHITECTURES[family]], model_type=family,
                vocab_size=vocab_size, tie_word_embeddings=cfg.tie_embeddings,
                bos_token_id=ids.get("bos_token_id"), eos_token_id=ids.get("eos_token_id"),
                pad_token_id=ids.get("pad_token_id"), torch_dtype=dtype)
  if family == "gpt2":
    act = {"gelu": "gelu_new", "gelu_exact": "gelu"}[cfg.mlp]
    return dict(common, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_embd=cfg.embed_dim,
                n_inner=cfg.hidden_dim, n_positions=cfg.max_len, n_ctx=cfg.max_len,
                layer_norm_epsilon=cfg.norm_eps, activation_function=act,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
  out = dict(common, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
             num_key_value_heads=cfg.kv_heads, hidden_size=cfg.embed_dim,
             intermediate_size=cfg.hidden_dim, head_dim=cfg.head_dim, hidden_act="silu",
             max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps,
             rope_theta=cfg.rope_theta, attention_dropout=0.0)
  if family == "llama":
    out.update(attention_bias=False, mlp_bias=False)
  if family == "qwen2":
    out.update(use_sliding_window=False, sliding_window=None)
  if cfg.rope_scaling == "llama3":
    out["rope_scaling"] = dict(rope_type="llama3", factor=cfg.rope_factor,
                               low_freq_factor=cfg.rope_low_freq_factor,
                               high_freq_factor=cfg.rope_high_freq_factor,
                               original_max_position_embeddings=cfg.rope_original_max_len)
  return out
