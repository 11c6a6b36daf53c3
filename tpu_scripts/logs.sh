#!/usr/bin/env bash
# Gather every worker's log of a run from the bucket (WORKDIR/logs/worker-I.log, copied there
# by each worker every 30 s and when its trainer exits, so they outlive the slice) into
# logs/RUN/worker-I.log; name the workers whose log is not there; show the first error.
#   tpu_scripts/logs.sh --name=RUN [--workdir=gs://...] [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
name=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --name=* ]] && name="${arg#--name=}"; done
[[ -n "$name" ]] || die "name the run: --name=RUN"
workdir="$(workdir_of "$name")"
workers="$(num_workers --or-formula)"  # the slice may be gone: then the formula
run mkdir -p "logs/$name"
got=() missing=()
for ((i = 0; i < workers; i++)); do
  answer="$(ask "" gcloud storage cp "$workdir/logs/worker-$i.log" "logs/$name/worker-$i.log" 2>&1)"
  if [[ "$answer" == *@NOT_FOUND* ]]; then missing+=("worker-$i (not in the bucket)")
  elif [[ "$answer" == *@ERROR* ]]; then missing+=("worker-$i (${answer##*@ERROR })")
  else got+=("logs/$name/worker-$i.log"); fi
done
$DRY_RUN && exit 0
echo "logs/$name: ${#got[@]} of $workers workers' logs"
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "missing: $(printf '%s; ' "${missing[@]}" | sed 's/; $//')"
fi
[[ ${#got[@]} -gt 0 ]] || { echo "error: no log of $name in $workdir/logs/" >&2; exit 1; }
"$TPU_SCRIPTS/first_error.sh" "${got[@]}"
