"""Hostile folders: a downloaded checkpoint or a workdir whose config asks for far more than
its files hold must be refused in seconds, within bounded memory, with one `error:` line and
exit code 2, before any model is traced. The malformed-file cases (one line, exit 2) are in
test_bad_input.py's CASES, built on `tiny_gpt2` below."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import REPO
from gptjax.errors import UserError
from gptjax.interop import convert

SECONDS = 30  # a refused case takes about 4 s here (mostly starting jax); hangs took minutes
PEAK_MIB = 1000  # a refused case peaks near 300 MiB; n_positions=1e9 allocated 4 GiB


def tiny_gpt2(folder, **config):
  """A GPT-2 checkpoint folder laid out as save_pretrained writes one (Conv1D weights, tied
  head, a byte-sized BPE tokenizer), built with numpy in milliseconds: the thing to corrupt.
  `config` overrides config.json's fields only; the tensors keep the sizes below."""
  from tokenizers import Tokenizer, models
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  V, L, D, P = 64, 2, 16, 32
  shapes = {"wte.weight": (V, D), "wpe.weight": (P, D), "ln_f.weight": (D,), "ln_f.bias": (D,)}
  for i in range(L):
    shapes.update({f"h.{i}.{k}": s for k, s in {
        "ln_1.weight": (D,), "ln_1.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
        "attn.c_attn.weight": (D, 3 * D), "attn.c_attn.bias": (3 * D,),
        "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,),
        "mlp.c_fc.weight": (D, 4 * D), "mlp.c_fc.bias": (4 * D,),
        "mlp.c_proj.weight": (4 * D, D), "mlp.c_proj.bias": (D,)}.items()})
  rng = np.random.RandomState(0)
  save_file({"transformer." + k: rng.normal(0, 0.3, s).astype(np.float32)
             for k, s in shapes.items()}, str(folder / "model.safetensors"),
            metadata={"format": "pt"})
  hf = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V,
        "n_layer": L, "n_head": 2, "n_embd": D, "n_positions": P, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True, **config}
  (folder / "config.json").write_text(json.dumps(hf))
  chars = "<unk>", *" etaoinshrdlucmfwypvbgkjqxz.,\nETAOINSHRDLU0123456789!?'-:;()"
  vocab = {c: i for i, c in enumerate(chars[:V])}
  Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>")).save(
      str(folder / "tokenizer.json"))
  return folder


def run_measured(args, timeout=SECONDS * 2):
  """(exit code, stdout, stderr, seconds, peak resident MiB) of one CLI process; killed
  after `timeout` (exit code None). The peak is the process's own VmHWM, polled: a child's
  ru_maxrss would count the memory of this (large) test process it was forked from."""
  from test_bad_input import command_line
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    start = time.monotonic()
    proc = subprocess.Popen([*command_line(args[0]), *args[1:]], cwd=REPO, stdout=out,
                            stderr=err, text=True)
    peak_kib = 0
    while proc.poll() is None:
      if time.monotonic() - start > timeout:
        proc.kill()
        proc.wait()
        break
      peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
      time.sleep(0.02)
    seconds = time.monotonic() - start
    out.seek(0)
    err.seek(0)
    code = None if proc.returncode < 0 else proc.returncode
    return code, out.read(), err.read(), seconds, peak_kib / 1024


def _vm_hwm_kib(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
  except OSError:  # it has just exited
    return 0


def assert_refused(outcome, expect: str):
  """Exit 2 quickly and within bounded memory; one `error:` line, warnings else, no
  traceback; `expect` in the error line or in a warning that explains it."""
  code, out, err, seconds, peak = outcome
  shown = (f"exit {code} after {seconds:.0f} s, peak {peak:.0f} MiB\nstderr:\n{err[-3000:]}"
           f"\nstdout:\n{out[-1000:]}")
  assert code == 2, shown
  assert "Traceback" not in out + err, shown
  lines = [line for line in err.splitlines() if line.strip()]
  assert sum(line.startswith("error: ") for line in lines) == 1, shown
  assert all(line.startswith(("error: ", "warning: ")) for line in lines), shown
  assert expect in err, shown
  assert seconds < SECONDS and peak < PEAK_MIB, shown


def test_the_tiny_gpt2_folder_imports(tmp_path):
  """The folder the hostile cases corrupt is itself a valid checkpoint."""
  summary = convert.import_hf(str(tiny_gpt2(tmp_path / "hf")), str(tmp_path / "w"))
  assert summary["family"] == "gpt2" and summary["max_len"] == 32


# ---- gptjax-convert: a config.json that asks for more than the safetensors hold

@pytest.mark.parametrize("field, value, expect", [
    ("n_positions", 10**9, "transformer.wpe.weight of shape (32, 16) does not fit"),
    ("n_positions", 2 * 10**9, "transformer.wpe.weight of shape (32, 16) does not fit"),
    ("n_positions", 1e9, "config.json n_positions=1000000000.0: must be a positive integer"),
    ("n_layer", 100_000, "config.json n_layer=100000 but the tensors of"),
    ("vocab_size", 10**10, "transformer.wte.weight of shape (64, 16) does not fit"),
], ids=["n_positions-1e9", "n_positions-2e9", "n_positions-float", "n_layer-100000",
        "vocab_size-1e10"])
def test_a_config_larger_than_its_tensors_is_refused_before_tracing(tmp_path, field, value,
                                                                    expect):
  folder = tiny_gpt2(tmp_path / "hf", **{field: value})
  assert_refused(run_measured(["gptjax.interop.convert", f"--from_hf={folder}",
                               f"--workdir={tmp_path / 'w'}"]), expect)
  assert not (tmp_path / "w" / "checkpoints").exists()


# ---- gptjax-sample / gptjax-eval: a saved config larger than its checkpoint's arrays

@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("hostile_workdir")
  convert.import_hf(str(tiny_gpt2(root / "hf")), str(root / "w"))
  return root / "w"


def _with_saved_model_config(imported, tmp_path, **model):
  workdir = tmp_path / "w"
  shutil.copytree(imported, workdir)
  path = workdir / "checkpoints" / "0" / "config" / "metadata"
  config = json.loads(path.read_text())
  config["model"].update(model)
  path.write_text(json.dumps(config))
  return workdir


@pytest.mark.parametrize("command, model, expect", [
    ("gptjax.generate", {"num_layers": 100_000},
     "its config says model.num_layers=100000 but its arrays hold 2 layers"),
    ("gptjax.evaluate", {"num_layers": 100_000},
     "its config says model.num_layers=100000 but its arrays hold 2 layers"),
    ("gptjax.generate", {"max_len": 10**9},
     "its config gives wpe the shape (1000000000, 16) but its array is (32, 16)"),
    ("gptjax.generate", {"embed_dim": 1_600_000, "num_heads": 2},
     "its config gives wte the shape (64, 1600000) but its array is (64, 16)"),
], ids=["sample-num_layers", "eval-num_layers", "sample-max_len", "sample-embed_dim"])
def test_a_saved_config_larger_than_its_arrays_is_refused_before_tracing(imported, tmp_path,
                                                                         command, model,
                                                                         expect):
  from test_bad_input import checkpoint_bytes
  workdir = _with_saved_model_config(imported, tmp_path, **model)
  before = checkpoint_bytes(workdir)
  assert_refused(run_measured([command, f"--workdir={workdir}"]), expect)
  assert checkpoint_bytes(workdir) == before
  outcome = run_measured([command, f"--workdir={workdir}", "--step=0"])
  assert_refused(outcome, "checkpoint step 0 is damaged: " + expect)


def test_a_damaged_config_leaves_an_older_checkpoint_usable(imported, tmp_path):
  """Only the newest step's config disagrees with its arrays: that step is named and
  skipped, as any damaged checkpoint is, and the older one loads."""
  from gptjax import checkpoint
  from gptjax.load import load_workdir
  workdir = _with_saved_model_config(imported, tmp_path)
  shutil.copytree(workdir / "checkpoints" / "0", workdir / "checkpoints" / "5")
  path = workdir / "checkpoints" / "5" / "config" / "metadata"
  config = json.loads(path.read_text())
  config["model"]["num_layers"] = 100_000
  path.write_text(json.dumps(config))
  assert checkpoint.Checkpointer(str(workdir), read_only=True).all_steps() == [0, 5]
  assert load_workdir(str(workdir)).step == 0
  with pytest.raises(UserError, match="checkpoint step 5 is damaged: its config says"):
    load_workdir(str(workdir), step=5)


# ---- what a downloaded folder may hold

def test_symlinks_out_of_the_folder_are_followed(tmp_path):
  """The Hugging Face cache's snapshot folders are symlinks into its blobs folder."""
  blobs = tiny_gpt2(tmp_path / "blobs")
  snapshot = tmp_path / "snapshot"
  snapshot.mkdir()
  for name in ("config.json", "model.safetensors", "tokenizer.json"):
    (snapshot / name).symlink_to(blobs / name)
  assert convert.import_hf(str(snapshot), str(tmp_path / "w"))["family"] == "gpt2"


MALFORMED = {
    "index-outside": "names ../elsewhere.safetensors, a path outside",
    "index-missing-tensor": "model.safetensors lacks tensor transformer.h.9.ln_1.weight",
    "index-not-json": "model.safetensors.index.json is not valid JSON",
    "index-no-weight-map": "has no weight_map",
    "config-fifo": "config.json is not a regular file",
    "weights-fifo": "model.safetensors is not a regular file",
    "tokenizer-fifo": "tokenizer.json is not a regular file",
    "tokenizer-config-a-list": "tokenizer_config.json holds a JSON list, not an object",
    "tokenizer-config-not-json": "tokenizer_config.json is not valid JSON",
    "heads-do-not-divide": "config.json n_embd=16 must divide by n_head=3",
    "rope-parameters-list": "config.json rope_scaling must be an object",
}


@pytest.mark.parametrize("problem", MALFORMED)
def test_malformed_folders_are_one_clear_error(tmp_path, problem):
  folder = tiny_gpt2(tmp_path / "hf")
  index = folder / "model.safetensors.index.json"
  weight_map = {"transformer.wte.weight": "model.safetensors"}
  if problem == "index-outside":
    weight_map["transformer.wpe.weight"] = "../elsewhere.safetensors"
  if problem == "index-missing-tensor":
    weight_map["transformer.h.9.ln_1.weight"] = "model.safetensors"
  if problem.startswith("index-"):
    index.write_text({"index-not-json": "{'weight_map'", "index-no-weight-map": "{}"}.get(
        problem, json.dumps({"weight_map": weight_map})))
  if problem.endswith("-fifo"):  # a reader that opened it would wait forever
    path = folder / {"config-fifo": "config.json", "weights-fifo": "model.safetensors",
                     "tokenizer-fifo": "tokenizer.json"}[problem]
    path.unlink()
    os.mkfifo(path)
  if problem.startswith("tokenizer-config-"):
    (folder / "tokenizer_config.json").write_text("[1]" if problem.endswith("list") else "{")
  if problem == "heads-do-not-divide":
    config = dict(json.loads((folder / "config.json").read_text()), n_head=3)
    (folder / "config.json").write_text(json.dumps(config))
  if problem == "rope-parameters-list":
    (folder / "config.json").write_text(json.dumps(dict(
        model_type="llama", vocab_size=64, num_hidden_layers=2, num_attention_heads=2,
        hidden_size=16, intermediate_size=32, max_position_embeddings=32, rope_scaling=[1, 2])))
  with pytest.raises(UserError, match=re.escape(MALFORMED[problem])):
    convert.import_hf(str(folder), str(tmp_path / "w"))
