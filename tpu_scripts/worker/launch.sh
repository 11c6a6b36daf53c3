#!/usr/bin/env bash
# On a worker: launch.sh RUN TRAINER_FLAGS... starts gptjax-train detached as this host's
# process of the run; log ~/gptjax-logs/RUN.log, exit code ~/gptjax-logs/RUN.exit (75 =
# stopped on a preemption notice, rerun to resume).
set -euo pipefail
run="$1"; shift
logs=~/gptjax-logs
mkdir -p "$logs"
# Stale holders of the TPU (a previous run, a crashed notebook) keep its device files open
# and the new process could not open the chips: kill them, drop libtpu's lock.
holders="$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u || true)"
if [[ -n "$holders" ]]; then
  echo "worker $(hostname): killing stale TPU holders: $holders"
  # shellcheck disable=SC2086
  sudo kill -9 $holders || true
  sleep 2
fi
sudo rm -f /tmp/libtpu_lockfile
rm -f "$logs/$run.exit"
cd "$(dirname "$0")/../.."
# GPTJAX_DISTRIBUTED: join the other hosts (jax.distributed finds them on a TPU slice).
export GPTJAX_DISTRIBUTED="${GPTJAX_DISTRIBUTED-1}"
nohup bash -c 'source ~/gptjax-venv/bin/activate; python -m gptjax.train "$@"
  echo $? > "'"$logs/$run.exit"'"' gptjax-run "$@" > "$logs/$run.log" 2>&1 < /dev/null &
echo $! > "$logs/$run.pid"
echo "worker $(hostname): started $run (code $(cat COMMIT)), log $logs/$run.log"
