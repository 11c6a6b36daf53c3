"""Run one command as N processes of one multi-host JAX run, on this machine.

    gptjax-launch --processes=2 [--devices=8] [--log_dir=DIR] -- \
        gptjax-train --config=configs/shakespeare_char.py:smoke --workdir=runs/mh

What a TPU pod does with one process per host, here with CPU devices: each process gets
GPTJAX_COORDINATOR / GPTJAX_NUM_PROCESSES / GPTJAX_PROCESS_ID (gptjax.distributed joins
them) and devices/processes CPU devices of its own. Every line a process prints comes out
prefixed with its index (and goes to DIR/process_<i>.log). SIGTERM or Ctrl-C is passed to
every process, as a preempted slice gets it on every host. When one process fails, the
others have --grace seconds to stop on their own (they should: see train.heartbeat_timeout),
then are killed; the launcher exits with the first failure's code.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from gptjax import distributed


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(index: int, processes: int, devices: int, port: int, base=None) -> dict:
  """The environment of process `index`: its place in the run and its CPU devices."""
  env = dict(os.environ if base is None else base)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices // processes}")
  env.update({distributed.ENV_COORDINATOR: f"localhost:{port}",
              distributed.ENV_NUM_PROCESSES: str(processes),
              distributed.ENV_PROCESS_ID: str(index),
              "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)})
  return env


_GLOO_CHATTER = re.compile(r"(\[Gloo\] Rank )?\d+ is connected to \d+ peer ranks")


class _Pump(threading.Thread):
  """Copies a process's output to ours, each line prefixed, and to its log file."""

  def __init__(self, index: int, stream, log_path: str | None):
    super().__init__(daemon=True)
    self.index, self.stream = index, stream
    self.log = open(log_path, "w", encoding="utf-8") if log_path else None

  def run(self):
    for line in iter(self.stream.readline, ""):
      if _GLOO_CHATTER.search(line):  # gloo's hello from every device at each start: noise
        continue
      sys.stdout.write(f"[{self.index}] {line}")
      sys.stdout.flush()
      if self.log:
        self.log.write(line)
        self.log.flush()
    if self.log:
      self.log.close()


def launch(command: list[str], processes: int, devices: int = 8, log_dir: str | None = None,
           grace: float = 60.0, port: int = 0) -> int:
  """Start the processes, wait for all; the exit code: 0, or the first failure's."""
  if processes < 1 or devices % processes:
    raise SystemExit(f"error: --devices={devices} must divide by --processes={processes}")
  if not command:
    raise SystemExit("error: no command given: gptjax-launch --processes=N -- COMMAND ...")
  port = port or free_port()
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
  procs, pumps = [], []
  for i in range(processes):
    p = subprocess.Popen(command, env=process_env(i, processes, devices, port),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)  # our signals reach it only through us
    procs.append(p)
    pump = _Pump(i, p.stdout, os.path.join(log_dir, f"process_{i}.log") if log_dir else None)
    pump.start()
    pumps.append(pump)

  def forward(signum, _frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    code = _wait(procs, grace)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for pump in pumps:
      pump.join(timeout=5)
  return code


_SIGNALS = {s.value for s in signal.Signals}


def _wait(procs, grace: float) -> int:
  first_failure, deadline = None, None
  while any(p.poll() is None for p in procs):
    for i, p in enumerate(procs):
      if first_failure is None and p.poll() not in (None, 0):
        first_failure, deadline = (i, p.returncode), time.monotonic() + grace
    if deadline is not None and time.monotonic() > deadline:
      for i, p in enumerate(procs):
        if p.poll() is None:
          print(f"gptjax-launch: process {i} did not stop within {grace:g} s of process "
                f"{first_failure[0]}'s failure: killed", file=sys.stderr, flush=True)
          p.kill()
          p.wait()
    time.sleep(0.2)
  codes = [p.returncode for p in procs]
  if first_failure is None:
    failed = [(i, c) for i, c in enumerate(codes) if c]
    first_failure = failed[0] if failed else None
  if first_failure is None:
    return 0
  index, code = first_failure
  how = f" ({signal.Signals(-code).name})" if code < 0 and -code in _SIGNALS else ""
  print(f"gptjax-launch: process {index} exited with code {code}{how}; exit codes {codes}",
        file=sys.stderr, flush=True)
  return code if code > 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="gptjax-launch", description=__doc__.split("\n\n")[0])
  parser.add_argument("--processes", type=int, required=True, help="how many processes")
  parser.add_argument("--devices", type=int, default=8, help="CPU devices in all")
  parser.add_argument("--log_dir", default=None, help="also write DIR/process_<i>.log")
  parser.add_argument("--grace", type=float, default=60.0,
                      help="seconds the others have to stop after one fails")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0 = a free one)")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  sys.exit(launch(command, args.processes, args.devices, args.log_dir, args.grace, args.port))


if __name__ == "__main__":
  main()
