#!/usr/bin/env bash
# Create the TPU VM slice of the settings (through a queued resource when QUEUED=true) and
# wait until it is ready.   tpu_scripts/create.sh [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
if [[ "$QUEUED" == true ]]; then
  # shellcheck disable=SC2046
  run gcloud compute tpus queued-resources create "$TPU_NAME" "--node-id=$TPU_NAME" $(where) \
      "--accelerator-type=$ACCELERATOR" "--runtime-version=$RUNTIME_VERSION" "${CAPACITY_FLAG[@]}"
else
  # shellcheck disable=SC2046
  run gcloud compute tpus tpu-vm create "$TPU_NAME" $(where) \
      "--accelerator-type=$ACCELERATOR" "--version=$RUNTIME_VERSION" "${CAPACITY_FLAG[@]}"
fi
"$TPU_SCRIPTS/wait_ready.sh" "$@"
