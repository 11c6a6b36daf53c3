#!/usr/bin/env bash
# Wait until the TPU VM is READY (a queued resource may wait hours for capacity). Stops with
# one line when it never will be: a queued resource FAILED (a bad runtime version, no quota:
# gcloud's reason shown), SUSPENDED or gone, a VM PREEMPTED or TERMINATED.
#   tpu_scripts/wait_ready.sh [--settings=FILE] [--dry-run]   (POLL_SECONDS=60)
source "$(dirname "$0")/lib.sh"
qr="ACTIVE"
while true; do
  if [[ "$QUEUED" == true ]]; then
    qr="$(qr_state ACTIVE)"
    case "$qr" in
      FAILED)
        why="$(ask "" gcloud compute tpus queued-resources describe "$TPU_NAME" "${WHERE[@]}" \
               '--format=value(state.failedData.error.message)')"
        why="${why%%$'\n'*}" why="${why#@}"
        die "queued resource $TPU_NAME FAILED: ${why:-gcloud gives no reason}" ;;
      SUSPENDING|SUSPENDED|DELETING) die "queued resource $TPU_NAME is $qr: delete.sh, then create.sh" ;;
      NOT_FOUND) die "there is no queued resource $TPU_NAME: create.sh" ;;
    esac
  fi
  if [[ "$qr" == ACTIVE ]]; then  # the node exists only once its queued resource is ACTIVE
    state="$(node_state READY)"
    case "$state" in
      READY) echo "$TPU_NAME is READY"; exit 0 ;;
      PREEMPTED|TERMINATED|STOPPED) die "$TPU_NAME is $state: delete.sh, then create.sh" ;;
      NOT_FOUND) [[ "$QUEUED" == true ]] || die "there is no TPU VM $TPU_NAME: create.sh" ;;
    esac
    echo "$TPU_NAME: ${state:-no state yet}; waiting"
  else
    echo "$TPU_NAME: queued resource ${qr:-without a state}; waiting"
  fi
  $DRY_RUN && exit 0
  sleep "${POLL_SECONDS:-60}"
done
