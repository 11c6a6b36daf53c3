#!/usr/bin/env bash
# first_error.sh LOG...: the first Python traceback (or gptjax "error:" line) in the logs,
# in the order given, with the log it came from; exit 1 if there is one.
set -uo pipefail
for log in "$@"; do
  line="$(grep -n -m1 -E '^Traceback \(most recent call last\)|^error: ' "$log" | cut -d: -f1)"
  [[ -n "$line" ]] || continue
  echo "first error, in $log (line $line):"
  # the traceback runs until its first unindented line after the header: the exception
  awk -v s="$line" 'NR == s { print; next } NR > s { print; if ($0 !~ /^[ \t]/) exit }' "$log"
  others=()
  for other in "$@"; do
    [[ "$other" != "$log" ]] && grep -q -E '^Traceback|^error: ' "$other" && others+=("$other")
  done
  [[ ${#others[@]} -gt 0 ]] && echo "also failing: ${others[*]}"
  exit 1
done
echo "no errors in $# log(s)"
