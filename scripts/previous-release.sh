#!/usr/bin/env bash
# The previous release's operator binary and Helm chart, for the node tier's upgrade test
# (tests/node/node_tier/upgrade.rs: `helm upgrade` from that release's chart and image to the
# current ones, on the real node). scripts/node.sh up calls it and imports the binary's image;
# scripts/test.sh runs it as a stage of its own first, so its time shows.
#
# The release is a commit of this repository's history. Its tree is exported with `git archive`
# (no worktree is registered in the checkout, so the cache outlives the clone) into a cache
# directory keyed by the commit, and its operator is built there, as a debug build like the
# node's current image, with the release's own Cargo.lock (--locked) and its OWN target
# directory: never the main CARGO_TARGET_DIR, where another workspace's build would replace the
# target/debug/acs-identity-operator that the current image is made from. Once the binary is
# there the cache is reused as it is (nothing is built); the build's target directory is then
# removed, since only the binary is needed.
#
# Usage: scripts/previous-release.sh
# Env:   ACS_OPERATOR_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/acs-identity-operator);
#                            the release goes into <root>/previous-release/<commit>/
# Prints `version=`, `commit=`, `binary=`, `chart=` and `dockerfile=` lines on stdout; all else
# goes to stderr. Fails, never skips, when the commit is not in this checkout's history (a
# shallow clone: `git fetch --unshallow` first).
set -euo pipefail

# The previous release: 0.1.0, the commit the upgrade fixtures were captured from
# (tests/fixtures/upgrade/from-8157296/SOURCE). Move both on at each release.
VERSION=0.1.0
COMMIT=815729648f51d92e6cac7249fc77435b90b9bfb2

say() { printf '[previous-release] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
cache="$cache_root/previous-release/$COMMIT"
src="$cache/src"
bin="$cache/acs-identity-operator"

# The commit must be in this checkout's history, whether or not the cache holds its build: the
# same checkout then behaves the same on every machine.
if ! git -C "$root" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  hint="fetch it (git fetch origin $COMMIT)"
  if [ "$(git -C "$root" rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
    hint="this is a shallow clone: run 'git fetch --unshallow'"
  fi
  die "commit $COMMIT (release $VERSION) is not in the history of $root; the node tier's upgrade test needs that release's chart and operator: $hint"
fi

mkdir -p "$cache"
# One build at a time per commit (the lock is released when this script exits).
exec 9>"$cache.lock"
flock 9

if [ -x "$bin" ] && [ -f "$src/charts/acs-identity-operator/Chart.yaml" ]; then
  say "release $VERSION ($COMMIT) from the cache: $cache"
else
  start=$SECONDS
  say "release $VERSION ($COMMIT): exporting its tree into $src"
  rm -rf "$src" "$cache/target" "$bin"
  mkdir -p "$src"
  git -C "$root" archive --format=tar "$COMMIT" | tar -x -C "$src"
  say "building its operator (debug, --locked) with CARGO_TARGET_DIR=$cache/target"
  (cd "$src" && CARGO_TARGET_DIR="$cache/target" cargo build --locked --bin acs-identity-operator)
  cp "$cache/target/debug/acs-identity-operator" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  rm -rf "$cache/target"
  say "built in $((SECONDS - start)) s: $bin"
fi

printf 'version=%s\ncommit=%s\nbinary=%s\nchart=%s\ndockerfile=%s\n' "$VERSION" "$COMMIT" "$bin" \
  "$src/charts/acs-identity-operator" "$src/Dockerfile"
