"""The device mesh and the whole parallelism strategy, as one logical->mesh rule table.

Mesh axes ("data", "fsdp", "tensor"). Parameters and activations name logical axes in
`gptjax.model`; RULES maps them here. Flax assigns each mesh axis at most once per array,
in rule order, so activations' `embed` stays replicated when `batch` already took `fsdp`.
"""

from __future__ import annotations

import contextlib
import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gptjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

RULES = (
    ("batch", ("data", "fsdp")),  # activations' batch: data-parallel over data and fsdp
    ("embed", "fsdp"),  # params' model dim: FSDP shards it, XLA gathers it per layer
    ("heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor"),  # Megatron-style TP
    ("length", None), ("kv", None),
)


def split_host_cpu(batch_sizes: tuple[int, ...], requested: int = 0) -> None:
  """Expose the host's cores as several JAX CPU devices, before any backend starts.

  On a CPU-only machine XLA runs one device's small kernels on one thread; data parallelism
  over one device per core keeps every core busy (a 1.4x faster step for nanoGPT's CPU
  configuration on 2 cores). `requested` 0 = the most devices <= cores that divide every
  batch size. No effect if XLA_FLAGS already sets a device count or backends are running.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" in flags:
    return
  n = requested or max(d for d in range(1, (os.cpu_count() or 1) + 1)
                       if all(b % d == 0 for b in batch_sizes))
  flags += f" --xla_force_host_platform_device_count={n}"
  if "collective_call_terminate_timeout" not in flags:
    # The simulated devices share the cores: with another busy process on them, one device's
    # thread can reach an all-reduce over 40 s after the other (XLA's default abort, seen
    # here with two trainings on 2 cores). Wait, as a slow machine would, instead of dying.
    flags += (" --xla_cpu_collective_call_warn_stuck_timeout_seconds=120"
              " --xla_cpu_collective_call_terminate_timeout_seconds=1800")
  os.environ["XLA_FLAGS"] = flags.strip()


def split_host_cpu_for(config) -> None:
  """split_host_cpu with the batch sizes a run's mesh must divide (call before using jax)."""
  split_host_cpu((config.train.batch_size // max(config.train.grad_accum, 1),
                  config.data.eval_batch_size), config.train.cpu_devices)


def must_sync_each_step() -> bool:
  """True on a multi-device CPU host: there, wait for each step before queueing the next.

  XLA's CPU runtime runs every device's program on one shared thread pool; with many
  steps queued, threads blocked on a later step can starve a device that an all-reduce is
  waiting for, and the run aborts after 40 s in a collective rendezvous (seen here: 200
  queued steps on 2 CPU devices). Host and devices share the cores, so waiting costs
  nothing measurable (51-57 ms a step either way on nanoGPT's CPU configuration).
  """
  return jax.default_backend() == "cpu" and jax.device_count() > 1


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
  if sizes.count(-1) > 1:
    raise UserError(f"at most one of mesh.data/fsdp/tensor may be -1, got {sizes}")
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh sizes must be positive or -1, got data/fsdp/tensor={sizes}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise UserError(f"{num_devices} devices do not divide by mesh fsdp*tensor={known}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(f"mesh data*fsdp*tensor={sizes} uses {math.prod(sizes)} devices but "
                    f"{num_devices} are present: set one of --config.mesh.* to -1")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  try:  # topology-aware placement on TPU/GPU; plain reshape where that is not possible
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # noqa: BLE001 (CPU and odd shapes)
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_to_sharding(mesh: Mesh, logical_tree):
  """A tree of logical PartitionSpecs -> NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, RULES)


def param_shardings(mesh: Mesh, abstract_boxed_params, replicate_indivisible: bool = False):
  """Shardings for (abstract, LogicallyPartitioned) params; checks every dim divides, or with
  `replicate_indivisible` (reading another run's checkpoint) replicates such a param."""
  shardings = logical_to_sharding(mesh, nn.get_partition_spec(abstract_boxed_params))
  shapes = nn.unbox(abstract_boxed_params)
  if replicate_indivisible:
    def fit(leaf, s):
      ok = all(dim % shard_count(axes, dict(mesh.shape)) == 0
               for dim, axes in zip(leaf.shape, s.spec))
      return s if ok else replicated(mesh)
    return jax.tree_util.tree_map(fit, shapes, shardings)
  check_divisible(shapes, jax.tree_util.tree_map(lambda s: s.spec, shardings), dict(mesh.shape))
  return shardings


def check_divisible(shapes, mesh_specs, mesh_sizes: dict) -> None:
  """Every parameter dimension divides by the mesh axes it is split over, or a clear error."""
  for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(shapes),
                                jax.tree_util.tree_leaves(mesh_specs, is_leaf=is_spec)):
    for dim, axes in zip(leaf.shape, spec):
      size = shard_count(axes, mesh_sizes)
      if dim % size:
        name = jax.tree_util.keystr(path)
        raise UserError(f"parameter {name} of shape {leaf.shape} cannot be split {size} ways "
                        f"over mesh axes {axes}: change --config.mesh.* or the model size")


def shard_count(axes, mesh_sizes) -> int:
  """How many ways a PartitionSpec entry (a mesh axis, a tuple of them, or None) splits a dim."""
  axes = (axes,) if isinstance(axes, str) else (axes or ())
  return math.prod(mesh_sizes[a] for a in axes)


def is_spec(x) -> bool:
  return isinstance(x, P)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data and fsdp; everything else replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """This process's slice of the global batch (numpy) -> one global, sharded jax.Array each."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


@contextlib.contextmanager
def rules_context(mesh: Mesh):
  """Mesh + logical rules in scope, so the model's activation constraints take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    yield
