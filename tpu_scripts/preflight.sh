#!/usr/bin/env bash
# Before a run: every worker must run the same commit, jax/jaxlib/libtpu and config file.
# Prints each worker's line; exits 1 if they differ or a worker did not answer.
#   tpu_scripts/preflight.sh --config=configs/NAME.py [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
config=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --config=* ]] && config="${arg#--config=}"; done
[[ -n "$config" ]] || die "name the config the run will use: --config=configs/NAME.py"
config="${config%%:*}"  # configs/NAME.py:ARG -> the file
workers="$NUM_WORKERS"
# shellcheck disable=SC2046
answers="$(query "" gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(where) --worker=all \
  "--command=bash ~/$REMOTE/current/tpu_scripts/worker/preflight.sh $(quote "$config")")"
$DRY_RUN && exit 0
lines="$(grep '^preflight ' <<< "$answers" || true)"
echo "$lines"
count="$(grep -c . <<< "$lines" || true)"
distinct="$(sed 's/ host=[^ ]*//' <<< "$lines" | sort -u | grep -c . || true)"
if [[ "$count" -ne "$workers" ]]; then
  echo "preflight: $count of $workers workers answered" >&2; exit 1
fi
if [[ "$distinct" -ne 1 ]]; then
  echo "preflight: the workers differ (above): run tpu_scripts/setup.sh --commit=REV again" >&2
  exit 1
fi
echo "preflight: all $workers workers agree"
