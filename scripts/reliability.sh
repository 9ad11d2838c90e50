#!/usr/bin/env bash
# Runs the reliability suite (tests/reliability, issue 7) at full size on a real control plane,
# prints its table stamped with the commit and the command that reproduces it, and writes that
# table into docs/reliability.md between its markers.
#
# Usage: scripts/reliability.sh [--no-docs]
# Env:   RELIABILITY_SCALE   full (default here) or ci (the size `cargo test` runs)
#        RELIABILITY_SEED    fixes the random kill delays of scenario 2 (the table prints the seed)
#        KUBEBUILDER_ASSETS, TEST_ASSET_*, CARGO_TARGET_DIR   as for scripts/test.sh
#
# Run it on a quiet machine: the figures (request rates, takeover and recovery times) are only
# meaningful when nothing else competes for the CPU.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

update_docs=1
for arg in "$@"; do
  case "$arg" in
    --no-docs) update_docs=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

scale=${RELIABILITY_SCALE:-full}
export RELIABILITY_SCALE=$scale
begin='<!-- reliability-table:begin -->'
end='<!-- reliability-table:end -->'

commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit + uncommitted changes"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
set +e
cargo test --locked --test reliability -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

table=$(sed -n "/^$begin\$/,/^$end\$/p" "$log")
if [ -z "$table" ]; then
  echo "reliability: the suite printed no table (exit status $status)" >&2
  exit "${status/#0/1}"
fi
seed=$(grep -o 'RELIABILITY_SEED=[0-9]*' <<<"$table" | head -n1 || true)
reproduce="RELIABILITY_SCALE=$scale${seed:+ $seed} scripts/reliability.sh"
stamp="Commit \`$commit\`, $(date -u +%Y-%m-%d), $(nproc) CPUs, $((SECONDS - start)) s including the build. Reproduce: \`$reproduce\`"
stamped=$(awk -v stamp="$stamp" -v begin="$begin" '{ print } $0 == begin { print ""; print stamp; print "" }' <<<"$table")

printf '\n%s\n' "$stamped"

if [ "$update_docs" = 1 ]; then
  doc=docs/reliability.md
  if ! grep -qx "$begin" "$doc" || ! grep -qx "$end" "$doc"; then
    echo "reliability: $doc has no table markers; not updated" >&2
  else
    new=$(mktemp)
    awk -v begin="$begin" -v end="$end" -v tablefile=<(printf '%s\n' "$stamped") '
      $0 == begin { while ((getline line < tablefile) > 0) print line; skip = 1; next }
      $0 == end   { skip = 0; next }
      !skip       { print }
    ' "$doc" >"$new"
    mv "$new" "$doc"
    echo "reliability: table written to $doc"
  fi
fi
exit "$status"
