"""Result JSON files and the names they get: shared by every benchmark that writes a table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys


def config_name(argv) -> str:
  """'configs/gpt2.py:774m' on the command line -> 'gpt2_774m'."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return os.path.basename(arg.split("=", 1)[1]).replace(".py", "").replace(":", "_")
  return "benchmark"


def save(results_dir: str, name: str, result: dict) -> None:
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, f"{name}.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


def load_all(results_dir: str) -> list[tuple[str, dict]]:
  """(name, result) for every JSON in the folder, sorted by name."""
  rows = []
  for name in sorted(os.listdir(results_dir)):
    if name.endswith(".json"):
      with open(os.path.join(results_dir, name)) as f:
        rows.append((name[:-5], json.load(f)))
  return rows


def cpu_model() -> str:
  """The CPU's marketing name: /proc/cpuinfo, lscpu, sysctl (macOS), else platform."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  for cmd, key in ((["lscpu"], "model name:"),
                   (["sysctl", "-n", "machdep.cpu.brand_string"], "")):
    try:
      out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
      continue
    for line in out.splitlines():
      if line.lower().startswith(key) and line[len(key):].strip():
        return line[len(key):].strip()
  return platform.processor() or platform.machine() or "unknown CPU"


def host_info(accelerator: str | None = None) -> dict:
  """What a result was measured on: CPU name, cores (logical; usable ones if fewer), the
  accelerator (e.g. '8 x NVIDIA H100 80GB HBM3'; None on a CPU-only run)."""
  info = {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
          "system": platform.system(), "python": sys.version.split()[0],
          "accelerator": accelerator}
  if hasattr(os, "sched_getaffinity"):
    usable = len(os.sched_getaffinity(0))
    if usable != info["cores"]:
      info["usable_cores"] = usable
  return info


def host_line(host) -> str:
  """One line for a table: 'Intel(R) Xeon(R) Processor, 2 cores[; 1 x NVIDIA H100 ...]'."""
  if not host:
    return "not recorded"
  if isinstance(host, str):  # results written before host_info: 'x86_64, 2 cores'
    return host
  cores = (f"{host['usable_cores']} of {host.get('cores')}" if host.get("usable_cores")
           else host.get("cores"))
  line = f"{host.get('cpu', '?')}, {cores} cores"
  return line + (f"; {host['accelerator']}" if host.get("accelerator") else "")
