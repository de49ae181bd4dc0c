#!/usr/bin/env bash
# buf breaking against the previous commit, except for one declared, deliberate contract break.
#
# The contract must stay compatible with HEAD~1 (after a merge: main's previous commit). A deliberate
# break is declared in protos/CONTRACT_BREAK: why, and every buf finding it accepts, one per line as
# "<file>: <message>" (buf's output without line and column). While that declaration is new, that is
# while the file differs from HEAD~1's copy (the commit that declares it, later commits of its branch,
# the merge that brings it to main), the findings against HEAD~1 must all be listed there: any other
# break still fails. Once HEAD~1 holds the same declaration it no longer excuses anything.
# Run from anywhere; BUF overrides the buf binary (default: the project venv's).
set -euo pipefail
cd "$(dirname "$0")"
buf=${BUF:-../.venv/bin/buf}
declaration=CONTRACT_BREAK

if ! git rev-parse -q --verify HEAD~1 >/dev/null; then
  echo "buf breaking: no previous commit to compare with"
  exit 0
fi
against="../.git#ref=HEAD~1,subdir=protos"
previous=$(git show "HEAD~1:protos/$declaration" 2>/dev/null || true)
if [[ ! -f $declaration || "$(cat "$declaration")" == "$previous" ]]; then
  exec "$buf" breaking --against "$against"
fi

findings=$("$buf" breaking --against "$against" 2>&1 | sed -E 's/^([^:]+):[0-9]+:[0-9]+:/\1: /') || true
accepted=$(grep -v -e '^#' -e '^[[:space:]]*$' "$declaration" || true)
unexpected=$(grep -vxF -f <(printf '%s\n' "$accepted") <<<"$findings" | grep -v '^$' || true)
if [[ -n $unexpected ]]; then
  echo "buf breaking: changes against HEAD~1 that protos/$declaration does not accept:"
  echo "$unexpected"
  exit 1
fi
echo "buf breaking: only the break declared in protos/$declaration (accepted; compared with HEAD~1):"
echo "${findings:-  (none left)}"
