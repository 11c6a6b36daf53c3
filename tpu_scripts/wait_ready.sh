#!/usr/bin/env bash
# Wait until the TPU VM is READY (a queued resource may wait hours for capacity).
#   tpu_scripts/wait_ready.sh [--settings=FILE] [--dry-run]   (POLL_SECONDS=60)
source "$(dirname "$0")/lib.sh"
while true; do
  # shellcheck disable=SC2046
  state="$(query READY gcloud compute tpus tpu-vm describe "$TPU_NAME" $(where) \
           '--format=value(state)' || true)"
  case "$state" in
    *READY*) echo "$TPU_NAME is READY"; exit 0 ;;
    *PREEMPTED*|*TERMINATED*|*FAILED*) die "$TPU_NAME is ${state##*$'\n'}: delete and create it again" ;;
  esac
  echo "$TPU_NAME: ${state:-not created yet}; waiting"
  sleep "${POLL_SECONDS:-60}"
done
