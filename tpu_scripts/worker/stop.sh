#!/usr/bin/env bash
# On a worker: stop.sh RUN sends the run's trainer SIGTERM (it checkpoints, then exits 75)
# and waits up to 10 minutes for it to finish writing.
set -euo pipefail
run="$1"
logs=~/gptjax-logs
[[ -f "$logs/$run.pid" ]] || { echo "worker $(hostname): no run $run here"; exit 0; }
wrapper="$(cat "$logs/$run.pid")"
pkill -TERM -P "$wrapper" || { echo "worker $(hostname): $run is not running"; exit 0; }
for _ in $(seq 600); do
  [[ -f "$logs/$run.exit" ]] && { echo "worker $(hostname): $run exited with $(cat "$logs/$run.exit")"; exit 0; }
  sleep 1
done
echo "worker $(hostname): $run still running after 10 minutes" >&2
exit 1
