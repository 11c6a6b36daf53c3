#!/usr/bin/env bash
# On a worker: one line naming what this host would run (tpu_scripts/preflight.sh compares
# the lines, and checks Python and jax against setup.py).
#   preflight.sh CONFIG_FILE
set -uo pipefail
code="$(cd "$(dirname "$0")/../.." && pwd)"
python="${GPTJAX_VENV:-$HOME/gptjax-venv}/bin/python"
versions="$("$python" - <<'PY' 2>/dev/null || echo "python=missing jax=missing"
import importlib.metadata as m
import platform
def v(name):
  try:
    return m.version(name)
  except m.PackageNotFoundError:
    return "none"
print(f"python={platform.python_version()} jax={v('jax')} jaxlib={v('jaxlib')} libtpu={v('libtpu')}")
PY
)"
config="$(sha256sum "$code/$1" 2>/dev/null | cut -c1-12 || echo missing)"
echo "preflight host=$(hostname) commit=$(cat "$code/COMMIT" 2>/dev/null || echo none) $versions config=${config:-missing}"
