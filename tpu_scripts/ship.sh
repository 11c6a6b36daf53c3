#!/usr/bin/env bash
# The code at a commit, onto every worker: ~/gptjax/<commit>/, and ~/gptjax/current -> it.
#   tpu_scripts/ship.sh --commit=REV [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
commit=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --commit=* ]] && commit="${arg#--commit=}"; done
[[ -n "$commit" ]] || die "name the code to ship: --commit=REV (a commit, tag or branch)"
tag="${commit//[^A-Za-z0-9_.-]/_}"  # origin/main -> origin_main: a file name
archive="/tmp/gptjax-$tag.tar.gz"
run "$TPU_SCRIPTS/pack.sh" "$commit" "$archive"
# shellcheck disable=SC2046
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:gptjax-$tag.tar.gz" $(where) --worker=all
on_workers all "mkdir -p ~/$REMOTE/$tag && tar -xzf ~/gptjax-$tag.tar.gz -C ~/$REMOTE/$tag && ln -sfn ~/$REMOTE/$tag ~/$REMOTE/current"
