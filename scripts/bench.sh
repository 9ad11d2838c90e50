#!/usr/bin/env bash
# The benchmark (docs/benchmarks.md): builds what is missing (control-plane binaries, the
# baseline's Python venv, the operator and acs-bench), then acs-bench starts a local control
# plane and the ACS emulator, runs the operator through every phase and prints one table with
# each goal met or not.
#
# Usage: scripts/bench.sh                full run, release build: the scale phases at 4,000 users
#                                        and 20,000 tokens, the comparison and renewal phases at
#                                        1,000 and 5,000 (about 45 min), with a perf profile
#        scripts/bench.sh --phases scale|compare|renewal|churn   one part (they combine: scale,compare)
#        scripts/bench.sh --smoke        20 users, 100 tokens, debug build (the one scripts/test.sh
#                                        builds), about two and a half minutes; fails if an exact goal
#                                        (zero calls, the floor's model matching the counters, the
#                                        tables back after the churn) is missed
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
  # A profile of what bounds the figures: perf from Debian where missing; without a usable
  # perf (not permitted here, say) acs-bench keeps to its /proc CPU accounting.
  if ! command -v perf >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing perf (Debian package linux-perf)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 \
        || say "could not install linux-perf: /proc CPU accounting only"
    else
      say "perf is missing and cannot be installed here (needs root and apt-get): /proc CPU accounting only"
    fi
  fi
  args=(--perf "${args[@]}")
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
