#!/usr/bin/env bash
# On a worker: ~/gptjax-venv with the shipped code and its pinned dependencies for TPU.
set -euo pipefail
code="$(cd "$(dirname "$0")/../.." && pwd)"
[[ -d ~/gptjax-venv ]] || python3 -m venv ~/gptjax-venv
# shellcheck disable=SC1090
source ~/gptjax-venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e "$code[tpu]"
echo "worker $(hostname): installed $(cat "$code/COMMIT") with $(python -c 'import jax; print("jax", jax.__version__)')"
