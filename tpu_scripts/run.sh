#!/usr/bin/env bash
# Launch a training run on every worker: ship the code at --commit, free the TPU from stale
# processes, start gptjax-train detached with one log per worker (~/gptjax-logs/RUN.log).
# The workdir defaults to $BUCKET/runs/RUN; launching the same RUN again resumes it.
#   tpu_scripts/run.sh --commit=REV --name=RUN [--settings=FILE] [--dry-run] -- \
#       --config=configs/NAME.py[:ARG] [--workdir=...] [--config.a.b=VALUE ...]
source "$(dirname "$0")/lib.sh"
name="" train=() seen_dashes=false
for arg in "${ARGS[@]}"; do
  if $seen_dashes; then train+=("$arg"); continue; fi
  case "$arg" in
    --) seen_dashes=true ;;
    --name=*) name="${arg#--name=}" ;;
    --commit=*) ;;
    *) die "unknown argument $arg (trainer flags go after --)" ;;
  esac
done
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "name the run: --name=RUN (letters, digits, _ . -)"
[[ " ${train[*]:-} " == *" --config="* ]] || die "give the trainer a config: -- --config=configs/NAME.py"
[[ " ${train[*]} " == *" --workdir="* ]] || train+=("--workdir=$BUCKET/runs/$name")
"$TPU_SCRIPTS/ship.sh" "$@"
remote="bash ~/$REMOTE/current/tpu_scripts/worker/launch.sh $(quote "$name")"
for arg in "${train[@]}"; do remote+=" $(quote "$arg")"; done
on_workers all "$remote"
echo "started $name on $NUM_WORKERS workers: tpu_scripts/logs.sh --name=$name"
