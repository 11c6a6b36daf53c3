"""Model behaviour: causality, cached decode == full forward, layouts, remat, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.errors import UserError
from gptjax.model import GPT, GPTConfig, count_params, init_cache

GPT2 = dict()
LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False,
             num_kv_heads=2, use_bias=False)


def make(layout=None, **kw):
  cfg = GPTConfig(vocab_size=61, num_layers=2, num_heads=4, embed_dim=32, max_len=24,
                  **{**(layout or {}), **kw})
  model = GPT(cfg)
  tokens = jax.random.randint(jax.random.key(0), (3, 24), 0, cfg.vocab_size)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  return cfg, model, params, tokens


@pytest.mark.parametrize("layout", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_changing_a_future_token_never_changes_an_earlier_logit(layout):
  _, model, params, tokens = make(layout)
  forward = jax.jit(lambda t: model.apply({"params": params}, t))
  base = forward(tokens)
  for t in (0, 7, 23):
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % 61)
    out = forward(changed)
    np.testing.assert_array_equal(out[:, :t], base[:, :t])
    assert not np.allclose(out[:, t], base[:, t])  # the changed position itself does move


@pytest.mark.parametrize("layout", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_prefill_then_decode_equals_full_forward(layout):
  cfg, model, params, tokens = make(layout)
  full = model.apply({"params": params}, tokens)
  cache = init_cache(cfg, tokens.shape[0])
  logits, cache = model.apply({"params": params}, tokens[:, :9], cache=cache, start=0)
  pieces = [logits]
  step = jax.jit(lambda p, t, c, s: model.apply({"params": p}, t, cache=c, start=s))
  for i in range(9, 24):
    logits, cache = step(params, tokens[:, i:i + 1], cache, i)
    pieces.append(logits)
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=2e-5, rtol=1e-5)


def test_llama_layout_has_its_parameters():
  cfg, _, params, _ = make(LLAMA)
  attn = params["block_0"]["attn"]
  assert attn["wq"].shape == (32, 4, 8) and attn["wk"].shape == (32, 2, 8)  # GQA: 2 kv heads
  assert "lm_head" in params and "wpe" not in params and "bq" not in attn
  assert set(params["block_0"]["mlp"]) == {"wi_gate", "wi_up", "wo"}
  assert cfg.hidden_dim == 256


def test_gpt2_layout_parameter_count_matches_formula():
  cfg, _, params, _ = make(GPT2)
  d, v, L, t = 32, 61, 2, 24
  per_block = 4 * d * d + 4 * d + 2 * 4 * d * d + 4 * d + d + 4 * d  # attn, mlp, 2 LayerNorms
  assert count_params(params) == v * d + t * d + L * per_block + 2 * d


@pytest.mark.parametrize("policy", ["full", "save_dots"])
def test_remat_gives_the_same_loss_and_gradients(policy):
  _, model, params, tokens = make(GPT2)
  _, remat_model, _, _ = make(GPT2, remat=policy)

  def loss(m, p):
    return m.apply({"params": p}, tokens).astype(jnp.float32).mean()

  l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(model, p)))(params)
  l2, g2 = jax.jit(jax.value_and_grad(lambda p: loss(remat_model, p)))(params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


def test_bfloat16_compute_keeps_float32_params_and_logits_close():
  _, model, params, tokens = make(GPT2)
  _, bf16_model, _, _ = make(GPT2, dtype="bfloat16")
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  ref = model.apply({"params": params}, tokens)
  out = bf16_model.apply({"params": params}, tokens)
  assert out.dtype == jnp.float32
  assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_dropout_is_random_in_training_and_off_in_eval():
  _, model, params, tokens = make(GPT2, dropout=0.5)
  a = model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.key(0)})
  b = model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.key(1)})
  c = model.apply({"params": params}, tokens)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(c, model.apply({"params": params}, tokens))


@pytest.mark.parametrize("bad, match", [
    (dict(embed_dim=30), "model.embed_dim=30 must divide by model.num_heads"),
    (dict(num_kv_heads=3), "model.num_kv_heads"),
    (dict(positions="alibi"), "model.positions"),
    (dict(remat="some"), "model.remat"),
    (dict(dtype="float8"), "model.dtype"),
])
def test_bad_model_settings_name_the_setting(bad, match):
  with pytest.raises(UserError, match=match):
    GPTConfig(**{**dict(vocab_size=61, num_layers=2, num_heads=4, embed_dim=32, max_len=24),
                 **bad})


def test_attention_falls_back_to_xla_with_a_reason(caplog):
  from gptjax import attention
  assert attention.resolve("auto", "bfloat16", 64, "gpu") == "cudnn"
  assert attention.resolve("auto", "float32", 64, "gpu") == "xla"
  assert attention.resolve("auto", "bfloat16", 64, "cpu") == "xla"
  with caplog.at_level("WARNING"):
    assert attention.resolve("cudnn", "bfloat16", 96 + 4, "gpu") == "xla"
  assert "head dimension 100" in caplog.text
  # and a model asking for cudnn still runs here, on XLA
  _, model, params, tokens = make(GPT2, attention="cudnn")
  ref_model = make(GPT2)[1]
  np.testing.assert_array_equal(model.apply({"params": params}, tokens),
                                ref_model.apply({"params": params}, tokens))


@pytest.mark.parametrize("layout", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_cpu_projection_backward_gives_the_plain_einsum_gradients(layout, monkeypatch):
  # model.project writes its own backward pass on CPU (fewer XLA:CPU transposes); it must
  # give the gradients of plain jnp.einsum, which is what it is on other platforms.
  from gptjax import model as model_lib
  _, model, params, tokens = make(layout)

  def grads():
    def loss(p):
      return jnp.mean(jax.nn.logsumexp(model.apply({"params": p}, tokens), axis=-1))
    return jax.jit(jax.grad(loss))(params)

  custom = grads()
  monkeypatch.setattr(model_lib, "_platform", lambda: "gpu")
  plain = grads()
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         custom, plain)
