#!/usr/bin/env bash
# Create the TPU VM slice of the settings (through a queued resource when QUEUED=true) and
# wait until it is ready. One of the same name already there is reused if it is alive or
# still queued, deleted first if it FAILED, was SUSPENDED (preempted) or PREEMPTED.
#   tpu_scripts/create.sh [--settings=FILE] [--dry-run]        (POLL_SECONDS=60)
source "$(dirname "$0")/lib.sh"
create() {
  if [[ "$QUEUED" == true ]]; then
    RETRIES=1 retry gcloud compute tpus queued-resources create "$TPU_NAME" "--node-id=$TPU_NAME" \
        "${WHERE[@]}" "--accelerator-type=$ACCELERATOR" "--runtime-version=$RUNTIME_VERSION" \
        "${CAPACITY_FLAG[@]}"
  else
    RETRIES=1 retry gcloud compute tpus tpu-vm create "$TPU_NAME" "${WHERE[@]}" \
        "--accelerator-type=$ACCELERATOR" "--version=$RUNTIME_VERSION" "${CAPACITY_FLAG[@]}"
  fi
}
what="TPU VM"; [[ "$QUEUED" == true ]] && what="queued resource"
for ((try = 1; ; try++)); do
  if [[ "$QUEUED" == true ]]; then state="$(qr_state NOT_FOUND)"
  else state="$(node_state NOT_FOUND)"; fi
  case "$state" in
    NOT_FOUND) create && break ;;  # a failed create: ask again what is there
    ACTIVE|READY) echo "$what $TPU_NAME is already $state: reusing it"; break ;;
    WAITING_FOR_RESOURCES|PROVISIONING|ACCEPTED|CREATING|STARTING|RESTARTING|REPAIRING)
      echo "$what $TPU_NAME is already there ($state): waiting for it"; break ;;
    FAILED|SUSPENDED|PREEMPTED|TERMINATED|STOPPED)
      echo "$what $TPU_NAME is $state: deleting it to ask again"
      "$TPU_SCRIPTS/delete.sh" "$@" || true ;;
    *) echo "$what $TPU_NAME: ${state:-no state}; asking again" ;;  # SUSPENDING, DELETING, an error
  esac
  (( try < 30 )) || die "$what $TPU_NAME still ${state:-without a state} after $try tries"
  sleep "${POLL_SECONDS:-60}"
done
"$TPU_SCRIPTS/wait_ready.sh" "$@"
