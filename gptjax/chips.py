"""What each accelerator offers, per JAX device: the one table MFU and the planner read.

Figures are vendor datasheet values (dense bf16 peak, HBM capacity and bandwidth). Link
bandwidth is what one device moves on a ring over one mesh axis, both directions together:
one ICI link's bidirectional rate on TPU, NVLink's per-GPU rate halved (a ring uses one
send and one receive path) on GPU. They are round numbers for planning, not guarantees.
"""

from __future__ import annotations

import dataclasses
import re

from gptjax.errors import UserError

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  device_kinds: tuple[str, ...]  # lower-case substrings of jax's Device.device_kind
  peak_flops: float  # dense bf16 FLOP/s per device
  hbm_bytes: float  # memory per device
  hbm_bandwidth: float  # bytes/s
  link_bandwidth: float  # bytes/s per device on a ring (see the module docstring)
  cores_per_device: int = 1  # TPU v4/v5p names count TensorCores: 2 per chip = 1 device
  usable_fraction: float = 1.0  # of hbm_bytes a run gets (JAX preallocates 75% of a GPU)


CHIPS = {
    "a100": Chip("a100", ("a100",), 312e12, 80e9, 2.0e12, 300e9, usable_fraction=0.75),
    "h100": Chip("h100", ("h100",), 989e12, 80e9, 3.35e12, 450e9, usable_fraction=0.75),
    "h200": Chip("h200", ("h200",), 989e12, 141e9, 4.8e12, 450e9, usable_fraction=0.75),
    "v4": Chip("v4", ("tpu v4",), 275e12, 32 * GiB, 1.2e12, 90e9, cores_per_device=2),
    "v5e": Chip("v5e", ("tpu v5 lite", "tpu v5e"), 197e12, 16 * GiB, 0.82e12, 90e9),
    "v5p": Chip("v5p", ("tpu v5p", "tpu v5"), 459e12, 95 * GiB, 2.76e12, 180e9,
                cores_per_device=2),
    "v6e": Chip("v6e", ("tpu v6 lite", "tpu v6e"), 918e12, 32 * GiB, 1.64e12, 180e9),
}
ALIASES = {"v5litepod": "v5e", "v6": "v6e"}


def chip_for_device_kind(device_kind: str) -> Chip | None:
  """The table row for a jax device (longest matching kind wins: "tpu v5 lite" before "tpu v5")."""
  kind = device_kind.lower()
  matches = [(len(k), chip) for chip in CHIPS.values() for k in chip.device_kinds if k in kind]
  return max(matches, key=lambda m: m[0])[1] if matches else None


def parse_topology(text: str) -> tuple[Chip, int]:
  """'v5p-128' (TensorCores, as Cloud TPU names slices), 'v5e-16', 'h100-8', 'h100' -> (chip,
  JAX devices)."""
  m = re.fullmatch(r"([a-z0-9]+?)(?:-(\d+))?", text.strip().lower())
  name = m and ALIASES.get(m.group(1), m.group(1))
  if not m or name not in CHIPS:
    raise UserError(f"--topology={text!r}: expected CHIP or CHIP-COUNT with CHIP one of "
                    f"{sorted(CHIPS)} (e.g. v5p-128, v5e-16, h100-8)")
  chip = CHIPS[name]
  count = int(m.group(2) or chip.cores_per_device)
  if count % chip.cores_per_device:
    raise UserError(f"--topology={text!r}: {name} slices count TensorCores, "
                    f"{chip.cores_per_device} per chip; use a multiple of it")
  return chip, count // chip.cores_per_device
