#!/usr/bin/env bash
# Keep a run going on spot capacity. Every POLL_SECONDS it reads the run's state in the bucket
# and the slice's:
# - WORKDIR/finished.json there (the trainer wrote it after its last step): done, exit 0;
# - WORKDIR/stop_requested there (tpu_scripts/stop.sh): stopped by you, exit 0, no relaunch;
# - the queued resource FAILED or SUSPENDED, the VM PREEMPTED or TERMINATED, or either gone
#   (gcloud says NOT_FOUND): delete, create, set up and relaunch; the run resumes from its
#   newest checkpoint in the bucket;
# - the slice READY and the run's process ended on every worker, whatever the exit codes (a
#   host that died takes the others down through the heartbeat with other codes; 75 is a
#   preemption notice): relaunch; not running anywhere yet: launch;
# - anything else (creating, some workers still running, a describe or ssh that failed or
#   timed out): ask again at the next poll. Nothing is deleted on an error. (Workers still
#   running 3 polls after the others ended are taken as hung: relaunched, which stops them.)
# The cap: --max_restarts=N (default 5) relaunches in a row without a new checkpoint; the
# count starts again whenever the newest checkpoint step in the bucket advances.
# Starting it clears an earlier stop request (as run.sh does).
#   tpu_scripts/watch.sh --commit=REV --name=RUN [--max_restarts=N] [--settings=FILE]
#       [--dry-run] -- TRAINER FLAGS (as run.sh)          (POLL_SECONDS=300)
source "$(dirname "$0")/lib.sh"
name="" max_restarts=5 passed=()
for arg in "$@"; do
  case "$arg" in
    --max_restarts=*) max_restarts="${arg#--max_restarts=}" ;;
    *) passed+=("$arg") ;;
  esac
done
for arg in "${ARGS[@]}"; do [[ "$arg" == --name=* ]] && name="${arg#--name=}"; done
[[ -n "$name" ]] || die "name the run: --name=RUN"
[[ "$max_restarts" =~ ^[0-9]+$ ]] || die "--max_restarts=$max_restarts is not a number"
workdir="$(workdir_of "$name")"
say() { echo "watch: $*"; }

retry --absent-ok gcloud storage rm "$workdir/stop_requested"
last_step="$(newest_step "$workdir")"
[[ "$last_step" != "?" ]] || last_step=-1
without_progress=0
relaunch() {  # relaunch WHY: one more relaunch; too many without a new checkpoint end the watch
  local step
  step="$(newest_step "$workdir")"
  if [[ "$step" != "?" ]] && (( step > last_step )); then last_step="$step" without_progress=0; fi
  without_progress=$((without_progress + 1))
  if (( without_progress > max_restarts )); then
    echo "error: $1, and the run made no new checkpoint (newest: step $last_step) in" \
         "$max_restarts relaunches (--max_restarts=$max_restarts): tpu_scripts/logs.sh --name=$name" >&2
    exit 1
  fi
  say "$1; relaunch $without_progress of at most $max_restarts without a new checkpoint (newest: step $last_step)"
}
launch() {  # run.sh from here: a stop asked meanwhile wins (--watched)
  "$TPU_SCRIPTS/run.sh" --watched "${passed[@]}" ||
    say "launching failed (above): looking again at the next poll"
}
recreate() {
  { "$TPU_SCRIPTS/delete.sh" "${passed[@]}" && "$TPU_SCRIPTS/create.sh" "${passed[@]}" &&
    "$TPU_SCRIPTS/setup.sh" "${passed[@]}" && launch; } ||
    say "recreating $TPU_NAME failed (above): looking again at the next poll"
}
bucket_state() {  # finished, stopped, open (neither), or unknown (the bucket did not answer)
  local answer
  answer="$(ask "@NOT_FOUND" gcloud storage cat "$workdir/finished.json")"
  case "$answer" in
    *@NOT_FOUND*) ;;
    *@ERROR*) say "could not read $workdir/finished.json (${answer##*@ERROR })" >&3
              echo unknown; return ;;
    *) say "$name finished: $workdir/finished.json says ${answer//$'\n'/ }" >&3
       echo finished; return ;;
  esac
  answer="$(ask "@NOT_FOUND" gcloud storage cat "$workdir/stop_requested")"
  case "$answer" in
    *@NOT_FOUND*) echo open ;;
    *@ERROR*) say "could not read $workdir/stop_requested (${answer##*@ERROR })" >&3; echo unknown ;;
    *) say "stop requested (${answer//$'\n'/ }): not relaunching $name" >&3; echo stopped ;;
  esac
}
slice_state() {  # READY, GONE <why>, or WAIT <why>
  local state="ACTIVE"
  if [[ "$QUEUED" == true ]]; then
    state="$(qr_state ACTIVE)"
    case "$state" in
      ACTIVE) ;;
      FAILED|SUSPENDED) echo "GONE queued resource $TPU_NAME is $state"; return ;;
      NOT_FOUND) echo "GONE there is no queued resource $TPU_NAME"; return ;;
      *) echo "WAIT queued resource $TPU_NAME: ${state:-no state}"; return ;;
    esac
  fi
  state="$(node_state READY)"
  case "$state" in
    READY) echo READY ;;
    PREEMPTED|TERMINATED|STOPPED) echo "GONE $TPU_NAME is $state" ;;
    NOT_FOUND) echo "GONE there is no TPU VM $TPU_NAME" ;;
    *) echo "WAIT $TPU_NAME: ${state:-no state}" ;;
  esac
}
# on each worker: "run-state HOST CODE|running|absent" (absent: never launched on this slice)
probe="s=\$(cat ~/$LOGS/$name.exit 2>/dev/null || { kill -0 \"\$(cat ~/$LOGS/$name.pid 2>/dev/null)\" \
2>/dev/null && echo running; } || echo absent); echo \"run-state \$(hostname) \$s\""
launched=false workers="" partial=0
while true; do
  bucket="$(bucket_state)"
  [[ "$bucket" == finished || "$bucket" == stopped ]] && exit 0
  slice="$(slice_state)"
  case "$slice" in
    GONE*)
      if [[ "$bucket" == open ]]; then
        relaunch "${slice#GONE }"; workers="" launched=true; recreate
      else say "${slice#GONE }, but the bucket did not answer: looking again at the next poll"; fi ;;
    WAIT*) say "${slice#WAIT }; waiting" ;;
    READY)
      answers="$(ask "$(for ((i = 0; i < FORMULA; i++)); do echo "run-state w$i running"; done)" \
        gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" --worker=all "${SSH_FLAGS[@]}" \
        "--command=$probe")"
      [[ -n "$workers" ]] || workers="$(num_workers)" || workers=""  # once per slice
      # (the marker found anywhere in a line: gcloud may prefix a worker's output)
      states="$(grep -oE 'run-state [^ ]+ [^ ]+$' <<< "$answers" | cut -d' ' -f3 || true)"
      answered="$(grep -c . <<< "$states" || true)"
      running="$(grep -c '^running$' <<< "$states" || true)"
      absent="$(grep -c '^absent$' <<< "$states" || true)"
      codes="$(grep -E '^[0-9]+$' <<< "$states" | sort -n | uniq -c |
               awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}' || true)"
      note=""; [[ "$answers" != *@ERROR* ]] || note=" (${answers##*@ERROR })"
      waited="$partial" partial=0
      if [[ -z "$workers" || "$answered" -lt "$workers" ]]; then
        say "$answered of ${workers:-?} workers answered$note; asking again at the next poll"
      elif (( running == workers )); then
        :  # running
      elif (( running > 0 )); then  # a host died: the heartbeat ends the others, or 3 polls do
        partial=$((waited + 1))
        if (( partial <= 3 )); then
          say "$name exited on $((workers - running)) workers (codes: ${codes:-none}), still" \
              "running on $running: waiting for those to end"
        elif [[ "$bucket" == open ]]; then
          relaunch "$name still running on $running workers 3 polls after the others ended$(
                   ) (codes: ${codes:-none}): taken as hung"
          launched=true partial=0; launch
        fi
      elif (( absent == workers )) && ! $launched; then
        say "$name is not running on $TPU_NAME: launching it"
        launched=true; launch
      elif [[ "$bucket" == open ]]; then
        (( absent == 0 )) || codes+="${codes:+, }absent x$absent"
        relaunch "$name ended on every worker (exit codes: $codes)"
        launched=true; launch
      else
        say "$name ended on every worker, but the bucket did not answer: looking again later"
      fi ;;
  esac
  $DRY_RUN && exit 0
  sleep "${POLL_SECONDS:-300}"
done
