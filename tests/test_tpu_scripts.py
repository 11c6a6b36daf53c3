"""tpu_scripts/ against a fake gcloud (tests/fake_bin/gcloud): it records its arguments, plays
back states, exit codes, errors and hangs, keeps a local folder standing for the bucket, and can
run the ssh commands on fake workers (folders standing for each host's home)."""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import uuid

import pytest

from conftest import REPO
from gptjax import checkpoint

SCRIPTS = REPO / "tpu_scripts"
WHERE = ["--project=my-project", "--zone=us-east5-a"]
SSH_FLAGS = ["--quiet", "--strict-host-key-checking=no", "--ssh-flag=-oConnectTimeout=20",
             "--ssh-flag=-oServerAliveInterval=30", "--ssh-flag=-oServerAliveCountMax=4"]
SSH = ["compute", "tpus", "tpu-vm", "ssh", "gptjax-v5p-32", *WHERE]
SETTINGS_KEYS = ("PROJECT", "ZONE", "TPU_NAME", "ACCELERATOR", "RUNTIME_VERSION", "CAPACITY",
                 "QUEUED", "BUCKET", "NUM_WORKERS", "INTERNAL_IP", "HOST_KEY_CHECKING",
                 "GCLOUD_TIMEOUT", "SETUP_TIMEOUT", "STOP_TIMEOUT", "SSH_CONNECT_TIMEOUT",
                 "RETRIES", "RETRY_SECONDS", "LIBTPU_INIT_ARGS")
NO_OBJECT = "ERROR: (gcloud.storage.cat) The following URLs matched no objects or files:\n"
NOT_FOUND = ("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource "
             "'projects/my-project/locations/us-east5-a/nodes/gptjax-v5p-32' was not found\n")


class Fake:
  """Runs a script with the fake gcloud first on PATH; .calls() = the argv it received."""

  def __init__(self, root, scripts=SCRIPTS):
    self.root, self.scripts = root, scripts
    root.mkdir(parents=True, exist_ok=True)

  def replies(self, *entries):
    """[substring, stdout, exit code, stderr, seconds to hang first]: each used once."""
    (self.root / "replies.json").write_text(json.dumps([list(e) for e in entries]))

  def unused_replies(self):
    path = self.root / "replies.json"
    return json.loads(path.read_text()) if path.exists() else []

  def worker_file(self, worker, path, text):
    target = self.root / f"worker-{worker}" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)

  def bucket(self, path=""):
    """The local folder standing for gs://: bucket("my-bucket/runs/x") is gs://my-bucket/runs/x."""
    return self.root / "bucket" / path

  def calls(self):
    path = self.root / "calls.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

  def run(self, script, *args, env=None, timeout=60):
    base = {k: v for k, v in os.environ.items() if k not in SETTINGS_KEYS}
    base.update({"PATH": f"{REPO / 'tests' / 'fake_bin'}:{os.environ['PATH']}",
                 "FAKE_GCLOUD_DIR": str(self.root), "POLL_SECONDS": "0", "RETRY_SECONDS": "0",
                 **(env or {})})
    return subprocess.run([str(self.scripts / script), *args], capture_output=True, text=True,
                          env=base, cwd=self.root.parent, timeout=timeout)


@pytest.fixture
def gcloud(tmp_path):
  return Fake(tmp_path / "gcloud")


def shown(stdout):
  """The commands a script printed ("+ ..."), as lists of words."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def verb(call):
  """A call in a word or two: "tpu-vm describe", "ssh launch.sh", "storage cat", ..."""
  if call[0] == "storage":
    return f"storage {call[1]}"
  if call[3] == "ssh":
    command = call[-1]
    for word in ("launch.sh", "setup.sh", "preflight.sh", "stop.sh", "status.sh", "run-state"):
      if word in command:
        return f"ssh {word}"
    return "ssh unpack" if "tar -xz" in command else "ssh"
  if call[3] == "describe" and "networkEndpoints" in call[-1]:
    return "tpu-vm endpoints"
  return " ".join(call[2:4])


# --- what the scripts print and run ---------------------------------------------------------

def test_dry_run_prints_the_exact_commands_and_runs_none(gcloud):
  out = gcloud.run("create.sh", "--dry-run")
  assert out.returncode == 0, out.stderr
  assert shown(out.stdout) == [
      ["gcloud", "compute", "tpus", "queued-resources", "describe", "gptjax-v5p-32", *WHERE,
       "--format=value(state.state)"],
      ["gcloud", "compute", "tpus", "queued-resources", "create", "gptjax-v5p-32",
       "--node-id=gptjax-v5p-32", *WHERE, "--accelerator-type=v5p-32",
       "--runtime-version=v2-alpha-tpuv5", "--spot"],
      ["gcloud", "compute", "tpus", "queued-resources", "describe", "gptjax-v5p-32", *WHERE,
       "--format=value(state.state)"],
      ["gcloud", "compute", "tpus", "tpu-vm", "describe", "gptjax-v5p-32", *WHERE,
       "--format=value(state)"]]
  assert gcloud.calls() == []
  out = gcloud.run("create.sh", "--dry-run", env={"QUEUED": "false", "CAPACITY": "reserved"})
  assert shown(out.stdout)[1] == [
      "gcloud", "compute", "tpus", "tpu-vm", "create", "gptjax-v5p-32", *WHERE,
      "--accelerator-type=v5p-32", "--version=v2-alpha-tpuv5", "--reserved"]
  out = gcloud.run("delete.sh", "--dry-run", env={"QUEUED": "false"})
  assert shown(out.stdout) == [["gcloud", "compute", "tpus", "tpu-vm", "delete",
                                "gptjax-v5p-32", *WHERE, "--quiet"]]
  assert gcloud.calls() == []


@pytest.mark.parametrize("accelerator, image", [
    ("v6e-16", "v2-alpha-tpuv6e"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5e-8", "v2-alpha-tpuv5-lite"), ("v5p-128", "v2-alpha-tpuv5"),
    ("v4-32", "tpu-ubuntu2204-base"), ("v3-8", "tpu-ubuntu2204-base")])
def test_the_runtime_version_follows_the_accelerator_unless_set(gcloud, accelerator, image):
  out = gcloud.run("create.sh", "--dry-run", env={"ACCELERATOR": accelerator})
  assert f"--runtime-version={image}" in shown(out.stdout)[1], out.stdout + out.stderr
  out = gcloud.run("create.sh", "--dry-run",
                   env={"ACCELERATOR": accelerator, "RUNTIME_VERSION": "my-image"})
  assert "--runtime-version=my-image" in shown(out.stdout)[1]


def test_create_runs_what_it_prints_and_waits_until_ready(gcloud):
  gcloud.replies(["value(state.state)", "WAITING_FOR_RESOURCES\n", 0],  # queued already?
                 ["value(state.state)", "PROVISIONING\n", 0],
                 ["value(state.state)", "ACTIVE\n", 0], ["value(state)", "CREATING\n", 0],
                 ["value(state.state)", "ACTIVE\n", 0], ["value(state)", "READY\n", 0])
  # the first describe finds nothing: NOT_FOUND (the fake's answer without a reply)
  (gcloud.root / "replies.json").write_text(json.dumps(
      [["value(state.state)", "", 1, NOT_FOUND.replace("tpu-vm", "queued-resources"), 0]]
      + gcloud.unused_replies()))
  out = gcloud.run("create.sh")
  assert out.returncode == 0, out.stderr
  assert "queued resource WAITING_FOR_RESOURCES; waiting" in out.stdout
  assert "CREATING; waiting" in out.stdout and "gptjax-v5p-32 is READY" in out.stdout
  calls = gcloud.calls()
  assert [["gcloud", *c] for c in calls] == shown(out.stdout)
  assert [verb(c) for c in calls] == [
      "queued-resources describe", "queued-resources create", "queued-resources describe",
      "queued-resources describe", "queued-resources describe", "tpu-vm describe",
      "queued-resources describe", "tpu-vm describe"]


@pytest.mark.parametrize("state, verbs", [
    ("ACTIVE", []),                                        # reused as it is
    ("WAITING_FOR_RESOURCES", []),                         # still queued: waited for
    ("FAILED", ["queued-resources delete", "queued-resources create"]),
    ("SUSPENDED", ["queued-resources delete", "queued-resources create"]),
])
def test_create_reuses_a_live_queued_resource_and_replaces_a_failed_or_suspended_one(
    gcloud, state, verbs):
  gone = ["value(state.state)", "", 1, NOT_FOUND.replace("tpu-vm", "queued-resources")]
  gcloud.replies(["value(state.state)", f"{state}\n", 0], *([gone] if verbs else []),
                 ["value(state.state)", "ACTIVE\n", 0], ["value(state)", "READY\n", 0])
  out = gcloud.run("create.sh")
  assert out.returncode == 0, out.stdout + out.stderr
  made = [verb(c) for c in gcloud.calls() if "describe" not in c]
  assert made == verbs
  assert "gptjax-v5p-32 is READY" in out.stdout


@pytest.mark.parametrize("state", ["FAILED", "SUSPENDED"])
def test_wait_ready_stops_in_one_line_when_the_queued_resource_will_never_be_ready(
    gcloud, state):
  gcloud.replies(["value(state.state)", "WAITING_FOR_RESOURCES\n", 0],
                 ["value(state.state)", f"{state}\n", 0],
                 ["failedData", "Invalid runtime version v2-alpha-tpuv9\n", 0])
  out = gcloud.run("wait_ready.sh", timeout=20)  # (before: "not created yet; waiting" forever)
  assert out.returncode == 2, out.stdout
  errors = out.stderr.strip().splitlines()
  assert len(errors) == 1 and errors[0].startswith("error: queued resource gptjax-v5p-32")
  if state == "FAILED":
    assert errors[0].endswith("FAILED: Invalid runtime version v2-alpha-tpuv9")
  assert not any(verb(c) == "tpu-vm describe" for c in gcloud.calls())


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
                      "gptjax-v5p-32:gptjax-HEAD.tar.gz", *WHERE, "--worker=all",
                      *[f.replace("ssh-flag", "scp-flag") for f in SSH_FLAGS]]
  assert calls[-2] == ["storage", "rm", "gs://my-bucket/runs/exp1/stop_requested"]
  assert calls[-1] == [*SSH, "--worker=all", *SSH_FLAGS, "--command=ACCELERATOR=v5p-32 bash "
                       "~/gptjax/current/tpu_scripts/worker/launch.sh exp1 "
                       "--config=configs/tiny.py --config.optim.lr=3e-4 "
                       "--workdir=gs://my-bucket/runs/exp1"]
  assert "started exp1 on every worker" in out.stdout


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
  assert not any(c[3] == "ssh" for c in gcloud.calls() if c[0] != "storage")  # nothing launched


def test_bad_settings_are_one_line(gcloud):
  out = gcloud.run("create.sh", env={"CAPACITY": "cheap"})
  assert out.returncode == 2 and "CAPACITY=cheap must be spot, reserved or on-demand" in out.stderr
  out = gcloud.run("logs.sh", "--name=x", env={"ACCELERATOR": "tpu9-8"})
  assert out.returncode == 2 and "set RUNTIME_VERSION and NUM_WORKERS" in out.stderr
  out = gcloud.run("status.sh", "--settings=nowhere.sh")
  assert out.returncode == 2 and "nowhere.sh" in out.stderr
  assert gcloud.calls() == []


def test_ssh_and_scp_flags_internal_ip_and_host_key_checking(gcloud):
  out = gcloud.run("setup.sh", "--commit=HEAD", "--dry-run",
                   env={"INTERNAL_IP": "true", "HOST_KEY_CHECKING": "yes",
                        "SSH_CONNECT_TIMEOUT": "7"})
  scp, unpack, setup = shown(out.stdout)[1:]
  for command in (scp, unpack, setup):
    assert "--internal-ip" in command and "--strict-host-key-checking=yes" in command
    assert "--quiet" in command  # no prompt can hang a call run under `timeout`
  assert "--scp-flag=-oConnectTimeout=7" in scp and "--scp-flag=-oServerAliveInterval=30" in scp
  assert "--ssh-flag=-oConnectTimeout=7" in setup
  assert "--ssh-flag=-oServerAliveCountMax=4" in setup


# --- timeouts and retries -------------------------------------------------------------------

def test_a_fresh_vm_that_refuses_ssh_twice_is_tried_again(gcloud):
  refused = "ssh: connect to host 10.0.0.2 port 22: Connection refused\n"
  gcloud.replies(["tpu-vm scp", "", 255, refused], ["tpu-vm scp", "", 255, refused])
  out = gcloud.run("setup.sh", "--commit=HEAD")
  assert out.returncode == 0, out.stderr
  assert [verb(c) for c in gcloud.calls()] == [
      "tpu-vm scp", "tpu-vm scp", "tpu-vm scp", "ssh unpack", "ssh setup.sh"]
  assert "retry: exit 255; try 2 of 6" in out.stderr and "try 3 of 6" in out.stderr
  gcloud.replies(*[["ssh", "", 255, refused]] * 3)
  out = gcloud.run("stop.sh", "--name=x", env={"RETRIES": "3"})
  assert out.returncode == 255
  assert "error: gcloud compute tpus tpu-vm ssh" in out.stderr and "failed 3 times" in out.stderr


def test_a_hung_ssh_is_cut_by_its_timeout_and_tried_again(gcloud):
  gcloud.replies(["launch.sh", "", 0, "", 60])  # the first launch hangs for a minute
  start = time.monotonic()
  out = gcloud.run("run.sh", "--commit=HEAD", "--name=h", "--", "--config=configs/tiny.py",
                   env={"GCLOUD_TIMEOUT": "2"})
  assert out.returncode == 0, out.stderr
  assert time.monotonic() - start < 30
  assert "retry: timed out after 2s; try 2 of 6" in out.stderr
  assert [verb(c) for c in gcloud.calls()].count("ssh launch.sh") == 2


# --- the watcher ----------------------------------------------------------------------------

def poll(qr="ACTIVE", node="READY", states=None, finished=None, stop=None):
  """The replies of one watch.sh poll: the bucket's finished.json and stop_requested (absent
  unless given), the queued resource's and the node's state, then each worker's run-state."""
  replies = [["storage cat gs://my-bucket/runs/w/finished.json", finished or "",
              0 if finished else 1, "" if finished else NO_OBJECT]]
  if finished:
    return replies
  replies.append(["storage cat gs://my-bucket/runs/w/stop_requested", stop or "",
                  0 if stop else 1, "" if stop else NO_OBJECT])
  if stop:
    return replies
  replies.append(["value(state.state)", f"{qr}\n", 0])
  if qr != "ACTIVE":
    return replies
  replies.append(["--format=value(state)", f"{node}\n", 0] if node != "NOT_FOUND" else
                 ["--format=value(state)", "", 1, NOT_FOUND])
  if node == "READY":
    replies.append(["run-state", "".join(f"run-state t1v-n-w-{i} {s}\n"
                                         for i, s in enumerate(states)), 0])
  return replies


def checkpoints(*steps):
  listing = "".join(f"gs://my-bucket/runs/w/checkpoints/{s}/\n" for s in steps)
  return ["storage ls gs://my-bucket/runs/w/checkpoints/", listing, 0]


WATCH = ("--commit=HEAD", "--name=w", "--", "--config=configs/tiny.py")


def test_watch_recreates_a_preempted_slice_relaunches_a_stopped_run_and_ends_when_finished(
    gcloud):
  gcloud.replies(
      *poll(qr="SUSPENDED"),  # spot capacity reclaimed: delete, create, setup, run
      ["value(state.state)", "", 1, NOT_FOUND.replace("tpu-vm", "queued-resources")],
      ["value(state.state)", "ACTIVE\n", 0], ["--format=value(state)", "READY\n", 0],
      *poll(states=["running"] * 4),
      *poll(states=["75"] * 4),  # stopped on a maintenance notice: run again
      *poll(finished='{"step": 3000}\n'))
  out = gcloud.run("watch.sh", *WATCH)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'watch: w finished: gs://my-bucket/runs/w/finished.json says {"step": 3000}' in out.stdout
  assert [verb(c) for c in gcloud.calls()] == [
      "storage rm", "storage ls",  # an earlier stop request cleared; the newest checkpoint
      "storage cat", "storage cat", "queued-resources describe",
      "storage ls", "queued-resources delete", "queued-resources describe",
      "queued-resources create", "queued-resources describe", "tpu-vm describe",
      "tpu-vm scp", "ssh unpack", "ssh setup.sh", "tpu-vm scp", "ssh unpack", "storage cat",
      "ssh launch.sh",
      "storage cat", "storage cat", "queued-resources describe", "tpu-vm describe",
      "ssh run-state", "tpu-vm endpoints",
      "storage cat", "storage cat", "queued-resources describe", "tpu-vm describe",
      "ssh run-state", "storage ls", "tpu-vm scp", "ssh unpack", "storage cat", "ssh launch.sh",
      "storage cat"]
  assert "queued resource gptjax-v5p-32 is SUSPENDED; relaunch 1 of at most 5" in out.stdout
  assert "w ended on every worker (exit codes: 75 x4); relaunch 2 of at most 5" in out.stdout
  assert gcloud.unused_replies() == []


@pytest.mark.parametrize("qr, node", [("FAILED", None), ("SUSPENDED", None),
                                      ("NOT_FOUND", None), ("ACTIVE", "PREEMPTED"),
                                      ("ACTIVE", "TERMINATED"), ("ACTIVE", "NOT_FOUND")])
def test_watch_recreates_only_a_slice_that_is_gone(gcloud, qr, node):
  first = poll(qr=qr, node=node or "READY")
  if qr == "NOT_FOUND":
    first[-1] = ["value(state.state)", "", 1, NOT_FOUND.replace("tpu-vm", "queued-resources")]
  gcloud.replies(*first, *poll(finished="{}"))
  out = gcloud.run("watch.sh", *WATCH, env={"RETRIES": "1"})
  assert out.returncode == 0, out.stdout + out.stderr
  assert "queued-resources delete" in [verb(c) for c in gcloud.calls()]
  assert "relaunch 1 of at most 5" in out.stdout


@pytest.mark.parametrize("failure", [
    ["value(state.state)", "", 1, "ERROR: (gcloud.compute.tpus.queued-resources.describe) "
     "There was a problem refreshing your current auth tokens\n"],
    ["--format=value(state)", "", 1, "ERROR: (gcloud.compute.tpus.tpu-vm.describe) "
     "RESOURCE_EXHAUSTED: Quota exceeded for quota metric 'Read requests'\n"],
    ["--format=value(state)", "", 0, "", 30],  # hangs: cut by GCLOUD_TIMEOUT
    ["--format=value(state)", "REPAIRING\n", 0],  # any state but a gone one: wait
    ["--format=value(state)", "SOMETHING_NEW\n", 0],
    ["run-state", "", 255, "ssh: connect to host 10.0.0.3 port 22: Connection timed out\n"],
])
def test_watch_never_deletes_a_slice_it_could_not_describe(gcloud, failure):
  first = poll(states=["running"] * 4)
  index = next(i for i, r in enumerate(first) if r[0] == failure[0])
  first = first[:index] + [failure]
  gcloud.replies(*first, *poll(states=["running"] * 4), *poll(finished="{}"))
  out = gcloud.run("watch.sh", *WATCH, env={"GCLOUD_TIMEOUT": "2"})
  assert out.returncode == 0, out.stdout + out.stderr
  verbs = [verb(c) for c in gcloud.calls()]
  assert not any("delete" in v or "create" in v or "launch" in v for v in verbs), verbs
  assert re.search(r"watch: .*(waiting|asking again)", out.stdout), out.stdout


def test_watch_relaunches_when_one_host_dies_and_the_others_exit_through_the_heartbeat(gcloud):
  gcloud.replies(
      checkpoints(100),
      *poll(states=["running"] * 4),
      *poll(states=["running", "running", "137", "running"]),  # one host killed (OOM)
      *poll(states=["1", "1", "137", "1"]),  # the others stop on the heartbeat
      checkpoints(200),  # the run had progressed since the watch began: count from 1
      *poll(states=["running"] * 4), *poll(states=["1", "1", "137", "1"]),
      checkpoints(200),  # no new checkpoint since the last relaunch: 2
      *poll(states=["1", "1", "137", "1"]),
      checkpoints(200))  # 3 > --max_restarts=2: give up
  out = gcloud.run("watch.sh", "--max_restarts=2", *WATCH)
  assert out.returncode == 1, out.stdout + out.stderr
  assert ("w exited on 1 workers (codes: 137 x1), still running on 3: waiting for those to end"
          in out.stdout)
  assert ("w ended on every worker (exit codes: 1 x3, 137 x1); relaunch 1 of at most 2 "
          "without a new checkpoint (newest: step 200)") in out.stdout
  assert "relaunch 2 of at most 2 without a new checkpoint (newest: step 200)" in out.stdout
  assert "no new checkpoint (newest: step 200) in 2 relaunches (--max_restarts=2)" in out.stderr
  assert [verb(c) for c in gcloud.calls()].count("ssh launch.sh") == 2


def test_watch_relaunches_workers_left_running_after_the_others_ended(gcloud):
  """The heartbeat should end the others within its timeout; three polls later they are
  taken as hung and relaunched (worker/launch.sh stops what is left of the run first)."""
  stuck = ["running", "running", "137", "running"]
  gcloud.replies(*[r for _ in range(4) for r in poll(states=stuck)], *poll(finished="{}"))
  out = gcloud.run("watch.sh", *WATCH)
  assert out.returncode == 0, out.stdout + out.stderr
  assert out.stdout.count("still running on 3: waiting for those to end") == 3
  assert ("w still running on 3 workers 3 polls after the others ended (codes: 137 x1): taken "
          "as hung; relaunch 1 of at most 5") in out.stdout
  assert [verb(c) for c in gcloud.calls()].count("ssh launch.sh") == 1


def test_watch_keeps_a_stop_asked_by_the_user(gcloud):
  gcloud.replies(*poll(states=["running"] * 4),
                 *poll(stop="stopped by ann at 2025-01-01T00:00:00Z\n"))
  out = gcloud.run("watch.sh", *WATCH)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "stop requested (stopped by ann at 2025-01-01T00:00:00Z): not relaunching w" in out.stdout
  assert "ssh launch.sh" not in [verb(c) for c in gcloud.calls()]
  # the run stopped with 75 (what stop.sh's SIGTERM gives) and the request is there: no relaunch
  gcloud.replies(*poll(states=["75"] * 4)[:-1], ["run-state", "", 0], *poll(stop="x"))
  out = gcloud.run("watch.sh", *WATCH)
  assert out.returncode == 0 and "ssh launch.sh" not in [verb(c) for c in gcloud.calls()]


def test_stop_writes_the_request_to_the_bucket_and_run_clears_it(gcloud):
  out = gcloud.run("stop.sh", "--name=w", env={"USER": "ann"})
  assert out.returncode == 0, out.stderr
  marker = gcloud.bucket("my-bucket/runs/w/stop_requested")
  assert marker.read_text().startswith("stopped by ann at ")
  assert [verb(c) for c in gcloud.calls()] == ["storage cp", "ssh stop.sh"]
  out = gcloud.run("run.sh", "--watched", *WATCH)  # the watcher's relaunch: the stop wins
  assert out.returncode == 3 and "stop_requested is there" in out.stderr
  assert marker.exists() and "ssh launch.sh" not in [verb(c) for c in gcloud.calls()]
  out = gcloud.run("run.sh", *WATCH)  # yours: launching is asking for the run to go
  assert out.returncode == 0, out.stderr
  assert not marker.exists()
  out = gcloud.run("stop.sh", "--name=w2", "--workdir=gs://other/place/")
  assert gcloud.bucket("other/place/stop_requested").exists()


def test_watch_reads_the_workdir_given_to_the_trainer(gcloud):
  gcloud.replies(["storage cat gs://b2/mine/finished.json", "{}", 0])
  out = gcloud.run("watch.sh", "--commit=HEAD", "--name=w", "--", "--config=configs/tiny.py",
                   "--workdir=gs://b2/mine/")
  assert out.returncode == 0 and "w finished" in out.stdout, out.stdout + out.stderr
  assert gcloud.calls()[0] == ["storage", "rm", "gs://b2/mine/stop_requested"]


# --- logs, status, preflight, workers -------------------------------------------------------

def test_logs_come_from_the_bucket_for_every_worker_with_the_missing_named(gcloud):
  shutil.rmtree(REPO / "logs" / "x", ignore_errors=True)
  logs = gcloud.bucket("my-bucket/runs/x/logs")
  logs.mkdir(parents=True)
  for worker in (0, 1, 3):  # worker 2's never reached the bucket
    (logs / f"worker-{worker}.log").write_text("step 10: eval/loss 3.2\n")
  (logs / "worker-3.log").write_text("step 10\nTraceback (most recent call last):\n"
                                     '  File "train.py", line 3\nValueError: boom\nafter\n')
  # the slice is gone (describe: NOT_FOUND): 4 workers from the accelerator type
  out = gcloud.run("logs.sh", "--name=x")
  assert out.returncode == 1, out.stderr
  assert "logs/x: 3 of 4 workers' logs" in out.stdout
  assert "missing: worker-2 (not in the bucket)" in out.stdout
  assert "first error, in logs/x/worker-3.log (line 2):" in out.stdout
  assert "ValueError: boom" in out.stdout and "after" not in out.stdout
  assert sorted(os.listdir(REPO / "logs" / "x")) == ["worker-0.log", "worker-1.log",
                                                     "worker-3.log"]
  shutil.rmtree(REPO / "logs" / "x")


def test_status_describes_the_node_even_when_the_queued_resource_describe_fails(gcloud):
  gcloud.replies(["value(state.state)", "", 1, "ERROR: (gcloud) UNAVAILABLE: try again\n"],
                 ["value(state,health)", "READY\tHEALTHY\n", 0])
  out = gcloud.run("status.sh")
  assert out.returncode == 1
  assert "queued resource gptjax-v5p-32: ERROR exit 1: ERROR: (gcloud) UNAVAILABLE" in out.stdout
  assert "TPU VM gptjax-v5p-32: READY\tHEALTHY" in out.stdout
  assert [verb(c) for c in gcloud.calls()] == [
      "queued-resources describe", "tpu-vm describe", "ssh status.sh"]


def preflight_line(host, commit="abc", jax="0.10.2", python="3.12.3"):
  return (f"preflight host={host} commit={commit} python={python} jax={jax} jaxlib={jax} "
          f"libtpu=0.0.30 config=1a2b\n")


def test_preflight_passes_only_when_every_worker_runs_the_same_code(gcloud):
  same = "".join(preflight_line(f"w{i}") for i in range(4))
  gcloud.replies(["preflight.sh", same, 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py:774m")
  assert out.returncode == 0 and "all 4 workers agree" in out.stdout, out.stderr
  assert gcloud.calls()[-1][-1].endswith("worker/preflight.sh configs/gpt2.py")
  odd = same.replace(preflight_line("w3"), preflight_line("w3", commit="def"))
  gcloud.replies(["preflight.sh", odd, 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py")
  assert out.returncode == 1 and "the workers differ" in out.stderr
  gcloud.replies(["preflight.sh", "".join(preflight_line(f"w{i}") for i in range(3)), 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py")
  assert out.returncode == 1 and "3 of 4 workers answered" in out.stderr


@pytest.mark.parametrize("python, jax, says", [
    ("3.10.12", "0.10.2", "worker w2 runs Python 3.10.12, setup.py needs >=3.11"),
    ("missing", "missing", "worker w2 runs Python missing, setup.py needs >=3.11"),
    ("3.12.3", "none", "worker w2 has jax none, setup.py needs jax>=0.7,<0.11"),
    ("3.12.3", "0.6.2", "worker w2 has jax 0.6.2, setup.py needs jax>=0.7,<0.11"),
    ("3.12.3", "0.11.0", "worker w2 has jax 0.11.0, setup.py needs jax>=0.7,<0.11"),
])
def test_preflight_fails_in_one_line_on_a_python_or_jax_setup_py_refuses(gcloud, python, jax,
                                                                          says):
  lines = [preflight_line(f"w{i}", python=python, jax=jax) for i in range(4)]
  gcloud.replies(["preflight.sh", "".join(lines), 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py", env={"NUM_WORKERS": "4"})
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [f"preflight: {says.replace('w2', 'w0')}: run "
                                             "tpu_scripts/setup.sh --commit=REV"]


def test_the_number_of_workers_comes_from_the_slice(gcloud):
  # a v5p-32 has 4 hosts by the formula; the slice itself says 2 (its network endpoints)
  gcloud.replies(["networkEndpoints", "10.0.0.2;10.0.0.3\n", 0],
                 ["preflight.sh", preflight_line("w0") + preflight_line("w1"), 0])
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py")
  assert out.returncode == 0 and "all 2 workers agree" in out.stdout, out.stderr
  gcloud.replies(["networkEndpoints", "", 1, NOT_FOUND])  # the slice is gone
  out = gcloud.run("preflight.sh", "--config=configs/gpt2.py")
  assert out.returncode == 2 and "could not count the workers" in out.stderr


def test_the_workers_environment_follows_the_family_and_keeps_yours():
  def env_of(**env):
    out = subprocess.run(["bash", "-c", f"set -eu; source {SCRIPTS}/worker/env.sh; env; "
                          "echo nofile=$(ulimit -n); echo hard=$(ulimit -Hn)"],
                         env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
  v6e = env_of(ACCELERATOR="v6e-16")
  assert "--xla_tpu_enable_async_collective_fusion=true" in v6e["LIBTPU_INIT_ARGS"]
  assert "TPU_MEGACORE" not in v6e["LIBTPU_INIT_ARGS"]
  assert "TPU_MEGACORE=MEGACORE_DENSE" in env_of(ACCELERATOR="v4-32")["LIBTPU_INIT_ARGS"]
  assert "data_parallel_all_reduce_opt" in env_of(ACCELERATOR="v5p-32")["LIBTPU_INIT_ARGS"]
  assert env_of(ACCELERATOR="v3-8")["LIBTPU_INIT_ARGS"] == ""
  assert env_of()["LIBTPU_INIT_ARGS"] == ""  # launched by hand: no family, no flags
  assert env_of(ACCELERATOR="v6e-16", LIBTPU_INIT_ARGS="")["LIBTPU_INIT_ARGS"] == ""
  assert env_of(ACCELERATOR="v6e-16", LIBTPU_INIT_ARGS="--x=1")["LIBTPU_INIT_ARGS"] == "--x=1"
  assert v6e["TPU_STDERR_LOG_LEVEL"] == "0" and v6e["TPU_MIN_LOG_LEVEL"] == "0"
  assert v6e["TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS"] == "60"
  assert v6e["TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES"] == "256"
  assert int(v6e["nofile"]) == min(65536, int(v6e["hard"]))


def test_run_passes_your_libtpu_flags_to_the_workers(gcloud):
  out = gcloud.run("run.sh", "--dry-run", *WATCH[:2], "--", "--config=configs/tiny.py",
                   env={"LIBTPU_INIT_ARGS": "--xla_a=1 --xla_b=2", "ACCELERATOR": "v6e-16"})
  assert shown(out.stdout)[-1][-1].startswith(
      "--command=ACCELERATOR=v6e-16 LIBTPU_INIT_ARGS='--xla_a=1 --xla_b=2' bash ")


# --- fake workers: the worker scripts run through the fake ssh ------------------------------

@pytest.fixture
def repo_copy(tmp_path):
  """tpu_scripts/ as they are in the working tree, with setup.py and configs/, committed in a
  repository of their own (pack.sh ships commits) on a branch named for this test only
  (fake.branch: its archive in /tmp is this test's), and the fake gcloud running the ssh
  commands on fake workers. A pass-through sudo, a venv whose python stands for the trainer:
  it prints its environment, runs for a moment and exits with ~/trainer_exit (0)."""
  repo = tmp_path / "repo"
  shutil.copytree(SCRIPTS, repo / "tpu_scripts")
  shutil.copytree(REPO / "configs", repo / "configs")
  shutil.copy(REPO / "setup.py", repo / "setup.py")
  git = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
         "GIT_COMMITTER_EMAIL": "t@t"}
  branch = f"test-{uuid.uuid4().hex[:12]}"
  for command in (["init", "-q", "-b", branch], ["add", "-A"], ["commit", "-qm", "one"]):
    subprocess.run(["git", *command], cwd=repo, env=git, check=True)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "sudo").write_text('#!/bin/bash\nexec "$@"\n')
  (bin_dir / "sudo").chmod(0o755)
  fake = Fake(tmp_path / "gcloud", scripts=repo / "tpu_scripts")
  for worker in range(4):
    venv = fake.root / f"worker-{worker}" / "gptjax-venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text('export PATH="$HOME/gptjax-venv/bin:$PATH"\n')
    (venv / "python").write_text(
        "#!/bin/bash\necho \"trainer $(hostname): $*\"\n"
        "echo \"env: LIBTPU_INIT_ARGS=$LIBTPU_INIT_ARGS TPU_STDERR_LOG_LEVEL=$TPU_STDERR_LOG_LEVEL"
        " nofile=$(ulimit -n) distributed=$GPTJAX_DISTRIBUTED\"\n"
        "sleep 1; echo 'step 10'; sleep 0.5; echo 'step 20'\n"
        "exit $(cat ~/trainer_exit 2>/dev/null || echo 0)\n")
    (venv / "python").chmod(0o755)
  fake.env = {"FAKE_GCLOUD_EXEC": "1", "PATH": f"{bin_dir}:{REPO / 'tests' / 'fake_bin'}:"
              f"{os.environ['PATH']}", "LOG_SYNC_SECONDS": "0.3"}
  fake.git = lambda *args: subprocess.run(["git", *args], cwd=repo, env=git, check=True,
                                          capture_output=True, text=True).stdout.strip()
  fake.branch = branch
  yield fake
  pathlib.Path(f"/tmp/gptjax-{branch}.tar.gz").unlink(missing_ok=True)


def wait_for(paths, seconds=30):
  deadline = time.monotonic() + seconds
  while not all(p.exists() for p in paths) and time.monotonic() < deadline:
    time.sleep(0.2)
  return all(p.exists() for p in paths)


def test_each_worker_copies_its_log_to_the_bucket_as_it_grows_and_when_it_exits(repo_copy):
  fake = repo_copy
  fake.worker_file(2, "trainer_exit", "137\n")
  out = fake.run("run.sh", f"--commit={fake.branch}", "--name=r", "--",
                 "--config=configs/tiny.py", env=fake.env)
  assert out.returncode == 0, out.stdout + out.stderr
  exits = [fake.root / f"worker-{i}" / "gptjax-logs" / "r.exit" for i in range(4)]
  assert wait_for(exits), out.stdout
  assert [p.read_text().strip() for p in exits] == ["0", "0", "137", "0"]
  for i in range(4):
    log = fake.bucket(f"my-bucket/runs/r/logs/worker-{i}.log").read_text()
    assert f"trainer t1v-n-fake-w-{i}: -m gptjax.train --config=configs/tiny.py" in log
    assert "step 20" in log and f"trainer exited with {137 if i == 2 else 0}" in log
    assert "--xla_tpu_enable_data_parallel_all_reduce_opt=true" in log  # v5p's flags
    assert "TPU_STDERR_LOG_LEVEL=0" in log and "distributed=1" in log
  copies = [c for c in fake.calls() if c[:2] == ["storage", "cp"] and "logs/worker-0" in c[-1]]
  assert len(copies) >= 2  # while it ran, and at the end
  # the watcher's probe reads what the workers left: every one ended, 137 among them
  fake.replies(["value(state.state)", "ACTIVE\n", 0], ["--format=value(state)", "READY\n", 0],
               ["storage ls", "", 1, "matched no objects"],  # no checkpoint
               ["storage ls", "", 1, "matched no objects"])
  out = fake.run("watch.sh", "--max_restarts=0", f"--commit={fake.branch}", "--name=r", "--",
                 "--config=configs/tiny.py", env=fake.env)
  assert out.returncode == 1 and "exit codes: 0 x3, 137 x1" in out.stderr, out.stdout + out.stderr


def test_a_launch_repeated_on_a_worker_replaces_the_one_running(repo_copy):
  fake = repo_copy
  (fake.root / "worker-0").mkdir(parents=True, exist_ok=True)
  (fake.root / "worker-0" / "gptjax-venv" / "bin" / "python").write_text(
      "#!/bin/bash\necho started; exec sleep 60\n")
  args = (f"--commit={fake.branch}", "--name=r", "--", "--config=configs/tiny.py")
  env = {**fake.env, "FAKE_WORKERS": "1"}
  assert fake.run("run.sh", *args, env=env).returncode == 0
  pid_file = fake.root / "worker-0" / "gptjax-logs" / "r.pid"
  first = int(pid_file.read_text())
  again = fake.run("run.sh", *args, env=env)
  assert again.returncode == 0 and "stopping the launch of r already here" in again.stdout
  second = int(pid_file.read_text())
  time.sleep(0.5)
  assert second != first
  def alive(pid):  # (a killed process no one reaped yet is a zombie: not alive)
    stat = pathlib.Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
  assert not alive(first) and alive(second)
  os.killpg(second, 9)


def test_ship_unpacks_a_moved_branch_into_a_fresh_folder(repo_copy):
  fake = repo_copy
  env = {**fake.env, "FAKE_WORKERS": "2"}
  (fake.scripts.parent / "old_file.txt").write_text("gone in the next commit\n")
  fake.git("add", "-A")
  fake.git("commit", "-qm", "two")
  first = fake.git("rev-parse", "HEAD")
  assert fake.run("ship.sh", f"--commit={fake.branch}", env=env).returncode == 0
  current = fake.root / "worker-1" / "gptjax" / "current"
  assert (current / "old_file.txt").exists()
  fake.git("rm", "-q", "old_file.txt")
  fake.git("commit", "-qm", "three")
  second = fake.git("rev-parse", "HEAD")
  out = fake.run("ship.sh", f"--commit={fake.branch}", env=env)
  assert out.returncode == 0, out.stderr
  assert (current / "COMMIT").read_text().strip() == second
  assert not (current / "old_file.txt").exists()
  assert os.readlink(current) == str(fake.root / "worker-1" / "gptjax" / second)
  assert (fake.root / "worker-1" / "gptjax" / first / "old_file.txt").exists()  # untouched


# --- the install on a worker ----------------------------------------------------------------

def shim(path, text):
  path.write_text("#!/bin/bash\n" + text)
  path.chmod(0o755)


def test_worker_setup_brings_an_interpreter_the_pins_accept_not_the_images_python3(tmp_path):
  """The decision logic with stand-ins: python3 is the image's 3.10 without pip, sudo and uv
  record what they are asked. uv comes from pip after apt (unattended-upgrades stopped
  first), Python 3.12 from uv, and the venv is built with it, never with python3."""
  home, bin_dir, log = tmp_path / "home", tmp_path / "bin", tmp_path / "log"
  code = home / "gptjax" / "current"
  (code / "tpu_scripts").mkdir(parents=True)
  shutil.copytree(SCRIPTS / "worker", code / "tpu_scripts" / "worker")
  shutil.copy(REPO / "setup.py", code / "setup.py")
  (code / "COMMIT").write_text("abc\n")
  bin_dir.mkdir()
  shim(bin_dir / "python3", f"""echo "python3 $*" >> {log}
case "$*" in
  -c*) echo 3.10 ;;
  "-m pip --version") [[ -e {tmp_path}/pip ]] || exit 1 ;;
  "-m pip install"*) mkdir -p $HOME/.local/bin && cp {bin_dir}/uv.real $HOME/.local/bin/uv ;;
esac""")
  shim(bin_dir / "sudo", f'echo "sudo $*" >> {log}\n'
       f'[[ "$*" == *"install -y -q python3-pip"* ]] && touch {tmp_path}/pip; exit 0\n')
  py312 = tmp_path / "uv-python" / "bin" / "python3.12"
  py312.parent.mkdir(parents=True)
  shim(py312, 'case "$*" in *"import jax"*) echo "jax 0.10.2" ;; *) echo 3.12 ;; esac\n')
  shim(bin_dir / "uv.real", f"""echo "uv $*" >> {log}
case "$1 $2" in
  "python find") echo {py312} ;;
  "venv --seed") mkdir -p "${{@: -1}}/bin" && ln -s "$4" "${{@: -1}}/bin/python" ;;
esac""")
  env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}
  worker = code / "tpu_scripts" / "worker" / "setup.sh"
  out = subprocess.run(["bash", str(worker)], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "with Python 3.12, jax 0.10.2" in out.stdout
  calls = log.read_text().splitlines()
  assert calls == [
      "python3 -m pip --version", "sudo systemctl stop unattended-upgrades",
      "sudo apt-get -o DPkg::Lock::Timeout=600 update -q",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "
      "python3-pip",
      "python3 -m pip install --user --quiet --upgrade uv",
      "uv python install 3.12", "uv python find 3.12",
      f"uv venv --seed --python {py312} {home}/gptjax-venv",
      f"uv pip install --python {home}/gptjax-venv/bin/python -e {code}[tpu]"]
  # a venv left by an older setup, built on the image's 3.10: replaced
  venv_python = home / "gptjax-venv" / "bin" / "python"
  venv_python.unlink()
  shim(venv_python, "echo 3.10\n")
  log.unlink()
  out = subprocess.run(["bash", str(worker)], env=env, capture_output=True, text=True)
  assert out.returncode == 0 and "replacing" in out.stdout, out.stdout + out.stderr
  assert f"uv venv --seed --python {py312} {home}/gptjax-venv" in log.read_text()
  # an interpreter named outright must be new enough
  out = subprocess.run(["bash", str(worker)], env={**env, "GPTJAX_PYTHON": str(bin_dir / "python3")},
                       capture_output=True, text=True)
  assert out.returncode == 1
  assert out.stderr.strip().endswith("is Python 3.10; setup.py needs >=3.11")


@pytest.mark.slow
def test_worker_setup_installs_the_tpu_extra_where_the_system_python_is_too_old(tmp_path):
  """worker/setup.sh for real, as on a TPU image, minus the network to GitHub: python3 is a
  shim that says 3.10 (its pip, which installs uv from PyPI into ~/.local, is this
  interpreter's); uv cannot download a managed Python here, so GPTJAX_PYTHON names this
  machine's 3.11. uv builds the venv and installs `.[tpu]` (jax[tpu] with libtpu, from PyPI:
  about 300 MB, hence slow); worker/preflight.sh's line for it passes preflight's checks."""
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  code = home / "gptjax" / "current"
  shutil.copytree(REPO, code, ignore=shutil.ignore_patterns(
      ".venv", "runs", ".git", "logs", "*.egg-info", "__pycache__", "workdir*"))
  (code / "COMMIT").write_text("test\n")
  bin_dir.mkdir()
  python311 = pathlib.Path(sys.base_prefix) / "bin" / f"python3.{sys.version_info[1]}"
  shim(bin_dir / "python3", f"""case "$*" in
  -c*|--version) echo "3.10" ;;
  *) exec {python311} "$@" ;;  # pip: this interpreter's, --user into $HOME/.local
esac""")
  cache = pathlib.Path(os.environ.get("UV_CACHE_DIR", pathlib.Path.home() / ".cache" / "uv"))
  env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},  # (proxies, CAs)
         "HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "GPTJAX_PYTHON": str(python311),
         "UV_CACHE_DIR": str(cache), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
  start = time.monotonic()
  out = subprocess.run(["bash", str(code / "tpu_scripts" / "worker" / "setup.sh")], env=env,
                       capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  print(f"setup: {time.monotonic() - start:.0f} s")
  assert (home / ".local" / "bin" / "uv").exists()  # from PyPI, by python3's pip
  venv_python = home / "gptjax-venv" / "bin" / "python"
  version = subprocess.run([str(venv_python), "-c", "import sys, jax, libtpu; "
                            "print(sys.version_info[:2], jax.__version__)"],
                           capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu"})
  assert version.returncode == 0, version.stderr
  assert version.stdout.startswith(f"(3, {sys.version_info[1]})"), version.stdout
  line = subprocess.run(["bash", str(code / "tpu_scripts" / "worker" / "preflight.sh"),
                         "configs/tiny.py"], env=env, capture_output=True, text=True).stdout
  assert re.search(r"python=3\.1[1-9]\.\d+ jax=0\.\d+\.\d+ .*libtpu=\d", line), line
  fake = Fake(tmp_path / "gcloud")
  fake.replies(["preflight.sh", line * 4, 0])
  out = fake.run("preflight.sh", "--config=configs/tiny.py")
  assert out.returncode == 0, out.stderr


# --- the README -----------------------------------------------------------------------------

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
         "GPTJAX_DISTRIBUTED": "0", "GCE_METADATA_HOST": "127.0.0.1:9"}
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
