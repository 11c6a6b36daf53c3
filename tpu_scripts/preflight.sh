#!/usr/bin/env bash
# Before a run: every worker must answer, with a Python and jax that setup.py accepts, and
# all with the same commit, jax/jaxlib/libtpu and config file. Prints each worker's line;
# exits 1 with one line saying what is wrong.
#   tpu_scripts/preflight.sh --config=configs/NAME.py [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
config=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --config=* ]] && config="${arg#--config=}"; done
[[ -n "$config" ]] || die "name the config the run will use: --config=configs/NAME.py"
config="${config%%:*}"  # configs/NAME.py:ARG -> the file
workers="$(num_workers)"
answers="$(ask "" gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" --worker=all \
  "${SSH_FLAGS[@]}" "--command=bash ~/$REMOTE/current/tpu_scripts/worker/preflight.sh $(quote "$config")")"
$DRY_RUN && exit 0
lines="$(grep -oE 'preflight host=.*' <<< "$answers" || true)"  # (gcloud may prefix a line)
echo "$lines"
bad() { echo "preflight: $*" >&2; exit 1; }
count="$(grep -c . <<< "$lines" || true)"
note=""; [[ "$answers" != *@ERROR* ]] || note=" (${answers##*@ERROR })"
[[ "$count" -eq "$workers" ]] || bad "$count of $workers workers answered$note"
# What setup.py asks for: python_requires=">=X.Y" and "jax>=LOW,<HIGH"
python_min="$(grep -oE 'python_requires=">=[0-9.]+' setup.py | grep -oE '[0-9.]+$')"
jax_pin="$(grep -oE '"jax>=[0-9.]+,<[0-9.]+"' setup.py | tr -d '"')"
jax_low="${jax_pin#jax>=}" jax_low="${jax_low%,*}" jax_high="${jax_pin#*<}"
at_least() {  # at_least VERSION MINIMUM
  [[ "$1" =~ ^[0-9] && "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}
while read -r line; do
  host="$(grep -oE 'host=[^ ]+' <<< "$line")" host="${host#host=}"
  python="$(grep -oE 'python=[^ ]+' <<< "$line" || echo python=missing)" python="${python#python=}"
  jax="$(grep -oE ' jax=[^ ]+' <<< "$line" || echo " jax=missing")" jax="${jax# jax=}"
  fix="run tpu_scripts/setup.sh --commit=REV"
  at_least "$python" "$python_min" ||
    bad "worker $host runs Python $python, setup.py needs >=$python_min: $fix"
  if ! at_least "$jax" "$jax_low" || at_least "$jax" "$jax_high"; then
    bad "worker $host has jax $jax, setup.py needs $jax_pin: $fix"
  fi
done <<< "$lines"
# shellcheck disable=SC2001
distinct="$(sed 's/ host=[^ ]*//' <<< "$lines" | sort -u | grep -c . || true)"
[[ "$distinct" -eq 1 ]] || bad "the workers differ (above): run tpu_scripts/setup.sh --commit=REV again"
echo "preflight: all $workers workers agree"
