#!/usr/bin/env bash
# On a worker, started detached by launch.sh: train.sh RUN TRAINER_FLAGS... runs this host's
# trainer in the venv, copies its log (stdout, which launch.sh points at ~/gptjax-logs/RUN.log)
# to WORKDIR/logs/worker-$WORKER_ID.log in the bucket every LOG_SYNC_SECONDS (30) and once at
# the end, so the logs outlive the slice, then writes the exit code to ~/gptjax-logs/RUN.exit.
set -uo pipefail
run="$1"; shift
logs=~/gptjax-logs
dest=""
for arg in "$@"; do
  [[ "$arg" == --workdir=gs://* ]] && dest="${arg#--workdir=}"
done
[[ -z "$dest" ]] || dest="${dest%/}/logs/worker-${WORKER_ID:-$(hostname)}.log"
copy_log() {  # a failed copy never stops the run: noted in RUN.copy-errors, tried again later
  [[ -z "$dest" ]] && return 0
  timeout 120 gcloud storage cp "$logs/$run.log" "$dest" >/dev/null 2>>"$logs/$run.copy-errors" ||
    echo "$(date -u +%FT%TZ) the copy to $dest failed" >>"$logs/$run.copy-errors"
}
copier=""
if [[ -n "$dest" ]]; then
  ( while sleep "${LOG_SYNC_SECONDS:-30}"; do copy_log; done ) &
  copier=$!
fi
# shellcheck disable=SC1090,SC1091
source "${GPTJAX_VENV:-$HOME/gptjax-venv}/bin/activate"
python -m gptjax.train "$@"
code=$?
if [[ -n "$copier" ]]; then pkill -P "$copier" 2>/dev/null; kill "$copier" 2>/dev/null; fi
echo "worker $(hostname): trainer exited with $code"
copy_log
echo "$code" > "$logs/$run.exit"
exit "$code"
