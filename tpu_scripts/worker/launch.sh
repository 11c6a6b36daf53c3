#!/usr/bin/env bash
# On a worker: launch.sh RUN TRAINER_FLAGS... starts gptjax-train detached as this host's
# process of the run (worker/train.sh); log ~/gptjax-logs/RUN.log (copied to the bucket),
# exit code ~/gptjax-logs/RUN.exit (75 = stopped on a preemption notice, rerun to resume).
# Launching a run that is already going here restarts it (a retried or repeated launch).
set -euo pipefail
run="$1"; shift
here="$(cd "$(dirname "$0")" && pwd)"
logs=~/gptjax-logs
mkdir -p "$logs"
say() { echo "worker $(hostname): $*"; }
if [[ -f "$logs/$run.pid" ]]; then
  old="$(cat "$logs/$run.pid")"
  if [[ "$(ps -ww -o args= -p "$old" 2>/dev/null || true)" == *worker/train.sh* ]]; then
    say "stopping the launch of $run already here (process group $old)"
    kill -9 -- "-$old" 2>/dev/null || kill -9 "$old" || true
  fi
fi
# Stale holders of the TPU (a previous run, a peer left hanging by a dead host, a crashed
# notebook) keep its device files open and the new process could not open the chips: kill
# them, drop libtpu's lock.
holders="$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u || true)"
if [[ -n "$holders" ]]; then
  say "killing stale TPU holders: $holders"
  # shellcheck disable=SC2086
  sudo kill -9 $holders || true
  sleep 2
fi
sudo rm -f /tmp/libtpu_lockfile
rm -f "$logs/$run.exit"
# This host's number in the slice (its log's name in the bucket): the metadata server's
# agent-worker-number, else the -w-N of a TPU VM's hostname, else the hostname.
metadata="http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance"
worker="$(curl -sf -m 5 -H Metadata-Flavor:Google "$metadata/attributes/agent-worker-number" || true)"
if [[ ! "$worker" =~ ^[0-9]+$ ]]; then
  worker="$(hostname)"
  [[ "$worker" =~ -w-([0-9]+)$ ]] && worker="${BASH_REMATCH[1]}"
fi
# shellcheck source=env.sh
source "$here/env.sh"
cd "$here/../.."
# GPTJAX_DISTRIBUTED: join the other hosts (jax.distributed finds them on a TPU slice).
export GPTJAX_DISTRIBUTED="${GPTJAX_DISTRIBUTED-1}" WORKER_ID="$worker"
# its own process group (setsid), so that a later launch can stop all of it
setsid bash "$here/train.sh" "$run" "$@" > "$logs/$run.log" 2>&1 < /dev/null &
echo $! > "$logs/$run.pid"
say "started $run (code $(cat COMMIT)) as worker $worker, log $logs/$run.log"
