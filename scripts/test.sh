#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds whatever is missing (control-plane
# binaries from the Go module proxy, Python SDK environments, the Rust workspace), then runs
# lint (fmt, clippy, hadolint, checkov), the Rust unit + integration tests on a real control
# plane (e2e incl. the Helm chart, and the reliability suite at reduced size), the Python SDK
# conformance suite against the emulator, and a benchmark smoke run. Prints each stage's time.
# The compatibility tier runs the version-sensitive e2e tests (CRDs Established, every admission
# case, user and token lifecycle, the chart and its RBAC proof) again on the oldest supported
# Kubernetes release (1.32), on a control plane built for it (ACS_K8S_VERSION=1.32).
# The node tier runs the operator's own image, installed by its chart, on a real node (kubelet,
# kube-scheduler, containerd, runc) of the newest release (1.37), with pods reading its tokens:
# scripts/node.sh starts the node (installing the Debian packages it needs) and stops it, also on
# failure or Ctrl-C. It needs root, as CI has; without it the stage fails and says why. Its upgrade
# test starts from the previous release's chart and image: scripts/previous-release.sh builds that
# release's operator once per machine into the cache, as a stage of its own before the node tier.
#
# Usage: scripts/test.sh            (the README's test command; .ci/run calls it)
# Env:   ACS_OPERATOR_CACHE         cache root (default ${XDG_CACHE_HOME:-~/.cache}/acs-identity-operator)
#        CARGO_TARGET_DIR           Rust build dir (default: <cache root>/target, kept across clones)
#        KUBEBUILDER_ASSETS, TEST_ASSET_*   existing control-plane binaries to use instead of building
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export ACS_OPERATOR_CACHE=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ACS_OPERATOR_CACHE/target}
# The emulator binary the Python SDK conformance suite runs (built by `cargo build --workspace`).
export ACS_EMULATOR_BIN="$CARGO_TARGET_DIR/debug/acs-emulator"
export CARGO_TERM_COLOR=never
mkdir -p "$ACS_OPERATOR_CACHE"

stages=()
run_stage() {
  local name=$1; shift
  local start=$SECONDS
  printf '\n==> %s\n' "$name"
  if "$@"; then
    stages+=("$(printf '%-44s %5ss  ok' "$name" $((SECONDS - start)))")
  else
    local rc=$?
    stages+=("$(printf '%-44s %5ss  FAILED' "$name" $((SECONDS - start)))")
    summary
    exit "$rc"
  fi
}
summary() {
  printf '\n==> stage durations\n'
  printf '  %s\n' "${stages[@]}"
  printf '  %-28s %5ss\n' "total" "$SECONDS"
}

control_plane_bins() {
  # Honour binaries a user already has; build the missing ones into the versioned cache.
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
    echo "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS for kube-apiserver and etcd"
  fi
  tools/build-bins.sh >/dev/null
}

# The oldest supported Kubernetes release; see README "Supported Kubernetes versions".
OLDEST_K8S=1.32
# Its binaries build in the background, niced, while the cargo test and node stages run: a cold
# build takes about 8 minutes of both cores, and those stages leave the cores idle most of the
# time (they wait on the apiserver, the kubelet and the emulator), so it is done when the
# compatibility tier needs it (measured: it finished inside the cargo test stage, which took no
# longer). Started after the Rust build, which it would slow down. Its own session, so that a failure or Ctrl-C stops the go build with it.
oldest_bins_log="$ACS_OPERATOR_CACHE/build-bins-$OLDEST_K8S.log"
oldest_bins_pid=""
start_oldest_bins() {
  setsid nice -n 19 tools/build-bins.sh --kubernetes "$OLDEST_K8S" >"$oldest_bins_log" 2>&1 &
  oldest_bins_pid=$!
}
control_plane_bins_oldest() {
  local rc=0
  wait "$oldest_bins_pid" || rc=$?
  oldest_bins_pid=""
  [ "$rc" = 0 ] || tail -20 "$oldest_bins_log"
  return "$rc"
}
# Each test tier has a time budget (GNU timeout), so a hang fails its stage instead of CI's
# whole 90 minutes; the budgets are about three times the measured durations. --foreground keeps
# Ctrl-C reaching the tests from a terminal.
compat_tests() {
  ACS_K8S_VERSION=$OLDEST_K8S timeout --foreground 10m cargo test --locked --test e2e -- \
    smoke:: admission:: user_lifecycle:: token_lifecycle:: chart::
}

rust_fmt() { cargo fmt --all -- --check; }
packaging_lint() { scripts/lint-packaging.sh; }
rust_clippy() { cargo clippy --workspace --all-targets --locked -- -D warnings; }
rust_build() { cargo build --workspace --all-targets --locked; }
# The previous release's operator for the node tier's upgrade test, in its own target directory
# under the cache; a cached build costs nothing. Before the 1.32 binaries start building in the
# background: a cold build takes both cores for a few minutes.
previous_release() { scripts/previous-release.sh >/dev/null; }
# The node tier's tests (node_tier::) need the node: the next stage runs them.
rust_tests() { timeout --foreground 30m cargo test --workspace --locked --no-fail-fast -- --skip node_tier::; }
node_packages() { tools/node/deps.sh; }
node_started=false
node_down() { scripts/node.sh down --dir "$root/target/node" >/dev/null 2>&1 || true; node_started=false; }
node_tier() {
  node_started=true
  scripts/node.sh up --dir "$root/target/node" || return 1
  local rc=0
  # shellcheck disable=SC1091
  (source "$root/target/node/env" && timeout --foreground 10m cargo test --locked --test node -- --test-threads=1 --nocapture) || rc=$?
  node_down
  return "$rc"
}

# While Go builds the Kubernetes binaries (the first time about 24 minutes, with network-bound
# downloads and single-threaded links), fetch what later stages download: the crates and the
# Python environments (the SDK suite's and the benchmark's). A failed prefetch is not fatal: the
# stage that needs it downloads again and reports the error.
prefetch_log="$ACS_OPERATOR_CACHE/prefetch.log"
prefetch_pid=""
start_prefetch() {
  setsid bash -c 'cargo fetch --locked && scripts/python-env.sh && scripts/python-env.sh --bench' \
    >"$prefetch_log" 2>&1 &
  prefetch_pid=$!
}
python_envs() {
  wait "$prefetch_pid" || echo "prefetch failed (see $prefetch_log); downloading now"
  prefetch_pid=""
  scripts/python-env.sh >/dev/null
}

# Whatever the suite started in the background stops with it, also on failure or Ctrl-C.
cleanup() {
  if [ -n "$prefetch_pid" ]; then kill -- "-$prefetch_pid" 2>/dev/null || true; fi
  if [ -n "$oldest_bins_pid" ]; then kill -- "-$oldest_bins_pid" 2>/dev/null || true; fi
  if $node_started; then node_down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python_tests() { timeout --foreground 5m tests/python/run.sh; }
bench_smoke() { scripts/bench.sh --smoke >/dev/null; }

start_prefetch
run_stage "control-plane binaries" control_plane_bins
run_stage "node packages (Debian)" node_packages
run_stage "python environments" python_envs
run_stage "cargo fmt --check" rust_fmt
run_stage "hadolint + checkov" packaging_lint
run_stage "cargo build" rust_build
run_stage "cargo clippy -D warnings" rust_clippy
run_stage "previous release's operator (node tier upgrade)" previous_release
start_oldest_bins
run_stage "cargo test (unit, e2e, chart, reliability)" rust_tests
run_stage "node tier on Kubernetes 1.37 (kubelet, Helm)" node_tier
run_stage "control-plane binaries (Kubernetes $OLDEST_K8S, built meanwhile)" control_plane_bins_oldest
run_stage "e2e compatibility tier on Kubernetes $OLDEST_K8S" compat_tests
run_stage "python SDK conformance" python_tests
run_stage "benchmark smoke run" bench_smoke
summary
