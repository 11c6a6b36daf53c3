# shellcheck shell=bash
# On a worker, sourced by launch.sh: the environment the trainer runs in. A variable already
# set (run.sh passes LIBTPU_INIT_ARGS when you set it, even empty) is kept.
#   ACCELERATOR (from run.sh, e.g. v5p-32) picks the family's libtpu flags.
# libtpu's own log: every level to /tmp/tpu_logs, and to stderr (so into the run's log, and
# the bucket), where a FATAL TPU error would otherwise not show.
export TPU_STDERR_LOG_LEVEL="${TPU_STDERR_LOG_LEVEL:-0}"
export TPU_MIN_LOG_LEVEL="${TPU_MIN_LOG_LEVEL:-0}"
# A checkpoint transfer to or from the bucket that stalls (under 256 bytes/s for 60 s) is
# aborted and retried by tensorstore, instead of hanging the save on every host.
export TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS="${TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS:-60}"
export TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES="${TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES:-256}"
# The XLA flags MaxText's configs set for each family (src/maxtext/configs/tpu/<family>/):
# collectives overlapped with compute, data-parallel all-reduce fused.
case "${ACCELERATOR:-}" in
  v4-*) preset=(
    --xla_enable_async_all_gather=true TPU_MEGACORE=MEGACORE_DENSE) ;;
  v5p-*) preset=(
    --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true
    --xla_tpu_megacore_fusion_allow_ags=false --xla_enable_async_collective_permute=true
    --xla_tpu_enable_ag_backward_pipelining=true
    --xla_tpu_enable_data_parallel_all_reduce_opt=true
    --xla_tpu_data_parallel_opt_different_sized_ops=true
    --xla_tpu_enable_async_collective_fusion=true
    --xla_tpu_enable_async_collective_fusion_multiple_steps=true
    --xla_tpu_overlap_compute_collective_tc=true --xla_enable_async_all_gather=true) ;;
  v5litepod-*|v5e-*) preset=(
    --xla_tpu_enable_data_parallel_all_reduce_opt=true
    --xla_tpu_data_parallel_opt_different_sized_ops=true
    --xla_tpu_enable_async_collective_fusion=true
    --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true
    --xla_tpu_enable_async_collective_fusion_multiple_steps=true
    --xla_tpu_overlap_compute_collective_tc=true --xla_enable_async_all_gather=true) ;;
  v6e-*) preset=(
    --xla_enable_async_all_gather=true --xla_tpu_overlap_compute_collective_tc=true
    --xla_tpu_enable_async_collective_fusion_multiple_steps=true
    --xla_tpu_enable_async_collective_fusion=true
    --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true) ;;
  *) preset=() ;;  # v2, v3: none
esac
export LIBTPU_INIT_ARGS="${LIBTPU_INIT_ARGS-${preset[*]}}"
unset preset
# Orbax, tensorstore and gcsfs keep many files and sockets open at once; the default soft
# limit (often 1024) can run out during a checkpoint of a sharded model.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
