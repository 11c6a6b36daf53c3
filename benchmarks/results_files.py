"""Result JSON files and the names they get: shared by every benchmark that writes a table."""

from __future__ import annotations

import json
import os


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
