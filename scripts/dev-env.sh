#!/usr/bin/env bash
# A local development environment: a real control plane (etcd, kube-apiserver,
# kube-controller-manager on 127.0.0.1), the ACS emulator and the operator, all as background
# processes of this machine. Writes target/dev-env/env, a shell file to `source` for kubectl.
#
# With --node, the control plane gets a real node (scripts/node.sh: kubelet, kube-scheduler,
# containerd, runc; needs root) and the operator runs in-cluster from its own image, installed by
# the chart; the emulator then listens on the node's bridge address so pods reach it too.
#
# Usage: scripts/dev-env.sh up [--kubernetes MINOR] [--node] [--token-lifetime-seconds N]
#                                                             start everything (builds what is missing);
#                                                             --kubernetes: 1.37 (default) or 1.32
#                                                             --node: a real node (1.37 only)
#        scripts/dev-env.sh down                              stop everything it started
#        scripts/dev-env.sh status                            show what runs
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir="$root/target/dev-env"
export ACS_OPERATOR_CACHE=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ACS_OPERATOR_CACHE/target}
bin_dir="$CARGO_TARGET_DIR/debug"

say() { printf '[dev-env] %s\n' "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (with a deadline) until a command succeeds.
wait_until() {
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "timed out waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

stop_pid() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  # Reverse order: the operator first, so it does not log errors about a vanished apiserver.
  stop_pid "$dir/operator.pid"
  if [ -d "$dir/node" ]; then
    scripts/node.sh down --dir "$dir/node" >/dev/null 2>&1 || true
    rm -rf "$dir/node"
  fi
  stop_pid "$dir/emulator.pid"
  stop_pid "$dir/testenv.pid"
  rm -f "$dir/env"
  say "stopped"
}

# The emulator, in the background; prints its endpoint. Args: listen address, extra flags.
start_emulator() {
  local listen=$1; shift
  local emu_args=(--listen "$listen" --ca-cert-out "$dir/acs-ca.pem"
    --connection-string-out "$dir/acs-connection-string" --state-file "$dir/emulator-state.json" "$@")
  [ -n "$lifetime" ] && emu_args+=(--token-lifetime-seconds "$lifetime")
  rm -f "$dir/acs-connection-string"
  "$bin_dir/acs-emulator" "${emu_args[@]}" >"$dir/emulator.log" 2>&1 &
  echo $! >"$dir/emulator.pid"
  wait_until "the emulator" 30 grep -q 'acs-emulator listening on' "$dir/emulator.log" || { tail -20 "$dir/emulator.log" >&2; down; exit 1; }
  sed -n 's/^acs-emulator listening on //p' "$dir/emulator.log" | head -1
}

# --node: the node (with its own control plane), the emulator on the bridge, the operator from
# its image through the chart.
up_node() {
  say "building the operator, the emulator and the control-plane harness"
  cargo build --locked --bin acs-identity-operator && cargo build --locked -p acs-emulator --bin acs-emulator \
    && cargo build --locked -p acs-testenv --bin acs-testenv
  say "starting the node (control plane, containerd, kube-scheduler, kubelet)"
  # The previous release is for the upgrade test only: a development node does without it.
  scripts/node.sh up --dir "$dir/node" --no-previous-release || { down; exit 1; }
  # shellcheck disable=SC1091
  source "$dir/node/env"

  say "starting the ACS emulator on the pod bridge ($ACS_NODE_BRIDGE_IP)"
  # Pods reach it at the bridge address, and so do host tools: that peer is not loopback.
  local endpoint; endpoint=$(start_emulator "$ACS_NODE_BRIDGE_IP:0" --admin-allow-remote)

  say "installing the operator with its chart (image $ACS_OPERATOR_IMAGE)"
  local k=("$KUBECTL" --kubeconfig "$KUBECONFIG")
  "${k[@]}" create namespace acs-system --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  "${k[@]}" -n acs-system create configmap acs-emulator-ca --from-file=ca.crt="$dir/acs-ca.pem" \
    --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  local api_port=${ACS_TESTENV_API_URL##*:}
  HELM_CACHE_HOME="$dir/helm" HELM_CONFIG_HOME="$dir/helm" HELM_DATA_HOME="$dir/helm" \
    "$HELM" upgrade --install acs charts/acs-identity-operator --namespace acs-system --kubeconfig "$KUBECONFIG" \
    --set image.repository="${ACS_OPERATOR_IMAGE%:*}" --set image.tag="${ACS_OPERATOR_IMAGE##*:}" \
    --set image.pullPolicy=Never --set acs.caBundle.configMap=acs-emulator-ca \
    --set-json "acs.allowedEndpointHosts=[\"*.communication.azure.com\",\"*.communication.azure.us\",\"$ACS_NODE_BRIDGE_IP\"]" \
    --set-json "extraEnv=[{\"name\":\"KUBERNETES_SERVICE_HOST\",\"value\":\"$ACS_NODE_BRIDGE_IP\"},{\"name\":\"KUBERNETES_SERVICE_PORT\",\"value\":\"$api_port\"}]" \
    --wait --timeout 180s >/dev/null || { down; exit 1; }
  local pod_ip
  pod_ip=$("${k[@]}" -n acs-system get pods -l app.kubernetes.io/instance=acs -o jsonpath='{.items[0].status.podIP}')

  {
    cat "$dir/node/env"
    printf "export ACS_CONNECTION_STRING='%s'\n" "$(cat "$dir/acs-connection-string")"
    printf "export ACS_ENDPOINT='%s'\n" "$endpoint"
    printf "export ACS_CA_CERT='%s'\n" "$dir/acs-ca.pem"
    printf "export ACS_EMULATOR_ADMIN_URL='%s'\n" "$endpoint/_emulator"
    # The operator pod's address on the bridge (it changes if the pod is replaced).
    printf "export OPERATOR_METRICS_URL='%s'\n" "http://$pod_ip:8080/metrics"
    printf "export PATH='%s':\"\$PATH\"\n" "$ACS_TESTENV_BIN_DIR"
  } >"$dir/env"
  say "ready: source $dir/env   (operator: kubectl -n acs-system logs deploy/acs-acs-identity-operator; stop with scripts/dev-env.sh down)"
}

up() {
  lifetime=""
  local node=false
  while [ $# -gt 0 ]; do
    case "$1" in
      --token-lifetime-seconds) lifetime=$2; shift 2 ;;
      # Pinned flag: a real node, and the operator in-cluster from its image.
      --node) node=true; shift ;;
      # Pinned flag: the Kubernetes release of the control plane (tools/build-bins.sh and
      # acs-testenv read ACS_K8S_VERSION).
      --kubernetes) export ACS_K8S_VERSION=${2:?--kubernetes needs a minor version such as 1.32}; shift 2 ;;
      --kubernetes=*) export ACS_K8S_VERSION=${1#--kubernetes=}; shift ;;
      *) say "unknown argument $1"; exit 2 ;;
    esac
  done
  if [ -f "$dir/testenv.pid" ] && kill -0 "$(cat "$dir/testenv.pid")" 2>/dev/null; then
    say "already running; 'scripts/dev-env.sh down' first"
    exit 1
  fi
  mkdir -p "$dir"
  say "control-plane binaries (first time: built from the Go module proxy, several minutes)"
  tools/build-bins.sh >/dev/null
  if $node; then
    up_node
    return
  fi
  say "building the operator, the emulator and the control-plane harness"
  cargo build --locked --bin acs-identity-operator && cargo build --locked -p acs-emulator --bin acs-emulator \
    && cargo build --locked -p acs-testenv --bin acs-testenv

  say "starting the control plane"
  rm -f "$dir/testenv.env"
  "$bin_dir/acs-testenv" up --env-file "$dir/testenv.env" --crds crds >"$dir/testenv.log" 2>&1 &
  echo $! >"$dir/testenv.pid"
  wait_until "the control plane" 180 test -s "$dir/testenv.env" || { tail -20 "$dir/testenv.log" >&2; down; exit 1; }
  # shellcheck disable=SC1091
  source "$dir/testenv.env"

  say "starting the ACS emulator"
  local endpoint; endpoint=$(start_emulator 127.0.0.1:0)

  say "starting the operator"
  local port; port=$(free_port)
  "$bin_dir/acs-identity-operator" run --kubeconfig "$KUBECONFIG" --acs-ca-cert "$dir/acs-ca.pem" \
    --allowed-endpoint-hosts "*.communication.azure.com,*.communication.azure.us,127.0.0.1" \
    --metrics-addr "127.0.0.1:$port" --log-level info >"$dir/operator.log" 2>&1 &
  echo $! >"$dir/operator.pid"
  wait_until "the operator" 60 curl -sf "http://127.0.0.1:$port/readyz" || { tail -20 "$dir/operator.log" >&2; down; exit 1; }

  {
    cat "$dir/testenv.env"
    printf "export ACS_CONNECTION_STRING='%s'\n" "$(cat "$dir/acs-connection-string")"
    printf "export ACS_ENDPOINT='%s'\n" "$endpoint"
    printf "export ACS_CA_CERT='%s'\n" "$dir/acs-ca.pem"
    printf "export ACS_EMULATOR_ADMIN_URL='%s'\n" "$endpoint/_emulator"
    printf "export OPERATOR_METRICS_URL='%s'\n" "http://127.0.0.1:$port/metrics"
    printf "export PATH='%s':\"\$PATH\"\n" "$ACS_TESTENV_BIN_DIR"
  } >"$dir/env"
  say "ready: source $dir/env   (logs in $dir/*.log; stop with scripts/dev-env.sh down)"
}

status() {
  [ -d "$dir/node" ] && scripts/node.sh status --dir "$dir/node"
  for p in testenv emulator operator; do
    if [ -f "$dir/$p.pid" ] && kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null; then
      echo "$p: running (pid $(cat "$dir/$p.pid"))"
    else
      echo "$p: stopped"
    fi
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [--kubernetes MINOR] [--node] [--token-lifetime-seconds N] | down | status" >&2; exit 2 ;;
esac
