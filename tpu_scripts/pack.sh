#!/usr/bin/env bash
# pack.sh REV OUT.tar.gz: the repository at REV (git archive) plus a COMMIT file naming it,
# so every worker can say which code it runs (tpu_scripts/preflight.sh compares them).
set -euo pipefail
rev="$1" out="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
hash="$(git -C "$repo" rev-parse --verify "$rev^{commit}")" || {
  echo "error: $rev is not a commit of $repo: commit your changes or name another" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git -C "$repo" archive --format=tar -o "$tmp/code.tar" "$hash"
echo "$hash" > "$tmp/COMMIT"
tar -rf "$tmp/code.tar" -C "$tmp" COMMIT
gzip -c "$tmp/code.tar" > "$out.part.$$" && mv "$out.part.$$" "$out"  # whole, or not there
echo "packed $hash into $out"
