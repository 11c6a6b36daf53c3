#!/usr/bin/env bash
# Ship the code at a commit to every worker and install it with its pinned dependencies
# (setup.py's ranges and the tpu extra) into ~/gptjax-venv, with an interpreter of its own
# (uv's Python 3.12: the image's python3 is too old for the pins). Up to SETUP_TIMEOUT s.
#   tpu_scripts/setup.sh --commit=REV [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
"$TPU_SCRIPTS/ship.sh" "$@"
CALL_TIMEOUT="$SETUP_TIMEOUT" on_workers all "bash ~/$REMOTE/current/tpu_scripts/worker/setup.sh"
