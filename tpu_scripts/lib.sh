# What every tpu_scripts command shares: flags, settings, and one way to run gcloud.
# Every command is printed before it runs ("+ gcloud ..."); with --dry-run it is only printed.
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
REMOTE=gptjax           # on each worker: ~/gptjax/<commit>/ and ~/gptjax/current -> newest
LOGS=gptjax-logs        # on each worker: ~/gptjax-logs/<run>.{log,exit,pid}

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

where() { echo "--project=$PROJECT" "--zone=$ZONE"; }

on_workers() {  # on_workers all|I COMMAND: one shell command on every worker, or on worker I
  local worker="$1"; shift
  # shellcheck disable=SC2046
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(where) "--worker=$worker" "--command=$*"
}

# Checked once, here: a mistake in the settings stops every command before it runs anything.
case "$CAPACITY" in
  spot) CAPACITY_FLAG=(--spot) ;;
  reserved) CAPACITY_FLAG=(--reserved) ;;
  on-demand) CAPACITY_FLAG=() ;;
  *) die "CAPACITY=$CAPACITY must be spot, reserved or on-demand" ;;
esac
[[ "$QUEUED" == true || "$QUEUED" == false ]] || die "QUEUED=$QUEUED must be true or false"
# The slice's hosts: NUM_WORKERS, or from the accelerator type.
if [[ -z "$NUM_WORKERS" ]]; then
  family="${ACCELERATOR%-*}" n="${ACCELERATOR##*-}"
  [[ "$n" =~ ^[0-9]+$ ]] || die "ACCELERATOR=$ACCELERATOR is not TYPE-SIZE (e.g. v5p-32)"
  case "$family" in
    v2|v3|v4|v5p) NUM_WORKERS=$(( n > 8 ? n / 8 : 1 )) ;;        # n TensorCores, 8 a host
    v5litepod|v5e|v6e) NUM_WORKERS=$(( n > 8 ? n / 4 : 1 )) ;;   # n chips, 4 a host in a pod
    *) die "unknown accelerator type $ACCELERATOR: set NUM_WORKERS in the settings" ;;
  esac
fi
