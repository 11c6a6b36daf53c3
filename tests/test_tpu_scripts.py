"""tpu_scripts/ against a fake gcloud that records its arguments (tests/fake_bin/gcloud)."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile

import pytest

from conftest import REPO
from gptjax import checkpoint

SCRIPTS = REPO / "tpu_scripts"
WHERE = ["--project=my-project", "--zone=us-east5-a"]
SSH = ["compute", "tpus", "tpu-vm", "ssh", "gptjax-v5p-32", *WHERE]
SETTINGS_KEYS = ("PROJECT", "ZONE", "TPU_NAME", "ACCELERATOR", "RUNTIME_VERSION", "CAPACITY",
                 "QUEUED", "BUCKET", "NUM_WORKERS")


@pytest.fixture
def gcloud(tmp_path):
  """Runs a script with the fake gcloud first on PATH; .calls() = the argv it received."""
  fake = tmp_path / "gcloud"
  fake.mkdir()

  class Fake:
    def replies(self, *entries):
      (fake / "replies.json").write_text(json.dumps([list(e) for e in entries]))

    def worker_file(self, worker, path, text):
      target = fake / f"worker-{worker}" / path
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_text(text)

    def calls(self):
      path = fake / "calls.jsonl"
      return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def run(self, script, *args, env=None):
      base = {k: v for k, v in os.environ.items() if k not in SETTINGS_KEYS}
      base.update({"PATH": f"{REPO / 'tests' / 'fake_bin'}:{os.environ['PATH']}",
                   "FAKE_GCLOUD_DIR": str(fake), "POLL_SECONDS": "0", **(env or {})})
      return subprocess.run([str(SCRIPTS / script), *args], capture_output=True, text=True,
                            env=base, cwd=tmp_path, timeout=120)
  return Fake()


def shown(stdout):
  """The commands a script printed ("+ ..."), as lists of words."""
  import shlex
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_prints_the_exact_commands_and_runs_none(gcloud):
  out = gcloud.run("create.sh", "--dry-run")
  assert out.returncode == 0, out.stderr
  assert shown(out.stdout) == [
      ["gcloud", "compute", "tpus", "queued-resources", "create", "gptjax-v5p-32",
       "--node-id=gptjax-v5p-32", *WHERE, "--accelerator-type=v5p-32",
       "--runtime-version=v2-alpha-tpuv5", "--spot"],
      ["gcloud", "compute", "tpus", "tpu-vm", "describe", "gptjax-v5p-32", *WHERE,
       "--format=value(state)"]]
  assert gcloud.calls() == []
  out = gcloud.run("create.sh", "--dry-run", env={"QUEUED": "false", "CAPACITY": "reserved"})
  assert shown(out.stdout)[0] == [
      "gcloud", "compute", "tpus", "tpu-vm", "create", "gptjax-v5p-32", *WHERE,
      "--accelerator-type=v5p-32", "--version=v2-alpha-tpuv5", "--reserved"]
  out = gcloud.run("delete.sh", "--dry-run", env={"QUEUED": "false"})
  assert shown(out.stdout) == [["gcloud", "compute", "tpus", "tpu-vm", "delete",
                                "gptjax-v5p-32", *WHERE, "--quiet"]]
  assert gcloud.calls() == []


def test_create_runs_what_it_prints_and_waits_until_ready(gcloud):
  gcloud.replies(["describe", "CREATING\n", 0], ["describe", "READY\n", 0])
  out = gcloud.run("create.sh")
  assert out.returncode == 0, out.stderr
  assert "CREATING; waiting" in out.stdout and "gptjax-v5p-32 is READY" in out.stdout
  calls = gcloud.calls()
  assert [["gcloud", *c] for c in calls] == shown(out.stdout)
  assert [c[3] for c in calls] == ["create", "describe", "describe"]


def test_run_ships_the_commit_with_its_hash_and_launches_on_every_worker(gcloud, tmp_path):
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                        text=True, check=True).stdout.strip()
  out = gcloud.run("run.sh", "--commit=HEAD", "--name=exp1", "--", "--config=configs/tiny.py",
                   "--config.optim.lr=3e-4")
  assert out.returncode == 0, out.stderr
  with tarfile.open("/tmp/gptjax-HEAD.tar.gz") as tar:
    assert tar.extractfile("COMMIT").read().decode().strip() == head
    assert "gptjax/train.py" in tar.getnames()
  calls = gcloud.calls()
  assert calls[0] == ["compute", "tpus", "tpu-vm", "scp", "/tmp/gptjax-HEAD.tar.gz",
                      "gptjax-v5p-32:gptjax-HEAD.tar.gz", *WHERE, "--worker=all"]
  assert calls[-1] == [*SSH, "--worker=all", "--command=bash ~/gptjax/current/tpu_scripts/worker/"
                       "launch.sh exp1 --config=configs/tiny.py --config.optim.lr=3e-4 "
                       "--workdir=gs://my-bucket/runs/exp1"]
  assert "started exp1 on 4 workers" in out.stdout


@pytest.mark.parametrize("args, says", [
    (["--commit=HEAD", "--", "--config=configs/tiny.py"], "name the run: --name=RUN"),
    (["--commit=HEAD", "--name=x"], "give the trainer a config"),
    (["--name=x", "--", "--config=configs/tiny.py"], "name the code to ship: --commit=REV"),
    (["--commit=no-such-rev", "--name=x", "--", "--config=configs/tiny.py"],
     "no-such-rev is not a commit"),
])
def test_run_refuses_bad_arguments_in_one_line(gcloud, args, says):
  out = gcloud.run("run.sh", *args)
  assert out.returncode == 2
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and says in errors[0], out.stderr
  assert not any(c[3] == "ssh" for c in gcloud.calls())  # nothing launched


def test_bad_settings_are_one_line(gcloud):
  out = gcloud.run("create.sh", env={"CAPACITY": "cheap"})
  assert out.returncode == 2 and "CAPACITY=cheap must be spot, reserved or on-demand" in out.stderr
  out = gcloud.run("logs.sh", "--name=x", env={"ACCELERATOR": "tpu9-8"})
  assert out.returncode == 2 and "set NUM_WORKERS" in out.stderr
  out = gcloud.run("status.sh", "--settings=nowhere.sh")
  assert out.returncode == 2 and "nowhere.sh" in out.stderr


def test_logs_gathers_every_worker_and_shows_the_first_traceback(gcloud, tmp_path):
  shutil.rmtree(REPO / "logs" / "x", ignore_errors=True)
  for worker in range(4):
    gcloud.worker_file(worker, "gptjax-logs/x.log", "step 10: eval/loss 3.2\n")
  gcloud.worker_file(2, "gptjax-logs/x.log", "step 10\nTraceback (most recent call last):\n"
                     '  File "train.py", line 3\nValueError: boom\nafter\n')
  out = gcloud.run("logs.sh", "--name=x")
  assert out.returncode == 1
  assert "first error, in logs/x/worker-2.log (line 2):" in out.stdout
  assert "ValueError: boom" in out.stdout and "after" not in out.stdout
  assert sorted(os.listdir(REPO / "logs" / "x")) == [f"worker-{i}.log" for i in range(4)]
  assert [c[-1] for c in gcloud.calls()] == [f"--worker={i}" for i in range(4)]
  shutil.rmtree(REPO / "logs" / "x")


def preflight_line(host, commit="abc", jax="0.10.2"):
  return f"preflight host={host} commit={commit} jax={jax} jaxlib={jax} libtpu=0.0.30 config=1a2b\n"


def test_preflight_passes_only_when_every_worker_runs_the_same_code(gcloud):
  same = "".join(preflight_line(f"w{i}") for i in range(4))
  gcloud.replies(["preflight.sh", same, 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py:774m")
  assert out.returncode == 0 and "all 4 workers agree" in out.stdout, out.stderr
  assert gcloud.calls()[0][-1].endswith("worker/preflight.sh configs/gpt2.py")
  odd = same.replace(preflight_line("w3"), preflight_line("w3", jax="0.9.0"))
  gcloud.replies(["preflight.sh", odd, 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py")
  assert out.returncode == 1 and "the workers differ" in out.stderr
  gcloud.replies(["preflight.sh", "".join(preflight_line(f"w{i}") for i in range(3)), 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py")
  assert out.returncode == 1 and "3 of 4 workers answered" in out.stderr


def test_watch_recreates_a_preempted_slice_relaunches_a_stopped_run_and_ends_with_it(gcloud):
  gcloud.replies(
      ["describe", "PREEMPTED\n", 0],  # the slice is gone: delete, create, setup, run
      ["describe", "READY\n", 0],      # create.sh's wait
      ["describe", "READY\n", 0], [".exit", "running\n", 0],
      ["describe", "READY\n", 0], [".exit", "75\n", 0],  # stopped on a notice: run again
      ["describe", "READY\n", 0], [".exit", "0\n", 0])  # finished
  out = gcloud.run("watch.sh", "--commit=HEAD", "--name=w", "--", "--config=configs/tiny.py")
  assert out.returncode == 0, out.stdout + out.stderr
  assert "watch: w finished" in out.stdout
  verbs = [" ".join(c[2:4]) if c[2] != "tpu-vm" or c[3] != "ssh" else
           ("launch" if "launch.sh" in c[-1] else "setup" if "setup.sh" in c[-1] else
            "exit?" if ".exit" in c[-1] else "unpack") for c in gcloud.calls()]
  assert verbs == ["tpu-vm describe", "queued-resources delete", "queued-resources create",
                   "tpu-vm describe", "tpu-vm scp", "unpack", "setup", "tpu-vm scp", "unpack",
                   "launch", "tpu-vm describe", "exit?", "tpu-vm describe", "exit?",
                   "tpu-vm scp", "unpack", "launch", "tpu-vm describe", "exit?"]
  assert "relaunch 2 of at most 20" in out.stdout


def test_watch_launches_a_run_not_started_and_stops_on_a_failure_or_after_max_restarts(
    gcloud):
  gcloud.replies(["describe", "READY\n", 0], [".exit", "absent\n", 0],
                 ["describe", "READY\n", 0], [".exit", "1\n", 0])
  out = gcloud.run("watch.sh", "--commit=HEAD", "--name=w", "--", "--config=configs/tiny.py")
  assert out.returncode == 1 and "failed with exit code 1" in out.stderr
  assert "w is not running on gptjax-v5p-32: launching it" in out.stdout
  assert sum("launch.sh" in c[-1] for c in gcloud.calls()) == 1
  gcloud.replies(["describe", "READY\n", 0], [".exit", "75\n", 0])
  out = gcloud.run("watch.sh", "--commit=HEAD", "--name=w", "--max_restarts=0", "--",
                   "--config=configs/tiny.py")
  assert out.returncode == 2 and "more than --max_restarts=0" in out.stderr


def readme_commands():
  """(command, the "+ " lines after it) for each "$ tpu_scripts/..." line of the README."""
  text = (REPO / "README.md").read_text()
  section = text.split("## Run on a TPU pod", 1)[1].split("\n## ", 1)[0]
  pairs, current = [], None
  for line in section.splitlines():
    if line.startswith("$ tpu_scripts/"):
      current = (line[2:], [])
      pairs.append(current)
    elif line.startswith("+ ") and current:
      current[1].append(line)
    elif not line.startswith("+ "):
      current = None if line.startswith("```") else current
  return pairs


def test_readme_tpu_commands_match_what_dry_run_prints(gcloud):
  import shlex
  pairs = readme_commands()
  scripts = {re.match(r"tpu_scripts/(\w+)\.sh", c).group(1) for c, _ in pairs}
  assert scripts >= {"create", "setup", "preflight", "run", "status", "logs", "stop", "delete",
                     "watch"}
  for command, expected in pairs:
    words = shlex.split(command)
    out = gcloud.run(words[0].split("/", 1)[1], "--dry-run", *words[1:])
    assert out.returncode == 0, (command, out.stderr)
    printed = [line for line in out.stdout.splitlines() if line.startswith("+ ")]
    assert printed == expected, command
  assert gcloud.calls() == []


@pytest.mark.slow
def test_worker_scripts_launch_stop_with_a_checkpoint_and_relaunch_to_the_end(tmp_path):
  """tpu_scripts/worker/ on this machine as one host: HOME holds the venv and the code as a
  worker's would, sudo is a pass-through. Stop = SIGTERM: exit 75 with a checkpoint; the
  same launch resumes and finishes (exit 0). (Fast twin: test_multihost's SIGTERM tests.)"""
  import sys
  import time
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  (home / "gptjax").mkdir(parents=True)
  bin_dir.mkdir()
  (bin_dir / "sudo").write_text('#!/bin/bash\nexec "$@"\n')
  (bin_dir / "sudo").chmod(0o755)
  (home / "gptjax-venv").symlink_to(pathlib.Path(sys.executable).parents[1])
  code = home / "gptjax" / "current"
  shutil.copytree(REPO, code, ignore=shutil.ignore_patterns(".venv", "runs", ".git", "logs"))
  (code / "COMMIT").write_text("test\n")
  env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}",
         "GPTJAX_DISTRIBUTED": "0"}
  worker = code / "tpu_scripts" / "worker"
  launch = ["bash", str(worker / "launch.sh"), "t", "--config=configs/tiny.py",
            f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={tmp_path / 'data'}",
            "--config.train.steps=3000", "--config.checkpoint.every=3000"]
  logs = home / "gptjax-logs"
  subprocess.run(launch, env=env, check=True, timeout=60)
  deadline = time.monotonic() + 120
  while "model:" not in (logs / "t.log").read_text() and time.monotonic() < deadline:
    time.sleep(1)
  time.sleep(3)  # a few steps
  stop = subprocess.run(["bash", str(worker / "stop.sh"), "t"], env=env, capture_output=True,
                        text=True, timeout=700)
  assert "t exited with 75" in stop.stdout, stop.stdout + (logs / "t.log").read_text()
  saved = checkpoint.Checkpointer(str(tmp_path / "w")).all_steps()
  assert len(saved) == 1 and 0 < saved[0] < 3000
  launch[-2] = "--config.train.steps=" + str(saved[0] + 5)  # a short rest of the run
  subprocess.run(launch, env=env, check=True, timeout=60)
  while not (logs / "t.exit").exists() and time.monotonic() < deadline + 300:
    time.sleep(1)
  assert (logs / "t.exit").read_text().strip() == "0", (logs / "t.log").read_text()
  assert f"resumed from {tmp_path / 'w' / 'checkpoints'} at step {saved[0]}" in (
      logs / "t.log").read_text()
