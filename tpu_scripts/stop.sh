#!/usr/bin/env bash
# Stop a run for good: WORKDIR/stop_requested in the bucket first (watch.sh sees it and does
# not relaunch), then, on every worker, SIGTERM as a preemption would: the run saves a
# checkpoint at a step all processes agree on and exits 75. run.sh with the same name (or
# watch.sh) clears the request and resumes. Waits up to STOP_TIMEOUT s for the checkpoint.
#   tpu_scripts/stop.sh --name=RUN [--workdir=gs://...] [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
name=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --name=* ]] && name="${arg#--name=}"; done
[[ -n "$name" ]] || die "name the run: --name=RUN"
retry "--stdin=stopped by ${USER:-someone} at $(date -u +%FT%TZ)" \
    gcloud storage cp - "$(workdir_of "$name")/stop_requested"
CALL_TIMEOUT="$STOP_TIMEOUT" on_workers all "bash ~/$REMOTE/current/tpu_scripts/worker/stop.sh $(quote "$name")"
