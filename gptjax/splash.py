"""Causal attention through the Pallas splash-attention kernel: TPU flash attention.

XLA attention materialises [heads, T, T] scores; splash attention streams blocks of keys
through VMEM and keeps none, as cuDNN's kernel does on GPU. The kernel works on one
device's [heads, T, head_dim] arrays, so on a mesh it runs inside `jax.shard_map` with the
batch split like every activation and heads over `tensor` (RULES); grouped-query attention
uses the MQA kernel once per key/value head. Off a TPU the same kernel runs in Pallas's
interpreter, which is how the tests check it against XLA on a CPU.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.sharding import PartitionSpec as P

from gptjax import sharding

AXES = ("batch", "length", "heads", "kv")  # logical axes of q, k and v, as the model names them
BLOCKS = (512, 256, 128)  # tile lengths tried, largest first; TPU tiles are multiples of 128


def block_for(seq_len: int) -> int | None:
  """The tile length for a sequence (None: the length is not a multiple of 128)."""
  return next((b for b in BLOCKS if seq_len % b == 0), None)


def unsupported_reason(seq_len: int | None) -> str | None:
  if seq_len is not None and block_for(seq_len) is None:
    return f"sequence length {seq_len}; splash attention needs a multiple of 128"
  return None


@functools.lru_cache(maxsize=None)
def _kernel(seq_len: int, heads: int, mqa: bool, interpret: bool):
  block = block_for(seq_len)
  sizes = kernel.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
      block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  mask = masks.MultiHeadMask([masks.CausalMask((seq_len, seq_len))] * heads)
  make = kernel.make_splash_mqa if mqa else kernel.make_splash_mha
  with jax.ensure_compile_time_eval():  # the mask tables are constants, never tracers
    return make(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _local_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT=None):
  """One device's causal attention: [B, T, N, H] queries, [B, T, K, H] keys and values;
  with segment ids (int32[B, T]) the kernel also masks across segments, block-sparsely."""
  B, T, N, H = q_BTNH.shape
  K = k_BTKH.shape[2]
  interpret = jax.default_backend() != "tpu"  # Pallas TPU kernels run interpreted elsewhere
  q_BNTH = (q_BTNH * (1.0 / math.sqrt(H))).astype(q_BTNH.dtype).transpose(0, 2, 1, 3)
  k_BKTH, v_BKTH = k_BTKH.transpose(0, 2, 1, 3), v_BTKH.transpose(0, 2, 1, 3)
  if segment_ids_BT is None:
    segments = None
  else:
    seg_BT = segment_ids_BT.astype(jax.numpy.int32)
    segments = kernel.SegmentIds(q=seg_BT, kv=seg_BT)
  if K == N:
    run = _kernel(T, N, False, interpret)
    out_BNTH = jax.vmap(lambda q, k, v, s: run(q, k, v, segment_ids=s))(
        q_BNTH, k_BKTH, v_BKTH, segments)
  else:  # each key/value head serves a group of N // K query heads: the MQA kernel per group
    q_BKGTH = q_BNTH.reshape(B, K, N // K, T, H)
    run = _kernel(T, N // K, True, interpret)
    per_group = jax.vmap(lambda q, k, v, s: run(q, k, v, segment_ids=s),
                         in_axes=(0, 0, 0, None))
    out_BNTH = jax.vmap(per_group)(q_BKGTH, k_BKTH, v_BKTH, segments).reshape(B, N, T, H)
  return out_BNTH.transpose(0, 2, 1, 3)


def causal_attention(q_BTNH: jax.Array, k_BTKH: jax.Array, v_BTKH: jax.Array,
                     segment_ids_BT: jax.Array | None = None) -> jax.Array:
  """Causal attention, same contract as jax.nn.dot_product_attention(..., is_causal=True)
  (and, with segment ids, its mask of equal ids)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _local_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT)
  spec = P(*nn.logical_to_mesh_axes(AXES))
  if segment_ids_BT is None:
    return jax.shard_map(_local_attention, mesh=mesh, in_specs=(spec, spec, spec),
                         out_specs=spec, check_vma=False)(q_BTNH, k_BTKH, v_BTKH)
  seg_spec = P(*nn.logical_to_mesh_axes(AXES[:2]))
  return jax.shard_map(_local_attention, mesh=mesh, in_specs=(spec, spec, spec, seg_spec),
                       out_specs=spec, check_vma=False)(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT)


def mesh_unsupported_reason(batch: int, heads: int, kv_heads: int) -> str | None:
  """Why the context mesh cannot split this attention evenly (None: it can)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  batch_axes, _, head_axes, _ = nn.logical_to_mesh_axes(AXES)
  batch_ways = sharding.shard_count(batch_axes, mesh.shape)
  head_ways = sharding.shard_count(head_axes, mesh.shape)
  if batch % batch_ways or heads % head_ways or kv_heads % head_ways:
    return (f"batch {batch}, heads {heads}/{kv_heads} do not divide over the mesh "
            f"({dict(mesh.shape)})")
  return None

