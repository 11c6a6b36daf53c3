#!/usr/bin/env bash
# The slice's state and health, and each worker's runs (running or their exit code). Each
# part is asked even when another fails (a queued resource that is gone, a worker that does
# not answer); exits 1 if any failed.
#   tpu_scripts/status.sh [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
failed=0
if [[ "$QUEUED" == true ]]; then
  answer="$(ask ACTIVE gcloud compute tpus queued-resources describe "$TPU_NAME" "${WHERE[@]}" \
            '--format=value(state.state)')"
  echo "queued resource $TPU_NAME: ${answer#@}"
  [[ "$answer" != *@* ]] || failed=1
fi
answer="$(ask "READY HEALTHY" gcloud compute tpus tpu-vm describe "$TPU_NAME" "${WHERE[@]}" \
          '--format=value(state,health)')"
echo "TPU VM $TPU_NAME: ${answer#@}"
[[ "$answer" != *@* ]] || failed=1
RETRIES=1 on_workers all "bash ~/$REMOTE/current/tpu_scripts/worker/status.sh" || failed=1
exit "$failed"
