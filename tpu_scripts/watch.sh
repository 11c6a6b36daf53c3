#!/usr/bin/env bash
# Keep a run going on spot capacity: when the slice is preempted (or gone), delete it,
# create it again, set it up and relaunch the run, which resumes from its newest checkpoint
# in the bucket; when the run stopped on a preemption notice but the slice lives, relaunch.
# Stops when the run finishes (exit 0), fails (any other exit code) or after --max_restarts.
#   tpu_scripts/watch.sh --commit=REV --name=RUN [--max_restarts=N] [--settings=FILE]
#       [--dry-run] -- TRAINER FLAGS (as run.sh)          (POLL_SECONDS=300)
source "$(dirname "$0")/lib.sh"
name="" max_restarts=20 passed=()
for arg in "$@"; do
  case "$arg" in
    --max_restarts=*) max_restarts="${arg#--max_restarts=}" ;;
    *) passed+=("$arg") ;;
  esac
done
for arg in "${ARGS[@]}"; do [[ "$arg" == --name=* ]] && name="${arg#--name=}"; done
[[ -n "$name" ]] || die "name the run: --name=RUN"
restarts=0
relaunch() {
  restarts=$((restarts + 1))
  (( restarts <= max_restarts )) || die "$restarts restarts, more than --max_restarts=$max_restarts"
  echo "watch: $1; relaunch $restarts of at most $max_restarts"
}
while true; do
  # shellcheck disable=SC2046
  state="$(query READY gcloud compute tpus tpu-vm describe "$TPU_NAME" $(where) \
           '--format=value(state)' 2>/dev/null || echo MISSING)"
  case "$state" in
    *READY*)
      # shellcheck disable=SC2046
      # the run's exit code, "running", or "absent" (never launched on this slice)
      code="$(query 0 gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(where) --worker=0 \
              "--command=cat ~/$LOGS/$name.exit 2>/dev/null || (kill -0 \$(cat ~/$LOGS/$name.pid) && echo running) 2>/dev/null || echo absent" \
              || echo unreachable)"
      code="${code##*$'\n'}"
      case "$code" in
        0) echo "watch: $name finished"; exit 0 ;;
        75) relaunch "$name stopped on a preemption notice"
            "$TPU_SCRIPTS/run.sh" "${passed[@]}" ;;
        absent) echo "watch: $name is not running on $TPU_NAME: launching it"
            "$TPU_SCRIPTS/run.sh" "${passed[@]}" ;;
        running|unreachable) ;;
        *) echo "watch: $name failed with exit code $code: tpu_scripts/logs.sh --name=$name" >&2
           exit 1 ;;
      esac ;;
    *CREATING*|*STARTING*|*RESTARTING*|*REPAIRING*) ;;
    *)  # PREEMPTED, TERMINATED, or no slice at all
      relaunch "$TPU_NAME is ${state:-missing}"
      "$TPU_SCRIPTS/delete.sh" "${passed[@]}" || true
      "$TPU_SCRIPTS/create.sh" "${passed[@]}"
      "$TPU_SCRIPTS/setup.sh" "${passed[@]}"
      "$TPU_SCRIPTS/run.sh" "${passed[@]}" ;;
  esac
  $DRY_RUN && exit 0
  sleep "${POLL_SECONDS:-300}"
done
