#!/usr/bin/env bash
# Ship the code at a commit to every worker and install it with its pinned dependencies
# (setup.py's ranges and the tpu extra) into ~/gptjax-venv.
#   tpu_scripts/setup.sh --commit=REV [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
"$TPU_SCRIPTS/ship.sh" "$@"
on_workers all "bash ~/$REMOTE/current/tpu_scripts/worker/setup.sh"
