#!/usr/bin/env bash
# On a worker: each run's state (running, or its exit code) and its last progress line.
set -uo pipefail
logs=~/gptjax-logs
shopt -s nullglob
for log in "$logs"/*.log; do
  run="$(basename "$log" .log)"
  if [[ -f "$logs/$run.exit" ]]; then state="exited $(cat "$logs/$run.exit")"; else state=running; fi
  last="$(tr '\r' '\n' < "$log" | grep -v '^\s*$' | tail -n 1)"
  echo "$(hostname) $run: $state | $last"
done
