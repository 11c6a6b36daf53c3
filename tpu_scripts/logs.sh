#!/usr/bin/env bash
# Gather every worker's log of a run into logs/RUN/worker-I.log and show the first error.
#   tpu_scripts/logs.sh --name=RUN [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
name=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --name=* ]] && name="${arg#--name=}"; done
[[ -n "$name" ]] || die "name the run: --name=RUN"
run mkdir -p "logs/$name"
for ((i = 0; i < $NUM_WORKERS; i++)); do
  # shellcheck disable=SC2046
  run gcloud compute tpus tpu-vm scp "$TPU_NAME:$LOGS/$name.log" "logs/$name/worker-$i.log" \
      $(where) "--worker=$i"
done
$DRY_RUN && exit 0
"$TPU_SCRIPTS/first_error.sh" "logs/$name"/worker-*.log
