"""Bad input to every command: one clear line, a non-zero exit, and nothing lost.

Each case runs the real command line (the installed console script) in a fresh process. What every case must show:
exit code 2; exactly one `error:` line on stderr, naming what to change; every other stderr
line a `warning:`; no traceback anywhere; and every checkpoint file of the run it was pointed
at still there, byte for byte (a failed save may leave its own unfinished folder beside them). The processes run two at a time in one fixture, and each case
is then its own test.
"""

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from typing import Callable

import pytest

from conftest import REPO
from gptjax import train as train_lib
from gptjax.config import sibling_config
from test_hostile_files import tiny_gpt2


@dataclasses.dataclass
class Case:
  name: str
  command: str  # python -m COMMAND
  args: list  # {W}: a copy of a trained tiny run; {T}: the case's own folder; {DATA}: data_dir
  expect: str  # the error line must contain this
  setup: Callable | None = None  # (case folder, W) -> a teardown callable or None
  needs_root: bool = False  # mounts: a read-only or a full file system


TINY = ["--config=configs/tiny.py", "--config.data.data_dir={DATA}"]
TRAIN = ["gptjax.train", *TINY]
SFT = ["--config=configs/sft.py:smoke", "--workdir={T}/sft"]
CHAT_OK = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'


def chat_file(*lines: str):
  return lambda t, w: write(t / "chat.jsonl", ("\n".join(lines) + "\n").encode())


def write(path, data: bytes):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def corpus(data: bytes):
  return lambda t, w: write(t / "corpus.txt", data)


def dangling_link(t, w):
  t.mkdir(parents=True, exist_ok=True)
  os.symlink(t / "gone.txt", t / "corpus.txt")


def a_file(t, w):
  write(t / "file", b"not a folder")


def flip_bytes(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 2, min(len(data) // 2 + 4, len(data))):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def damage(*steps):
  def setup(t, w):
    for step in steps:
      flip_bytes(w / "checkpoints" / str(step) / "config" / "metadata")
  return setup


def read_only(t, w):
  mount = ["mount", "--bind", str(w), str(w)]
  subprocess.run(mount, check=True)
  subprocess.run(["mount", "-o", "remount,bind,ro", str(w)], check=True)
  return lambda: subprocess.run(["umount", str(w)], check=True)


def disk_full(t, w):
  """W moved onto a file system with room for what it holds and no next checkpoint."""
  used_kb = int(subprocess.run(["du", "-sk", str(w)], capture_output=True, text=True,
                               check=True).stdout.split()[0])
  held = t / "held"
  shutil.move(str(w), held)
  w.mkdir()
  subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={used_kb + 200}k", "tmpfs", str(w)],
                 check=True)
  unmount = lambda: subprocess.run(["umount", str(w)], check=True)  # noqa: E731
  try:
    shutil.copytree(held, w, dirs_exist_ok=True)
  except BaseException:
    unmount()
    raise
  return unmount


CONVERT = ("gptjax.interop.convert", ["--from_hf={T}/hf", "--workdir={T}/imported"])


def hf_config(*drop, **changes):
  """The tiny GPT-2 folder with fields of its config.json changed or dropped."""
  def setup(t, w):
    path = tiny_gpt2(t / "hf", **changes) / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in config.items() if k not in drop}))
  return setup


def hf_file(name: str, edit: Callable[[bytes], bytes]):
  """The tiny GPT-2 folder with file `name` rewritten as edit(its bytes)."""
  def setup(t, w):
    path = tiny_gpt2(t / "hf") / name
    path.write_bytes(edit(path.read_bytes()))
  return setup


def safetensors_header(edit: Callable[[dict], dict]):
  """model.safetensors with its JSON header rewritten (the data left as it was)."""
  def rewrite(data: bytes) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(edit(json.loads(data[8:8 + n]))).encode()
    return len(header).to_bytes(8, "little") + header + data[8 + n:]
  return hf_file("model.safetensors", rewrite)


def past_the_end(header: dict) -> dict:
  header["transformer.wte.weight"]["data_offsets"][1] += 10**6
  return header


CASES = [
    # --config and flags, the same code in every command that takes them
    Case("misspelt-key", "gptjax.train", [*TINY, "--config.train.stepz=3"],
         "did you mean --config.train.steps?"),
    Case("misspelt-group", "gptjax.train", [*TINY, "--config.trainz.steps=3"],
         "did you mean --config.train.steps?"),
    Case("not-an-integer", "gptjax.train", [*TINY, "--config.train.steps=abc"],
         "--config.train.steps=abc"),
    Case("not-a-boolean", "gptjax.train", [*TINY, "--config.train.progress=maybe"],
         "--config.train.progress=maybe"),
    Case("value-for-a-group", "gptjax.train", [*TINY, "--config.train=3"], "--config.train=3"),
    Case("unknown-flag", "gptjax.train", [*TINY, "--confg.train.steps=3"], "confg.train.steps"),
    Case("missing-config-file", "gptjax.train", ["--config=configs/nope.py"],
         "--config=configs/nope.py: cannot load the config file"),
    Case("unknown-config-arg", "gptjax.train", ["--config=configs/shakespeare_char.py:zzz"],
         "takes 'cpu' or nothing, got 'zzz'"),
    Case("unknown-choice", "gptjax.train", [*TINY, "--config.model.dtype=float33"],
         "model.dtype must be one of"),
    Case("zero-steps", "gptjax.train", [*TINY, "--config.train.steps=0"],
         "train.steps must be positive"),
    # meshes
    Case("mesh-larger-than-the-host", "gptjax.train", [*TINY, "--config.mesh.data=3"],
         "uses 3 devices but 8 are present"),
    Case("mesh-two-wildcards", "gptjax.train",
         [*TINY, "--config.mesh.data=-1", "--config.mesh.fsdp=-1"], "at most one of mesh"),
    Case("mesh-splits-no-heads", "gptjax.train", [*TINY, "--config.mesh.tensor=8"],
         "model.num_heads=4 and its key/value heads (4) must divide by mesh.tensor=8"),
    # corpora
    Case("missing-corpus", "gptjax.train", [*TINY, "--config.data.path={T}/missing.txt"],
         "does not exist"),
    Case("empty-corpus", "gptjax.train", [*TINY, "--config.data.path={T}/corpus.txt"],
         "no text", corpus(b" \n\t\n")),
    Case("binary-corpus", "gptjax.train", [*TINY, "--config.data.path={T}/corpus.txt"],
         "not UTF-8", corpus(bytes(range(256)) * 64)),
    Case("unreadable-corpus", "gptjax.train", [*TINY, "--config.data.path={T}/corpus.txt"],
         "does not exist", dangling_link),
    # workdirs and checkpoints
    Case("workdir-is-a-file", "gptjax.train", [*TINY, "--workdir={T}/file"],
         "is a file, not a folder", a_file),
    Case("read-only-workdir", "gptjax.train", [*TINY, "--workdir={W}", "--config.train.steps=30"],
         "read-only", read_only, needs_root=True),
    Case("disk-full-save", "gptjax.train", [*TINY, "--workdir={W}", "--config.train.steps=30"],
         "could not write checkpoint step 30", disk_full, needs_root=True),
    Case("checkpoint-of-another-model", "gptjax.train",
         [*TINY, "--workdir={W}", "--config.model.embed_dim=64"],
         "model.embed_dim: 32 saved vs 64 now"),
    Case("checkpoint-of-another-context", "gptjax.train",
         [*TINY, "--workdir={W}", "--config.data.seq_len=16"],
         "model.max_len (from data.seq_len): 32 saved vs 16 now"),
    Case("every-checkpoint-damaged", "gptjax.train", [*TINY, "--workdir={W}"],
         "every checkpoint", damage(10, 20)),
    # gptjax-eval
    Case("eval-no-checkpoint", "gptjax.evaluate", ["--workdir={T}/empty"], "no checkpoint under"),
    Case("eval-unknown-step", "gptjax.evaluate", ["--workdir={W}", "--step=999"],
         "--step=999 is not among the checkpoints [10, 20]"),
    Case("eval-unknown-split", "gptjax.evaluate", ["--workdir={W}", "--split=test"],
         "--split='test'"),
    Case("eval-unknown-flag", "gptjax.evaluate", ["--workdir={W}", "--stepp=3"], "stepp"),
    Case("eval-damaged-step", "gptjax.evaluate", ["--workdir={W}", "--step=20"],
         "checkpoint step 20 is damaged", damage(20)),
    # gptjax-sample
    Case("sample-negative-temperature", "gptjax.generate", ["--workdir={W}", "--temperature=-1"],
         "--temperature >= 0"),
    Case("sample-top-p-zero", "gptjax.generate", ["--workdir={W}", "--top_p=0"], "--top_p"),
    Case("sample-no-tokens", "gptjax.generate", ["--workdir={W}", "--max_new_tokens=0"],
         "--max_new_tokens must be positive"),
    Case("sample-no-samples", "gptjax.generate", ["--workdir={W}", "--num_samples=0"],
         "--num_samples must be positive"),
    Case("sample-prompt-longer-than-the-context", "gptjax.generate",
         ["--workdir={W}", "--prompt=" + "x" * 40], "shorten --prompt to at most 31 tokens"),
    Case("sample-temperature-not-a-number", "gptjax.generate",
         ["--workdir={W}", "--temperature=hot"], "--temperature=hot"),
    # gptjax-prepare
    Case("prepare-missing-corpus", "gptjax.data.prepare",
         [*TINY, "--config.data.path={T}/missing.txt"], "--config.data.path="),
    Case("prepare-misspelt-key", "gptjax.data.prepare", [*TINY, "--config.data.pth=x"],
         "did you mean --config.data.path?"),
    # chat fine-tuning
    Case("sft-malformed-record", "gptjax.train", [*SFT, "--config.data.path={T}/chat.jsonl"],
         "chat.jsonl:3: not valid JSON", chat_file(CHAT_OK, CHAT_OK, '{"messages": [')),
    Case("sft-no-assistant-turn", "gptjax.train", [*SFT, "--config.data.path={T}/chat.jsonl"],
         "chat.jsonl:2: no assistant message",
         chat_file(CHAT_OK, '{"messages": [{"role": "user", "content": "hi"}]}')),
    Case("init-from-another-architecture", "gptjax.train",
         [*TINY, "--workdir={T}/ft", "--config.init.workdir={W}", "--config.model.num_layers=3"],
         "16 parameters of this model are not in it: block_2/attn/bk, block_2/attn/bo"),
    Case("init-without-checkpoint", "gptjax.train",
         [*TINY, "--workdir={T}/ft", "--config.init.workdir={T}/none"],
         "/none holds no checkpoint"),
    Case("lora-targets-match-nothing", "gptjax.train",
         [*TINY, "--workdir={T}/ft", "--config.lora.rank=4", "--config.lora.targets=wz"],
         "--config.lora.targets='wz' matches no weight"),
    Case("trainable-matches-nothing", "gptjax.train",
         [*TINY, "--workdir={T}/ft", "--config.train.trainable=^nothing$"],
         "leave no parameter to train"),
    # learning from feedback
    Case("dpo-without-reference", "gptjax.train",
         ["--config=configs/dpo.py:smoke", "--workdir={T}/dpo", "--config.lora.rank=0"],
         "--config.init.workdir (the DPO reference policy) is not set"),
    Case("grpo-two-reward-sources", "gptjax.train",
         ["--config=configs/grpo.py:smoke", "--workdir={T}/grpo",
          "--config.grpo.reward_workdir={W}"],
         "set exactly one of grpo.reward_workdir (a reward model) and grpo.reward_fn"),
    Case("grpo-reference-without-chat-tokens", "gptjax.train",
         ["--config=configs/grpo.py:smoke", "--workdir={T}/grpo", "--config.init.workdir={W}",
          "--config.grpo.kl_coef=0.04", "--config.data.path={T}/chat.jsonl"],
         "has no chat tokens: it is a pretrained model; point it at a chat (SFT) run",
         chat_file(*['{"prompt": "hi"}'] * 4)),
    Case("lora-merge-without-adapters", "gptjax.lora_cli", ["--workdir={W}", "--out={T}/m"],
         "has no LoRA adapters"),
    Case("sample-chat-without-chat-tokens", "gptjax.generate", ["--workdir={W}", "--user=hi"],
         "no chat tokens"),
    # gptjax-plan
    Case("plan-without-config", "gptjax.plan", [], "pass --config"),
    Case("plan-unknown-topology", "gptjax.plan", ["--config=configs/gpt2.py:124m",
                                                  "--topology=h999"], "h999"),
    Case("plan-char-vocabulary", "gptjax.plan", ["--config=configs/shakespeare_char.py:cpu"],
         "--config.model.vocab_size"),
    Case("plan-misspelt-key", "gptjax.plan", ["--config=configs/gpt2.py:124m",
                                              "--config.model.num_layerz=2"],
         "did you mean --config.model.num_layers?"),
    # gptjax-convert on a downloaded folder (test_hostile_files: configs larger than it)
    Case("convert-header-length-huge", *CONVERT,
         "header length 4,611,686,018,427,387,904 exceeds the file's",
         hf_file("model.safetensors", lambda b: (2**62).to_bytes(8, "little") + b[8:])),
    Case("convert-header-longer-than-the-file", *CONVERT, "exceeds the file's",
         hf_file("model.safetensors", lambda b: len(b).to_bytes(8, "little") + b[8:])),
    Case("convert-header-not-json", *CONVERT,
         "model.safetensors is not a readable safetensors file (invalid JSON in header",
         hf_file("model.safetensors", lambda b: b[:8] + b"!" + b[9:])),
    Case("convert-offsets-past-the-end", *CONVERT,
         "model.safetensors is not a readable safetensors file (invalid shape, data type, "
         "or offset", safetensors_header(past_the_end)),
    Case("convert-pickle-renamed", *CONVERT, "model.safetensors holds a pickle",
         hf_file("model.safetensors", lambda b: pickle.dumps({"wte": [0.5] * 1000}))),
    Case("convert-config-not-json", *CONVERT, "config.json is not valid JSON",
         hf_file("config.json", lambda b: b"{model_type: gpt2")),
    Case("convert-config-a-list", *CONVERT, "config.json holds a JSON list, not an object",
         hf_file("config.json", lambda b: b"[]")),
    Case("convert-config-lacks-n_layer", *CONVERT, "config.json lacks n_layer",
         hf_config("n_layer")),
    Case("convert-n_layer-a-string", *CONVERT,
         "config.json n_layer='2': must be a positive integer", hf_config(n_layer="2")),
    Case("convert-n_layer-a-fraction", *CONVERT,
         "config.json n_layer=2.5: must be a positive integer", hf_config(n_layer=2.5)),
    Case("convert-no-heads", *CONVERT, "config.json n_head=0: must be a positive integer",
         hf_config(n_head=0)),
    Case("convert-negative-width", *CONVERT,
         "config.json n_embd=-16: must be a positive integer", hf_config(n_embd=-16)),
    Case("convert-vocabulary-1e10", *CONVERT,
         "config.json vocab_size=10000000000.0: must be a positive integer",
         hf_config(vocab_size=1e10)),
]


SCRIPTS = {"gptjax.train": "gptjax-train", "gptjax.evaluate": "gptjax-eval",
           "gptjax.generate": "gptjax-sample", "gptjax.data.prepare": "gptjax-prepare",
           "gptjax.plan": "gptjax-plan", "gptjax.lora_cli": "gptjax-lora",
           "gptjax.interop.convert": "gptjax-convert"}


def command_line(module: str) -> list[str]:
  """The console script a user runs (installed beside this Python), else python -m."""
  script = pathlib.Path(sys.executable).parent / SCRIPTS[module]
  return [str(script)] if script.exists() else [sys.executable, "-m", module]


def can_mount() -> bool:
  if os.geteuid() != 0 or not shutil.which("mount"):
    return False
  probe = pathlib.Path("/tmp") / f"gptjax-mount-probe-{os.getpid()}"
  probe.mkdir(exist_ok=True)
  ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                      capture_output=True).returncode == 0
  if ok:
    subprocess.run(["umount", str(probe)], check=True)
  probe.rmdir()
  return ok


def checkpoint_bytes(workdir: pathlib.Path) -> dict:
  root = workdir / "checkpoints"
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_input")
  data = root / "data"
  trained = root / "trained"
  config = sibling_config(str(REPO / "configs" / "tiny.py"), "tiny.py")
  config.data.data_dir = str(data)
  train_lib.train(config, str(trained))  # checkpoints at 10 and 20
  mounts = can_mount()

  def run(case: Case):
    t = root / case.name
    t.mkdir()
    w = t / "W"
    shutil.copytree(trained, w)
    if case.needs_root and not mounts:
      return None
    teardown = case.setup(t, w) if case.setup else None
    before = checkpoint_bytes(w)
    args = [a.replace("{W}", str(w)).replace("{T}", str(t)).replace("{DATA}", str(data))
            for a in case.args]
    try:
      out = subprocess.run([*command_line(case.command), *args], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
      after = checkpoint_bytes(w)
    finally:
      if teardown:
        teardown()
    return out, before, after

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return dict(zip([c.name for c in CASES], pool.map(run, CASES)))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_a_nonzero_exit_and_loses_nothing(outcomes, case):
  outcome = outcomes[case.name]
  if outcome is None:
    pytest.skip("needs root and mount (a read-only or a full file system)")
  out, before, after = outcome
  shown = f"exit {out.returncode}\nstderr:\n{out.stderr[-3000:]}\nstdout:\n{out.stdout[-1000:]}"
  assert out.returncode == 2, shown
  assert "Traceback" not in out.stderr + out.stdout, shown
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1 and case.expect in errors[0], shown
  assert all(line.startswith(("error: ", "warning: ")) for line in lines), shown
  assert {k: after.get(k) for k in before} == before, "a checkpoint was lost or changed"


def test_the_suite_covers_every_command_and_enough_cases():
  assert {c.command for c in CASES} == set(SCRIPTS)
  assert len(CASES) >= 25
