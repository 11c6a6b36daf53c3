#!/usr/bin/env bash
# Delete the slice (and its queued resource): billing stops; the bucket keeps the runs.
#   tpu_scripts/delete.sh [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
if [[ "$QUEUED" == true ]]; then
  # shellcheck disable=SC2046
  run gcloud compute tpus queued-resources delete "$TPU_NAME" $(where) --force --quiet
else
  # shellcheck disable=SC2046
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" $(where) --quiet
fi
