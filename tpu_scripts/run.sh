#!/usr/bin/env bash
# Launch a training run on every worker: ship the code at --commit, free the TPU from stale
# processes, start gptjax-train detached with one log per worker (~/gptjax-logs/RUN.log, and
# WORKDIR/logs/worker-I.log in the bucket). The workdir defaults to $BUCKET/runs/RUN;
# launching the same RUN again resumes it. A stop asked with stop.sh is cleared first.
#   tpu_scripts/run.sh --commit=REV --name=RUN [--settings=FILE] [--dry-run] -- \
#       --config=configs/NAME.py[:ARG] [--workdir=...] [--config.a.b=VALUE ...]
# (--watched, from watch.sh: a stop asked meanwhile is kept, and nothing is launched.)
source "$(dirname "$0")/lib.sh"
name="" train=() seen_dashes=false watched=false
for arg in "${ARGS[@]}"; do
  if $seen_dashes; then train+=("$arg"); continue; fi
  case "$arg" in
    --) seen_dashes=true ;;
    --name=*) name="${arg#--name=}" ;;
    --commit=*) ;;
    --watched) watched=true ;;
    *) die "unknown argument $arg (trainer flags go after --)" ;;
  esac
done
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "name the run: --name=RUN (letters, digits, _ . -)"
[[ " ${train[*]:-} " == *" --config="* ]] || die "give the trainer a config: -- --config=configs/NAME.py"
workdir="$(workdir_of "$name")"
[[ " ${train[*]} " == *" --workdir="* ]] || train+=("--workdir=$workdir")
passed=()
for arg in "$@"; do [[ "$arg" == --watched ]] || passed+=("$arg"); done
"$TPU_SCRIPTS/ship.sh" "${passed[@]}"
if $watched; then
  marker="$(ask "@NOT_FOUND" gcloud storage cat "$workdir/stop_requested")"
  if [[ "$marker" != *@NOT_FOUND* ]]; then
    echo "run.sh: $workdir/stop_requested is there (or could not be read): not launching $name" >&2
    exit 3
  fi
else
  retry --absent-ok gcloud storage rm "$workdir/stop_requested"
fi
# the family's libtpu flags on the workers (worker/env.sh), or yours if you set them
remote="ACCELERATOR=$(quote "$ACCELERATOR")"
[[ -z "${LIBTPU_INIT_ARGS+set}" ]] || remote+=" LIBTPU_INIT_ARGS=$(quote "$LIBTPU_INIT_ARGS")"
remote+=" bash ~/$REMOTE/current/tpu_scripts/worker/launch.sh $(quote "$name")"
for arg in "${train[@]}"; do remote+=" $(quote "$arg")"; done
on_workers all "$remote"
echo "started $name on every worker of $TPU_NAME: tpu_scripts/logs.sh --name=$name"
