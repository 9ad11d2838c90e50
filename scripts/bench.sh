#!/usr/bin/env bash
# The benchmark (docs/benchmarks.md): builds what is missing (control-plane binaries, the
# baseline's Python venv, the operator and acs-bench), then acs-bench starts a local control
# plane and the ACS emulator, runs the operator through every phase and prints one table with
# each goal met or not.
#
# Usage: scripts/bench.sh                full run: 1,000 users, 5,000 tokens, release build
#        scripts/bench.sh --smoke        20 users, 100 tokens, debug build (the one scripts/test.sh
#                                        builds), about a minute; fails if a zero-call goal is missed
#        scripts/bench.sh [--smoke] ARGS more acs-bench flags, e.g. --tokens 2000 --output FILE
# Env:   ACS_OPERATOR_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/acs-identity-operator)
#        CARGO_TARGET_DIR     Rust build dir (default: <cache root>/target)
#        KUBEBUILDER_ASSETS, TEST_ASSET_*   existing control-plane binaries to use
# Logs:  target/bench/{operator,baseline}.log
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export ACS_OPERATOR_CACHE=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ACS_OPERATOR_CACHE/target}
export CARGO_TERM_COLOR=never

say() { printf '[bench] %s\n' "$*" >&2; }

smoke=false
args=()
for a in "$@"; do
  case "$a" in
    --smoke) smoke=true; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done

say "control-plane binaries"
tools/build-bins.sh >/dev/null

say "Python baseline environment"
bench_env=$(scripts/python-env.sh --bench)
eval "$bench_env"   # sets ACS_PYTHON_BENCH

if [ "$smoke" = true ]; then
  profile=debug
  cargo_profile=()
else
  profile=release
  cargo_profile=(--release)
fi
say "building the operator and acs-bench ($profile)"
cargo build --locked "${cargo_profile[@]}" -p acs-identity-operator --bin acs-identity-operator
cargo build --locked "${cargo_profile[@]}" -p acs-bench

mkdir -p target/bench
say "running (progress on stderr, the table on stdout)"
exec "$CARGO_TARGET_DIR/$profile/acs-bench" \
  --operator-bin "$CARGO_TARGET_DIR/$profile/acs-identity-operator" \
  --python "$ACS_PYTHON_BENCH" \
  --baseline-script "$root/bench/baseline.py" \
  --crds "$root/crds" \
  --work-dir "$root/target/bench" \
  "${args[@]}"
