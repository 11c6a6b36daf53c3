"""The planner's exact parts equal the real sharded state; topologies and the CLI behave."""

import subprocess
import sys

import jax
import ml_collections
import pytest

from conftest import REPO
from gptjax import chips, metrics, plan, sharding, state as state_lib
from gptjax.config import sibling_config
from gptjax.errors import UserError
from gptjax.model import GPT
from gptjax.optim import make_optimizer


def tiny_config(data=1, fsdp=1, tensor=1):
  c = sibling_config(str(REPO / "configs" / "x"), "tiny.py")
  c.model.vocab_size, c.model.num_heads = 128, 8  # every dim divides 8 ways
  c.mesh = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))
  return c


def device0_bytes(tree) -> int:
  """Bytes of `tree` that live on the first device (each array's shard there)."""
  device = jax.devices()[0]
  return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree)
             for s in x.addressable_shards if s.device == device)


@pytest.mark.parametrize("mesh", [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 4, 2), (1, 1, 8)])
def test_planned_state_bytes_equal_the_real_sharded_state(mesh):
  config = tiny_config(*mesh)
  lay = plan.layout(config, chips.CHIPS["h100"], 8)
  planned = plan.state_bytes(config, lay)

  model = GPT(lay.model)
  real_mesh = sharding.make_mesh(config.mesh)
  params_abstract, params_shardings = state_lib.abstract_params(model, real_mesh)
  tx = make_optimizer(config.optim, config.train.steps)
  shardings = state_lib.state_shardings(tx, params_abstract, params_shardings, real_mesh)
  state = state_lib.init_state(model, tx, real_mesh, shardings, seed=0)

  assert planned["params"] == device0_bytes(state.params)
  assert planned["optimizer"] == device0_bytes(state.opt_state)
  assert planned["num_params"] == sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  flops = plan.plan(config, "h100-8")["step"]["flops_per_token"]  # the trainer's MFU numerator
  assert flops == metrics.model_flops_per_token(state.params, lay.model, config.data.seq_len)


def test_gradient_accumulation_keeps_a_float32_running_sum():
  config = tiny_config()  # float32 compute: gradients as large as the params
  one = plan.plan(config, "h100")
  assert one["memory"]["gradients"] == one["memory"]["params"]
  config.train.grad_accum = 4
  four = plan.plan(config, "h100")
  assert four["memory"]["gradients"] == 2 * one["memory"]["gradients"]
  assert four["memory"]["activations"] < one["memory"]["activations"]  # a quarter the batch


def test_remat_and_loss_chunks_shrink_their_terms():
  config = sibling_config(str(REPO / "configs" / "x"), "gpt2.py", "124m")
  config.train.grad_accum = 32  # 16 sequences a microbatch
  memory, step = {}, {}
  for remat in ("none", "save_dots", "full"):
    config.model.remat = remat
    p = plan.plan(config, "h100")
    memory[remat], step[remat] = p["memory"]["activations"], p["step"]["step_s"]
  assert memory["none"] > memory["save_dots"] > memory["full"]
  assert step["none"] < step["save_dots"] < step["full"]  # what remat saves, it recomputes
  chunked = plan.plan(config, "h100")["memory"]["working"]
  config.task.loss_chunk = 0
  assert plan.plan(config, "h100")["memory"]["working"] > 4 * chunked


def test_fsdp_divides_the_state_over_the_slice():
  config = sibling_config(str(REPO / "configs" / "x"), "llama.py", "7b")
  small, large = plan.plan(config, "v5p-16"), plan.plan(config, "v5p-128")
  assert small["devices"] == 8 and large["devices"] == 64
  assert small["step"]["communication_s"] > 0 and small["memory"]["gathered"] > 0
  ratio = small["memory"]["optimizer"] / large["memory"]["optimizer"]
  assert ratio == pytest.approx(8, rel=0.01)


@pytest.mark.parametrize("config, topology", [("gpt2.py:124m", "h100"), ("gpt2.py:774m", "h100"),
                                              ("gpt2.py:1558m", "h100"), ("llama.py:1b", "h100-8"),
                                              ("llama.py:7b", "v5p-128")])
def test_shipped_configs_fit_the_machines_their_docstrings_name(config, topology):
  name, arg = config.split(":")
  assert plan.plan(sibling_config(str(REPO / "configs" / "x"), name, arg), topology)["fits"]


@pytest.mark.parametrize("text, devices", [("v5p-128", 64), ("v4-32", 16), ("v5e-16", 16),
                                           ("v5litepod-8", 8), ("h100-8", 8), ("h200", 1)])
def test_topologies_count_jax_devices(text, devices):
  assert chips.parse_topology(text)[1] == devices


@pytest.mark.parametrize("text", ["tpu-8", "v5p-3", "h100-x"])
def test_bad_topologies_say_what_is_accepted(text):
  with pytest.raises(UserError, match="topology"):
    chips.parse_topology(text)


def test_cli_prints_a_plan_and_one_line_errors():
  run = lambda *a: subprocess.run([sys.executable, "-m", "gptjax.plan", *a], cwd=REPO,  # noqa
                                  capture_output=True, text=True, timeout=120)
  out = run("--config=configs/gpt2.py:774m", "--topology=h100")
  assert out.returncode == 0, out.stderr
  assert "memory per device" in out.stdout and "fits" in out.stdout
  out = run("--config=configs/shakespeare_char.py:cpu", "--topology=h100")
  assert out.returncode == 2 and "--vocab_size" in out.stderr and "Traceback" not in out.stderr
