#!/usr/bin/env bash
# Builds the pinned control-plane binaries (kube-apiserver, kube-controller-manager, kubectl,
# etcd, helm) from the Go module proxy into the project's versioned cache, skipping any binary
# that is already there. Release downloads are unreachable here, so modules are the only source.
#
# Usage: tools/build-bins.sh [--print-dir]
#   --print-dir  only print the cache directory and exit.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.14
HELM_VERSION=v3.21.4

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
BIN="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"

if [ "${1:-}" = "--print-dir" ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-modcacherw -mod=readonly -buildvcs=false"

log() { printf '[build-bins] %s\n' "$*" >&2; }

# A binary counts as present only if it runs and reports the pinned version, so a half-written
# file from an interrupted build is rebuilt. The output is captured before matching: piping into
# `grep -q` under pipefail fails at random when grep exits early and the binary dies of SIGPIPE
# (seen for kubectl 5 times in 30), which would trigger a needless rebuild.
have() {
  local name=$1 want=$2 out
  [ -x "$BIN/$name" ] || return 1
  case "$name" in
    kubectl) out=$("$BIN/$name" version --client 2>/dev/null) || return 1 ;;
    helm) out=$("$BIN/$name" version --short 2>/dev/null) || return 1 ;;
    *) out=$("$BIN/$name" --version 2>/dev/null) || return 1; want=${want#v} ;;
  esac
  [[ $out == *"$want"* ]]
}

build_k8s() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (first time: ~15-25 min on 2 cores)"
  local tmp; tmp=$(mktemp -d "$BIN/.build.XXXXXX")
  (cd "$here/k8s-bins" && go build -trimpath -ldflags "$ldf" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)
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

if ! command -v go >/dev/null 2>&1; then
  log "go is not installed; set KUBEBUILDER_ASSETS or TEST_ASSET_* to existing binaries instead"
  exit 1
fi

{ have kube-apiserver "$K8S_VERSION" && have kube-controller-manager "$K8S_VERSION" && have kubectl "$K8S_VERSION"; } || build_k8s
have etcd "$ETCD_VERSION" || build_etcd
have helm "$HELM_VERSION" || build_helm

for b in kube-apiserver kube-controller-manager kubectl etcd helm; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b after build"; exit 1; }
done
log "binaries ready in $BIN"
echo "$BIN"
