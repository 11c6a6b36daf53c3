"""Tests run on CPU with 8 simulated devices; the flag must be set before jax is imported."""

import os

# and wait out a starved device, as gptjax.sharding does; and compile without LLVM's
# optimisations: the tests' models are tiny, so compiling is most of their time, and level 0
# cut it by a third on test_train/test_sft/test_feedback here (the same programs run, only
# their machine code is less tuned; what a test compares is compiled the same way).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_cpu_collective_call_terminate_timeout_seconds=1800"
    " --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole run, fresh each run, inherited by the
# CLI and server processes the tests start: dozens of tests train the same tiny models, and
# a program compiled once is then read back instead of compiled again (about a third of the
# suite's time on a 2-core CPU). JAX's compile events fire on a cache read too, so the
# serving tests' compilation counters still count every executable that is built.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gptjax-tests-xla-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"


@pytest.fixture
def shakespeare_path():
  if not SHAKESPEARE.exists():
    pytest.skip(f"{SHAKESPEARE} not found (../shared/data beside the repo)")
  return str(SHAKESPEARE)


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory):
  """A small chat model (configs/sft.py:smoke: sentencepiece with the chat tokens) trained
  briefly on alpaca_5000, with a 512-position context so a reply can run long."""
  from test_train import load_config
  from gptjax import train as train_lib
  alpaca = SHARED_DATA / "alpaca" / "alpaca_5000.json"
  if not alpaca.exists():
    pytest.skip(f"{alpaca} not found (../shared/data beside the repo)")
  tmp = tmp_path_factory.mktemp("sft_run")
  config = load_config("sft", "smoke")
  config.data.path = str(alpaca)
  config.data.data_dir = str(tmp / "data")
  config.model.max_len = 512
  config.train.steps = config.checkpoint.every = config.eval.every = 12
  config.eval.max_batches = 1
  train_lib.train(config, str(tmp / "w"))
  return str(tmp / "w")


def unigram_loaded(chars: str, logits: dict):
  """A hand-made model whose every position predicts softmax(L) whatever came before (L[c] =
  logits.get(c, 0)): the final norm's scale is zero and its bias picks column 0 of the tied
  embedding, which holds L. A Loaded, as load_workdir returns, on one device."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from gptjax.data.tokenizers import CharTokenizer
  from gptjax.load import Loaded, one_device_mesh
  from gptjax.model import GPT, GPTConfig
  tokenizer = CharTokenizer(chars)
  model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, num_layers=1, num_heads=2,
                        embed_dim=8, max_len=64))
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  table = np.zeros(tokenizer.vocab_size, np.float32)
  for char, value in logits.items():
    table[tokenizer.encode(char)[0]] = value
  params["ln_f"]["norm"]["scale"] = jnp.zeros(8)
  params["ln_f"]["norm"]["bias"] = jnp.zeros(8).at[0].set(1.0)
  params["wte"] = params["wte"].at[:, 0].set(table)
  return Loaded(config=None, model=model, params=params, tokenizer=tokenizer,
                mesh=one_device_mesh(), step=0), np.asarray(jax.nn.log_softmax(table))
