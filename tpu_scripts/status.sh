#!/usr/bin/env bash
# The slice's state and health, and each worker's runs (running or their exit code).
#   tpu_scripts/status.sh [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2046
[[ "$QUEUED" == true ]] && run gcloud compute tpus queued-resources describe "$TPU_NAME" $(where) \
    '--format=value(state.state)'
# shellcheck disable=SC2046
run gcloud compute tpus tpu-vm describe "$TPU_NAME" $(where) '--format=value(state,health)'
on_workers all "bash ~/$REMOTE/current/tpu_scripts/worker/status.sh"
