# What every tpu_scripts command shares: flags, settings, and one way to run gcloud.
# shellcheck shell=bash
# Every command is printed before it runs ("+ gcloud ..."); with --dry-run it is only printed.
# Every gcloud call runs under `timeout`; the ones that can fail for a while (ssh to a fresh
# VM, an API hiccup) are tried again with a doubling wait (RETRIES, RETRY_SECONDS).
set -euo pipefail
exec 3>&1  # the shown commands go here: to the terminal even from inside $(...)
die() { echo "error: $*" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root: commands name paths from it
TPU_SCRIPTS=tpu_scripts
DRY_RUN=false
SETTINGS="$TPU_SCRIPTS/settings.sh"
ARGS=()  # the command's own arguments, in order
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=true ;;
    --settings=*) SETTINGS="$(cd "$OLDPWD" && realpath "${arg#--settings=}")" || die "no such settings file: ${arg#--settings=}" ;;
    *) ARGS+=("$arg") ;;
  esac
done
if [[ ! -f "$SETTINGS" ]]; then
  echo "error: settings file $SETTINGS not found: pass --settings=FILE" >&2; exit 2
fi
# shellcheck source=settings.sh
source "$SETTINGS"
[[ "$SETTINGS" == "$TPU_SCRIPTS/settings.sh" ]] || source "$TPU_SCRIPTS/settings.sh"  # defaults
# shellcheck disable=SC2034  # (REMOTE, LOGS, CAPACITY_FLAG: for the scripts that source this)
REMOTE=gptjax           # on each worker: ~/gptjax/<commit>/ and ~/gptjax/current -> newest
# shellcheck disable=SC2034
LOGS=gptjax-logs        # on each worker: ~/gptjax-logs/<run>.{log,exit,pid}
# gcloud's error for a resource or object that does not exist (as opposed to a failed call)
NOT_FOUND_RE='NOT_FOUND|not found|matched no objects|No URLs matched'

# A word as a shell would need it: bare when safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then printf '%s' "$1"; else printf '%s' "${1@Q}"; fi
}

show() {  # print a command as it would be typed
  local out="+" word
  for word in "$@"; do out+=" $(quote "$word")"; done
  echo "$out" >&3
}

run() {  # print, then run unless --dry-run
  show "$@"
  $DRY_RUN || "$@"
}

query() {  # a read-only command whose output the script needs: printed; in --dry-run, $2
  local fallback="$1"; shift
  show "$@"
  if $DRY_RUN; then echo "$fallback"; else "$@"; fi
}

# ask FALLBACK CMD...: a read-only gcloud call (printed; in --dry-run FALLBACK is its answer)
# that never fails: its output, then "@NOT_FOUND" if the error says the thing does not exist,
# or "@ERROR <the error's first line>" for any other failure (an API error, expired
# credentials, a timeout): the caller tells "gone" from "could not ask".
ask() {
  local fallback="$1" err rc=0; shift
  show "$@"
  if $DRY_RUN; then echo "$fallback"; return 0; fi
  err="$(mktemp)"
  timeout -k 10 "$GCLOUD_TIMEOUT" "$@" 2>"$err" </dev/null || rc=$?
  if (( rc == 124 )); then
    echo "@ERROR timed out after ${GCLOUD_TIMEOUT}s"
  elif (( rc != 0 )) && grep -qE "$NOT_FOUND_RE" "$err"; then
    echo "@NOT_FOUND"
  elif (( rc != 0 )); then
    echo "@ERROR exit $rc: $(grep -m1 '^ERROR' "$err" || grep -m1 . "$err" || true)"
  fi
  rm -f "$err"
}

# retry [--absent-ok] [--stdin=TEXT] CMD...: print, then run under timeout (CALL_TIMEOUT,
# else GCLOUD_TIMEOUT seconds) up to RETRIES times, waiting RETRY_SECONDS, doubling, between
# tries. --absent-ok: "not found" is success (deleting what is already gone); --stdin: the
# command's input, given again to every try (else none: no call can wait for a keyboard).
retry() {
  local absent_ok=false input=/dev/null
  local limit="${CALL_TIMEOUT:-$GCLOUD_TIMEOUT}" try=1 delay="$RETRY_SECONDS" rc err why
  err="$(mktemp)"
  while [[ "$1" == --absent-ok || "$1" == --stdin=* ]]; do
    if [[ "$1" == --absent-ok ]]; then absent_ok=true; else input="$err.in"; echo "${1#--stdin=}" > "$input"; fi
    shift
  done
  show "$@"
  $DRY_RUN && { rm -f "$err" "$err.in"; return 0; }
  while true; do
    # its error shown as it comes and kept (in $err) to be read: "not found"?
    { { timeout -k 10 "$limit" "$@" < "$input" 2>&1 1>&4 4>&- && rc=0 || rc=$?
        echo "$rc" > "$err.rc"; } | tee "$err" >&2; } 4>&1
    rc="$(cat "$err.rc")"
    if (( rc == 0 )) || { $absent_ok && grep -qE "$NOT_FOUND_RE" "$err"; }; then
      rm -f "$err" "$err.rc" "$err.in"; return 0
    fi
    if (( rc == 124 )); then why="timed out after ${limit}s"; else why="exit $rc"; fi
    if (( try >= RETRIES )); then
      echo "error: ${*:1:5} ... failed $try times (last: $why)" >&2
      rm -f "$err" "$err.rc" "$err.in"; return "$rc"
    fi
    echo "retry: $why; try $((try + 1)) of $RETRIES in ${delay}s" >&2
    sleep "$delay"
    delay=$(( delay * 2 > 300 ? 300 : delay * 2 ))
    try=$((try + 1))
  done
}

WHERE=("--project=$PROJECT" "--zone=$ZONE")
# ssh and scp: no prompt (gcloud makes its key without one), a recreated slice's new host keys
# accepted, a connection that does not open in SSH_CONNECT_TIMEOUT s or stops answering for
# 2 minutes dropped (so a hung worker cannot block the watcher), optionally internal IPs.
SSH_FLAGS=(--quiet "--strict-host-key-checking=$HOST_KEY_CHECKING")
SCP_FLAGS=("${SSH_FLAGS[@]}")
for option in "ConnectTimeout=$SSH_CONNECT_TIMEOUT" ServerAliveInterval=30 ServerAliveCountMax=4; do
  SSH_FLAGS+=("--ssh-flag=-o$option") SCP_FLAGS+=("--scp-flag=-o$option")
done
if [[ "$INTERNAL_IP" == true ]]; then SSH_FLAGS+=(--internal-ip) SCP_FLAGS+=(--internal-ip); fi

on_workers() {  # on_workers all|I COMMAND: one shell command on every worker, or on worker I
  local worker="$1"; shift
  retry gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" "--worker=$worker" \
      "${SSH_FLAGS[@]}" "--command=$*"
}

workdir_of() {  # workdir_of RUN: the run's workdir, --workdir= among the arguments or the default
  local dir="$BUCKET/runs/$1" arg
  for arg in "${ARGS[@]}"; do [[ "$arg" == --workdir=* ]] && dir="${arg#--workdir=}"; done
  echo "${dir%/}"
}

newest_step() {  # newest_step WORKDIR: the newest checkpoint's step, -1 for none, ? if unknown
  local listing
  listing="$(ask "" gcloud storage ls "$1/checkpoints/")"
  case "$listing" in
    *@ERROR*) echo "?" ;;
    *) { grep -oE '/checkpoints/[0-9]+/?$' <<< "$listing" || true; } | tr -dc '0-9\n' \
         | sort -n | tail -n 1 | grep . || echo -1 ;;  # Orbax's *.orbax-checkpoint-tmp-* skipped
  esac
}

# Checked once, here: a mistake in the settings stops every command before it runs anything.
# shellcheck disable=SC2034
case "$CAPACITY" in
  spot) CAPACITY_FLAG=(--spot) ;;
  reserved) CAPACITY_FLAG=(--reserved) ;;
  on-demand) CAPACITY_FLAG=() ;;
  *) die "CAPACITY=$CAPACITY must be spot, reserved or on-demand" ;;
esac
[[ "$QUEUED" == true || "$QUEUED" == false ]] || die "QUEUED=$QUEUED must be true or false"
[[ "$INTERNAL_IP" == true || "$INTERNAL_IP" == false ]] || die "INTERNAL_IP=$INTERNAL_IP must be true or false"
FAMILY="${ACCELERATOR%-*}" SIZE="${ACCELERATOR##*-}"
[[ "$SIZE" =~ ^[0-9]+$ && "$FAMILY" != "$ACCELERATOR" ]] || die "ACCELERATOR=$ACCELERATOR is not TYPE-SIZE (e.g. v5p-32)"
# Each family's image (cloud.google.com/tpu/docs/runtimes) and hosts: v2-v5p count
# TensorCores, 8 a host; v5e and v6e count chips, 4 a host in a multi-host slice.
case "$FAMILY" in
  v2|v3|v4) IMAGE=tpu-ubuntu2204-base FORMULA=$(( SIZE > 8 ? SIZE / 8 : 1 )) ;;
  v5p) IMAGE=v2-alpha-tpuv5 FORMULA=$(( SIZE > 8 ? SIZE / 8 : 1 )) ;;
  v5litepod|v5e) IMAGE=v2-alpha-tpuv5-lite FORMULA=$(( SIZE > 8 ? SIZE / 4 : 1 )) ;;
  v6e) IMAGE=v2-alpha-tpuv6e FORMULA=$(( SIZE > 8 ? SIZE / 4 : 1 )) ;;
  *) [[ -n "$RUNTIME_VERSION" && -n "$NUM_WORKERS" ]] ||
       die "unknown accelerator type $ACCELERATOR: set RUNTIME_VERSION and NUM_WORKERS in the settings"
     IMAGE="" FORMULA="$NUM_WORKERS" ;;
esac
RUNTIME_VERSION="${RUNTIME_VERSION:-$IMAGE}"

# num_workers [--or-formula]: the slice's hosts: NUM_WORKERS if set, else counted from the
# slice's network endpoints (one per host). The formula from ACCELERATOR answers only in
# --dry-run, or with --or-formula when the slice is gone (logs.sh after a delete).
num_workers() {
  if [[ -n "$NUM_WORKERS" ]]; then echo "$NUM_WORKERS"; return 0; fi
  local answer count
  answer="$(ask "" gcloud compute tpus tpu-vm describe "$TPU_NAME" "${WHERE[@]}" \
            '--format=value(networkEndpoints[].ipAddress)')"
  if $DRY_RUN; then echo "$FORMULA"; return 0; fi
  count="$(grep -oE '[0-9]+(\.[0-9]+){3}' <<< "$answer" | grep -c . || true)"
  if (( count > 0 )); then echo "$count"; return 0; fi
  if [[ "${1:-}" == --or-formula ]]; then
    echo "($TPU_NAME: no network endpoints (${answer#@}); $FORMULA workers from $ACCELERATOR)" >&2
    echo "$FORMULA"; return 0
  fi
  die "could not count the workers of $TPU_NAME (${answer#@}): is it READY? or set NUM_WORKERS"
}

# The queued resource's state (state.state: WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE,
# FAILED, SUSPENDING, SUSPENDED, ...) or the node's (READY, CREATING, PREEMPTED, ...), or
# NOT_FOUND, or "ERROR <why>" when it could not be asked. $1: the --dry-run answer.
qr_state() {
  local answer
  answer="$(ask "$1" gcloud compute tpus queued-resources describe "$TPU_NAME" "${WHERE[@]}" \
            '--format=value(state.state)')"
  answer="${answer##*$'\n'}"; echo "${answer#@}"
}
node_state() {
  local answer
  answer="$(ask "$1" gcloud compute tpus tpu-vm describe "$TPU_NAME" "${WHERE[@]}" \
            '--format=value(state)')"
  answer="${answer##*$'\n'}"; echo "${answer#@}"
}
