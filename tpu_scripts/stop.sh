#!/usr/bin/env bash
# Stop a run on every worker the way a preemption does: SIGTERM, so it saves a checkpoint
# at a step all processes agree on and exits; run.sh with the same name resumes it.
#   tpu_scripts/stop.sh --name=RUN [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
name=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --name=* ]] && name="${arg#--name=}"; done
[[ -n "$name" ]] || die "name the run: --name=RUN"
on_workers all "bash ~/$REMOTE/current/tpu_scripts/worker/stop.sh $(quote "$name")"
