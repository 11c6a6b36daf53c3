#!/usr/bin/env bash
# Delete the slice (and its queued resource): billing stops; the bucket keeps the runs.
# A slice already gone is fine.   tpu_scripts/delete.sh [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
# (a deletion waits for its operation: up to 15 minutes)
if [[ "$QUEUED" == true ]]; then
  CALL_TIMEOUT=900 retry --absent-ok gcloud compute tpus queued-resources delete "$TPU_NAME" "${WHERE[@]}" --force --quiet
else
  CALL_TIMEOUT=900 retry --absent-ok gcloud compute tpus tpu-vm delete "$TPU_NAME" "${WHERE[@]}" --quiet
fi
