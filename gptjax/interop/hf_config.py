"""Hugging Face config.json <-> gptjax model settings, per family (gpt2, llama, mistral,
qwen2). Anything the gptjax model cannot compute exactly is refused with the field named,
never converted into a model that silently differs."""

from __future__ import annotations


from gptjax import storage
from gptjax.errors import UserError, warn
from gptjax.model import GPTConfig

ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                 "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}


def read(path: str) -> dict:
  """config.json as a dict, or one line saying why it is not one."""
  return storage.read_json_object(path, max_bytes=_MAX_CONFIG_BYTES, holds="model settings")


_MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is a few KiB
_REQUIRED = object()


def _size(hf: dict, field: str, default=_REQUIRED) -> int:
  """A dimension: a positive JSON integer (not "2", 2.5, 1e10 or true)."""
  value = hf.get(field)
  if value is None and default is not _REQUIRED:
    return default
  if field not in hf:
    raise UserError(f"config.json lacks {field}, which a {hf.get('model_type')} model "
                    "needs: add it or download the checkpoint again")
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserError(f"config.json {field}={value!r}: must be a positive integer")
  return value


def _number(section: dict, field: str, default=_REQUIRED, label: str = "") -> float:
  """A positive float setting (an epsilon, RoPE's theta or factors)."""
  value = section.get(field, default)
  if value is _REQUIRED:
    raise UserError(f"config.json {label}lacks {field}: add it or download the checkpoint "
                    "again")
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e30:
    raise UserError(f"config.json {label}{field}={value!r}: must be a positive number")
  return float(value)


def _object(hf: dict, field: str) -> dict:
  value = hf.get(field)
  if value is not None and not isinstance(value, dict):
    raise UserError(f"config.json {field} must be an object or null, not {value!r}")
  return dict(value or {})


def layers_field(family: str) -> str:
  return "n_layer" if family == "gpt2" else "num_hidden_layers"


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
  params, scaling = _object(hf, "rope_parameters"), _object(hf, "rope_scaling")
  theta = _number(params, "rope_theta", _number(hf, "rope_theta", 10000.0), "rope_parameters.")
  kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  source, label = ((params, "rope_parameters.") if params.get("rope_type")
                   else (scaling, "rope_scaling."))
  out = {"rope_theta": theta, "rope_scaling": ""}
  if kind == "llama3":
    out.update(rope_scaling="llama3", rope_factor=_number(source, "factor", label=label),
               rope_low_freq_factor=_number(source, "low_freq_factor", label=label),
               rope_high_freq_factor=_number(source, "high_freq_factor", label=label),
               rope_original_max_len=int(_number(source, "original_max_position_embeddings",
                                                 label=label)))
  else:
    _refuse(kind == "default", "rope type", f"{kind!r} (supported: default, llama3)")
  return out


def model_settings(hf: dict) -> dict:
  """gptjax `config.model` fields for a Hugging Face config.json. Every size is checked to
  be a positive integer here, before anything is built from it."""
  family = family_of(hf)
  vocab, layers = _size(hf, "vocab_size"), _size(hf, layers_field(family))
  if family == "gpt2":
    act = hf.get("activation_function", "gelu_new")
    _refuse(act in GPT2_ACTIVATIONS, "activation_function", repr(act))
    _refuse(hf.get("scale_attn_weights", True), "scale_attn_weights", "false")
    _refuse(not hf.get("scale_attn_by_inverse_layer_idx", False),
            "scale_attn_by_inverse_layer_idx", "true")
    heads, width = _size(hf, "n_head"), _size(hf, "n_embd")
    if width % heads:
      raise UserError(f"config.json n_embd={width} must divide by n_head={heads}")
    return dict(vocab_size=vocab, num_layers=layers, num_heads=heads, num_kv_heads=0,
                embed_dim=width, mlp_dim=_size(hf, "n_inner", 0),
                max_len=_size(hf, "n_positions"), use_bias=True, qkv_bias=False,
                positions="learned", norm="layernorm",
                norm_eps=_number(hf, "layer_norm_epsilon", 1e-5), mlp=GPT2_ACTIVATIONS[act],
                tie_embeddings=hf.get("tie_word_embeddings", True),
                rope_scaling="")
  heads, width = _size(hf, "num_attention_heads"), _size(hf, "hidden_size")
  _refuse(hf.get("hidden_act", "silu") == "silu", "hidden_act", repr(hf.get("hidden_act")))
  head_dim = _size(hf, "head_dim", width // heads or 1)
  _refuse(head_dim * heads == width, "head_dim",
          f"{head_dim} x {heads} heads != hidden_size {width}")
  kv_heads = _size(hf, "num_key_value_heads", heads)
  if heads % kv_heads:
    raise UserError(f"config.json num_attention_heads={heads} must divide by "
                    f"num_key_value_heads={kv_heads}")
  _refuse(not hf.get("attention_bias", False) or family == "qwen2", "attention_bias",
          "true (biases on every attention projection)")
  _refuse(not hf.get("mlp_bias", False), "mlp_bias", "true")
  max_len = _size(hf, "max_position_embeddings")
  window = (_size(hf, "sliding_window", None) if hf.get("use_sliding_window", family == "mistral")
            else None)
  if window and window < max_len:
    warn(f"config.json sliding_window={window}: the model attends to at most {window} "
         f"positions, so its context here is {window} (exact up to that length)")
    max_len = window
  return dict(vocab_size=vocab, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
              embed_dim=width, mlp_dim=_size(hf, "intermediate_size"), max_len=max_len,
              use_bias=False, qkv_bias=family == "qwen2", positions="rope", norm="rmsnorm",
              norm_eps=_number(hf, "rms_norm_eps", 1e-6), mlp="swiglu",
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
