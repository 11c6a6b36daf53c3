#!/usr/bin/env bash
# On a worker: one line naming what this host would run (tpu_scripts/preflight.sh compares).
#   preflight.sh CONFIG_FILE
set -uo pipefail
code="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck disable=SC1090
source ~/gptjax-venv/bin/activate 2>/dev/null
versions="$(python - <<'PY' 2>/dev/null || echo "jax=missing"
import importlib.metadata as m
def v(name):
  try:
    return m.version(name)
  except m.PackageNotFoundError:
    return "none"
print(f"jax={v('jax')} jaxlib={v('jaxlib')} libtpu={v('libtpu')}")
PY
)"
config="$(sha256sum "$code/$1" 2>/dev/null | cut -c1-12 || echo missing)"
echo "preflight host=$(hostname) commit=$(cat "$code/COMMIT" 2>/dev/null || echo none) $versions config=${config:-missing}"
