#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries (kube-apiserver, kube-controller-manager, kubectl, and for
# the main release the node's kubelet and kube-scheduler and promtool; etcd, helm) from the Go module proxy
# into the project's versioned cache, skipping any binary that is already there. Release
# downloads are unreachable here, so modules are the only source.
#
# Usage: tools/build-bins.sh [--kubernetes MINOR] [--print-dir]
#   --kubernetes MINOR  which Kubernetes release to build (default: $ACS_K8S_VERSION, else 1.36):
#                       1.37 (v1.37.2, the newest supported release: the whole suite, the node,
#                       the demo; module dir tools/k8s-bins) or 1.32 (v1.32.13, the oldest
#                       supported release, control plane only, tools/k8s-bins-1.32).
#                       Each goes into its own versioned cache directory.
#   --print-dir         only print the cache directory and exit.
set -euo pipefail

ETCD_VERSION=v3.6.14
HELM_VERSION=v3.21.4
# promtool (the chart's alert rules and their unit tests, scripts/lint-packaging.sh): Prometheus
# v3.16.0 is Go module version v0.316.0 (tools/promtool-bin). Built for the main release only.
PROMETHEUS_VERSION=v3.16.0

log() { printf '[build-bins] %s\n' "$*" >&2; }

minor=${ACS_K8S_VERSION:-1.37}
print_dir=false
while [ $# -gt 0 ]; do
  case "$1" in
    --kubernetes) minor=${2:?--kubernetes needs a version such as 1.32}; shift 2 ;;
    --kubernetes=*) minor=${1#--kubernetes=}; shift ;;
    --print-dir) print_dir=true; shift ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
done

# Keep in step with crates/testenv/src/bins.rs (KubernetesVersion).
case "${minor#v}" in
  1.37|1.37.2) K8S_VERSION=v1.37.2; K8S_MODULE=k8s-bins; NODE_BINS=(kubelet kube-scheduler); TOOLS=(promtool) ;;
  1.32|1.32.13) K8S_VERSION=v1.32.13; K8S_MODULE=k8s-bins-1.32; NODE_BINS=(); TOOLS=() ;;
  *) log "unsupported Kubernetes version '$minor' (known: 1.37, 1.32)"; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
dir_of() { echo "$cache_root/k8s-$1-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"; }
BIN=$(dir_of "$K8S_VERSION")
# etcd and helm do not depend on the Kubernetes version: another version's copies are reused.
MAIN_BIN=$(dir_of v1.37.2)

if $print_dir; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-modcacherw -mod=readonly -buildvcs=false"

# A binary counts as present only if it runs and reports the pinned version, so a half-written
# file from an interrupted build is rebuilt. The output is captured before matching: piping into
# `grep -q` under pipefail fails at random when grep exits early and the binary dies of SIGPIPE
# (seen for kubectl 5 times in 30), which would trigger a needless rebuild.
have() { have_in "$BIN" "$@"; }
have_in() {
  local dir=$1 name=$2 want=$3 out
  [ -x "$dir/$name" ] || return 1
  case "$name" in
    kubectl) out=$("$dir/$name" version --client 2>/dev/null) || return 1 ;;
    helm) out=$("$dir/$name" version --short 2>/dev/null) || return 1 ;;
    *) out=$("$dir/$name" --version 2>/dev/null) || return 1; want=${want#v} ;;
  esac
  [[ $out == *"$want"* ]]
}

# Links (else copies) a version-independent binary from the main cache directory, if it is there.
reuse() {
  local name=$1 want=$2
  [ "$BIN" != "$MAIN_BIN" ] && have_in "$MAIN_BIN" "$name" "$want" || return 1
  ln -f "$MAIN_BIN/$name" "$BIN/$name.tmp" 2>/dev/null || cp "$MAIN_BIN/$name" "$BIN/$name.tmp"
  mv "$BIN/$name.tmp" "$BIN/$name"
  log "reusing $name $want from $MAIN_BIN"
}

build_k8s() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local cmds=(kube-apiserver kube-controller-manager kubectl "${NODE_BINS[@]}")
  log "building ${cmds[*]} $K8S_VERSION (first time: ~10-20 min on 2 cores)"
  local tmp; tmp=$(mktemp -d "$BIN/.build.XXXXXX")
  # One `go build` for all of them: shared packages compile once.
  (cd "$here/$K8S_MODULE" && go build -trimpath -ldflags "$ldf" -o "$tmp/" \
    "${cmds[@]/#/k8s.io/kubernetes/cmd/}")
  mv "$tmp"/* "$BIN/" && rmdir "$tmp"
}

build_etcd() {
  log "building etcd $ETCD_VERSION"
  (cd "$here/etcd-bin" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_helm() {
  log "building helm $HELM_VERSION"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  (cd "$here/helm-bin" && go build -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$BIN/helm.tmp" "$BIN/helm"
}

build_promtool() {
  log "building promtool $PROMETHEUS_VERSION"
  (cd "$here/promtool-bin" && go build -trimpath -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" \
    -o "$BIN/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool)
  mv "$BIN/promtool.tmp" "$BIN/promtool"
}

if ! command -v go >/dev/null 2>&1; then
  log "go is not installed; set KUBEBUILDER_ASSETS or TEST_ASSET_* to existing binaries instead"
  exit 1
fi

have_k8s() {
  local b
  for b in kube-apiserver kube-controller-manager kubectl "${NODE_BINS[@]}"; do
    have "$b" "$K8S_VERSION" || return 1
  done
}
have_k8s || build_k8s
have etcd "$ETCD_VERSION" || reuse etcd "$ETCD_VERSION" || build_etcd
have helm "$HELM_VERSION" || reuse helm "$HELM_VERSION" || build_helm
if [ ${#TOOLS[@]} -gt 0 ]; then
  have promtool "$PROMETHEUS_VERSION" || build_promtool
fi

for b in kube-apiserver kube-controller-manager kubectl "${NODE_BINS[@]}" etcd helm "${TOOLS[@]}"; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b after build"; exit 1; }
done
log "binaries ready in $BIN"
echo "$BIN"
