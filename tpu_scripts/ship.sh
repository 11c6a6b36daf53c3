#!/usr/bin/env bash
# The code at a commit, onto every worker: unpacked into a fresh ~/gptjax/<commit hash>/ (a
# moved branch gets a new folder, so files it deleted are gone), then ~/gptjax/current -> it,
# switched in one step (mv -T of a new link).
#   tpu_scripts/ship.sh --commit=REV [--settings=FILE] [--dry-run]
source "$(dirname "$0")/lib.sh"
commit=""
for arg in "${ARGS[@]}"; do [[ "$arg" == --commit=* ]] && commit="${arg#--commit=}"; done
[[ -n "$commit" ]] || die "name the code to ship: --commit=REV (a commit, tag or branch)"
tag="${commit//[^A-Za-z0-9_.-]/_}"  # origin/main -> origin_main: a file name
archive="/tmp/gptjax-$tag.tar.gz"
run "$TPU_SCRIPTS/pack.sh" "$commit" "$archive"
retry gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:gptjax-$tag.tar.gz" "${WHERE[@]}" \
    --worker=all "${SCP_FLAGS[@]}"
# the folder is named by the COMMIT file inside the archive; one already complete is kept
unpack="a=~/gptjax-$tag.tar.gz && h=\$(tar -xzOf \$a COMMIT) && d=~/$REMOTE/\$h && if [ ! -f \$d/COMMIT ];"
unpack+=" then rm -rf \$d.part && mkdir -p \$d.part && tar -xzf \$a -C \$d.part && rm -rf \$d"
unpack+=" && mv \$d.part \$d; fi && ln -sfn \$d ~/$REMOTE/current.new"
unpack+=" && mv -T ~/$REMOTE/current.new ~/$REMOTE/current"
on_workers all "$unpack"
