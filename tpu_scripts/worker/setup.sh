#!/usr/bin/env bash
# On a worker: ~/gptjax-venv with the shipped code and its pinned dependencies for TPU.
# The TPU images are Ubuntu 22.04, whose python3 (3.10) is older than setup.py's
# python_requires, so the venv gets its own interpreter: uv's managed Python
# (GPTJAX_PYTHON_VERSION, default 3.12), or GPTJAX_PYTHON, an interpreter to use as it is.
# uv itself comes from PyPI (pip install --user uv), python3-pip from apt if pip is missing.
#   GPTJAX_VENV (~/gptjax-venv), GPTJAX_EXTRA (tpu): what to build and with which extra.
set -euo pipefail
code="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${GPTJAX_VENV:-$HOME/gptjax-venv}"
extra="${GPTJAX_EXTRA-tpu}"
say() { echo "worker $(hostname): $*"; }
fail() { echo "error: worker $(hostname): $*" >&2; exit 1; }
minimum="$(grep -oE 'python_requires=">=[0-9.]+' "$code/setup.py" | grep -oE '[0-9.]+$')"
[[ -n "$minimum" ]] || fail "no python_requires=\">=X.Y\" in $code/setup.py"

version_of() {  # version_of PYTHON: its major.minor, or nothing if it does not run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}
new_enough() {  # new_enough X.Y: X.Y >= the minimum
  [[ -n "$1" && "$(printf '%s\n%s\n' "$minimum" "$1" | sort -V | head -n 1)" == "$minimum" ]]
}

apt_install() {  # apt_install PACKAGE...: a fresh VM's unattended-upgrades holds apt's lock
  sudo systemctl stop unattended-upgrades 2>/dev/null || true
  sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@"
}

find_uv() {
  export PATH="$HOME/.local/bin:$PATH"  # where pip --user puts uv
  if command -v uv >/dev/null; then return 0; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    say "no pip for python3: installing python3-pip"
    apt_install python3-pip
  fi
  # (--break-system-packages: newer Ubuntu images refuse --user installs without it)
  python3 -m pip install --user --quiet --upgrade uv ||
    python3 -m pip install --user --quiet --upgrade --break-system-packages uv
  command -v uv >/dev/null || fail "pip installed uv but it is not on PATH"
}

find_uv
if [[ -n "${GPTJAX_PYTHON:-}" ]]; then
  python="$GPTJAX_PYTHON"
else
  want="${GPTJAX_PYTHON_VERSION:-3.12}"
  uv python install "$want"
  python="$(uv python find "$want")"
fi
version="$(version_of "$python")"
new_enough "$version" || fail "$python is Python ${version:-that does not run}; setup.py needs >=$minimum"
# A venv from an older setup (the image's python3) cannot take the pins: build it again.
if [[ -d "$venv" ]] && ! new_enough "$(version_of "$venv/bin/python")"; then
  say "replacing $venv (Python $(version_of "$venv/bin/python"), setup.py needs >=$minimum)"
  rm -rf "$venv"
fi
[[ -d "$venv" ]] || uv venv --seed --python "$python" "$venv"
uv pip install --python "$venv/bin/python" -e "$code${extra:+[$extra]}"
say "installed $(cat "$code/COMMIT") with Python $(version_of "$venv/bin/python"), $("$venv/bin/python" -c 'import jax; print("jax", jax.__version__)')"
