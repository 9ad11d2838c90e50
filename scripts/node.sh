#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine: the project's control plane (acs-testenv, with
# Node authorization and the workload controllers) plus a real node: a private containerd with
# runc and the bridge CNI plugin from Debian, kube-scheduler and a kubelet built from the Go module
# proxy at the control plane's version. Pods run the project's own images, imported without a
# registry: the operator (assembled from the Dockerfile's runtime contract, tools/node/images.sh),
# a busybox app image and the pause image.
#
# Usage: scripts/node.sh up [--dir DIR] [--sync-frequency DURATION] [--operator-binary PATH]
#                           [--no-previous-release]
#        scripts/node.sh down [--dir DIR]
#        scripts/node.sh status [--dir DIR]
#
# `up` writes DIR/env (default DIR: target/node) exporting KUBECONFIG and the control plane's
# ACS_TESTENV_* variables, plus ACS_NODE_NAME, ACS_NODE_BRIDGE_IP (the host's address on the pod
# bridge: pods reach the apiserver and anything the host serves there), ACS_APP_IMAGE,
# ACS_OPERATOR_IMAGE, ACS_NODE_DIR and ACS_NODE_SYNC_FREQUENCY; and, for the upgrade test, the
# previous release (scripts/previous-release.sh builds its operator once per machine, cached):
# ACS_PREVIOUS_RELEASE (its version), ACS_PREVIOUS_OPERATOR_IMAGE (its operator's image, built
# from its own Dockerfile and imported with its version as the tag) and ACS_PREVIOUS_CHART (its
# chart's directory). With --no-previous-release (scripts/dev-env.sh) none of these is built or
# exported, and the upgrade test fails saying so. `down` stops everything `up` started and undoes
# what it changed on the host (mounts, network namespaces, the bridge, the kubelet's iptables
# chains and cgroups, sysctls), also after a failed or interrupted `up`.
#
# The node is machine-global (kubelet ports, CNI state, cgroups): one at a time per machine, so the
# test suite and `scripts/dev-env.sh up --node` do not run together. Needs root (CI runs as root)
# and the Debian packages tools/node/deps.sh installs. Only loopback and the bridge network
# 10.244.77.0/24 (no default route, no masquerading: pod traffic cannot leave the machine) are used.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export ACS_OPERATOR_CACHE=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ACS_OPERATOR_CACHE/target}

BRIDGE=acsbr0
BRIDGE_IP=10.244.77.1
POD_SUBNET=10.244.77.0/24
NODE_NAME=127.0.0.1
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
# Host directories the kubelet, containerd and libcni use whatever their configuration says.
HOST_DIRS=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni)
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)

say() { printf '[node] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

dir="$root/target/node"
sync_frequency=10s
operator_bin="$CARGO_TARGET_DIR/debug/acs-identity-operator"
previous_release=true
cmd=${1:-}
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=${2:?--dir needs a path}; shift 2 ;;
    --sync-frequency) sync_frequency=${2:?--sync-frequency needs a duration such as 10s}; shift 2 ;;
    --operator-binary) operator_bin=${2:?--operator-binary needs a path}; shift 2 ;;
    --no-previous-release) previous_release=false; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
run="$dir/run"
sock="$dir/containerd/containerd.sock"
CTR=(ctr --address "$sock" -n k8s.io)

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

# SIGTERM, up to 20 s, then SIGKILL.
stop() {
  alive "$1" || { rm -f "$run/$1.pid"; return 0; }
  local pid; pid=$(cat "$run/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run/$1.pid"
}

# Waits (with a deadline in seconds) until a command succeeds.
wait_until() {
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && { say "timed out after $2 s waiting for $what"; return 1; }
    sleep 0.2
  done
}

start_bg() { # name log command...
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  echo $! >"$run/$name.pid"
}

down() {
  local kubectl="" kubeconfig=""
  if [ -f "$dir/testenv.env" ]; then
    kubectl=$(sed -n "s/^export KUBECTL='\(.*\)'$/\1/p" "$dir/testenv.env")
    kubeconfig=$(sed -n "s/^export KUBECONFIG='\(.*\)'$/\1/p" "$dir/testenv.env")
  fi
  # 1. Pods away through the kubelet, so sandboxes, network namespaces, veths and IP leases are
  #    released by the components that made them.
  if alive kubelet && alive testenv && [ -n "$kubectl" ]; then
    local k=("$kubectl" --kubeconfig "$kubeconfig" --request-timeout=10s)
    "${k[@]}" delete deployments,statefulsets,daemonsets,replicasets --all -A --wait=false >/dev/null 2>&1 || true
    "${k[@]}" delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
      [ -z "$("${k[@]}" get pods -A -o name 2>/dev/null)" ] \
        && ! "${CTR[@]}" tasks ls 2>/dev/null | grep -q RUNNING && break
      sleep 0.5
    done
  fi
  # 2. The node's processes, then the control plane (acs-testenv stops its own components).
  stop kubelet
  stop kube-scheduler
  stop testenv
  # 3. Containers left in our containerd, then containerd and its shims.
  if alive containerd; then
    local t c
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  # 4. Mounts under the node's directory (deepest first) and the CNI network namespaces.
  local m ns
  for m in $(awk -v p="$dir/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for m in $(awk '$2 ~ "^/var/lib/kubelet/" {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] || continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  rmdir /run/netns 2>/dev/null || true
  # 5. The bridge, and the iptables chains the kubelet creates.
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  local ipt ch t c
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for ch in INPUT OUTPUT; do while "$ipt" -t filter -D "$ch" -j KUBE-FIREWALL 2>/dev/null; do :; done; done
    for t in filter nat mangle; do
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$ipt" -t "$t" -F "$c" 2>/dev/null && "$ipt" -t "$t" -X "$c" 2>/dev/null || true
      done
    done
  done
  # 6. The kubelet's cgroups, in every v1 hierarchy and in the unified one.
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # 7. Sysctls the kubelet and the bridge plugin change.
  if [ -f "$dir/sysctl-before.txt" ]; then
    local line
    while read -r line; do sysctl -qw "$line" 2>/dev/null || true; done <"$dir/sysctl-before.txt"
    rm -f "$dir/sysctl-before.txt"
  fi
  rm -rf "${HOST_DIRS[@]}"
  rm -rf "$dir/containerd/root" "$dir/containerd/state" "$dir/containerd/runc" "$dir/kubelet" \
    "$dir/cni" "$dir/pod-logs" "$dir/env" "$dir/testenv.env"
  say "stopped"
}

up() {
  [ "$(id -u)" = 0 ] || die "the node needs root (kubelet, containerd, network namespaces, cgroups)"
  if alive testenv || alive kubelet || alive containerd; then
    die "a node already runs from $dir: 'scripts/node.sh down' first"
  fi
  if ip link show "$BRIDGE" >/dev/null 2>&1 || pgrep -x kubelet >/dev/null; then
    die "another node runs on this machine (bridge $BRIDGE or a kubelet exists); the node is machine-global: stop it first"
  fi
  # containerd's socket path must fit a sockaddr_un (108 bytes).
  [ ${#sock} -lt 100 ] || die "node directory path too long for containerd's socket: $dir (use --dir)"
  mkdir -p "$run"
  # From here on, a failure or Ctrl-C undoes whatever was started.
  up_done=false
  trap '[ "$up_done" = true ] || { say "start-up failed or interrupted; stopping what was started"; down; }' EXIT
  trap 'exit 130' INT TERM

  "$root/tools/node/deps.sh"
  local bin_dir; bin_dir=$("$root/tools/build-bins.sh")
  [ -x "$bin_dir/kubelet" ] && [ -x "$bin_dir/kube-scheduler" ] \
    || die "no kubelet or kube-scheduler in $bin_dir (the node runs on the newest release only; ACS_K8S_VERSION=${ACS_K8S_VERSION:-})"
  [ -x "$operator_bin" ] || die "no operator binary at $operator_bin (cargo build --bin acs-identity-operator)"
  local testenv_bin="$CARGO_TARGET_DIR/debug/acs-testenv"
  [ -x "$testenv_bin" ] || die "no acs-testenv at $testenv_bin (cargo build -p acs-testenv)"

  # The previous release first: a cold build takes minutes, a cached one nothing.
  local prev="" prev_version="" prev_chart="" prev_image=""
  if $previous_release; then
    prev=$("$root/scripts/previous-release.sh")
    prev_version=$(sed -n 's/^version=//p' <<<"$prev")
    prev_chart=$(sed -n 's/^chart=//p' <<<"$prev")
  fi

  local t0=$SECONDS
  say "images"
  local refs; refs=$("$root/tools/node/images.sh" "$dir/images" "$operator_bin")
  local pause_image app_image operator_image
  pause_image=$(sed -n 's/^pause=//p' <<<"$refs")
  app_image=$(sed -n 's/^app=//p' <<<"$refs")
  operator_image=$(sed -n 's/^operator=//p' <<<"$refs")
  if $previous_release; then
    # The previous release's operator image, from its own Dockerfile, tagged with its version.
    # Only its operator.tar is imported (pause and app are the current ones).
    say "images of the previous release $prev_version"
    refs=$(DOCKERFILE=$(sed -n 's/^dockerfile=//p' <<<"$prev") "$root/tools/node/images.sh" \
      "$dir/images-previous" "$(sed -n 's/^binary=//p' <<<"$prev")" "$prev_version")
    prev_image=$(sed -n 's/^operator=//p' <<<"$refs")
    [ "$prev_image" != "$operator_image" ] || die "the previous release's image has the current one's reference $operator_image"
  fi

  if [ ! -f "$dir/sysctl-before.txt" ]; then
    local s
    for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$dir/sysctl-before.txt"
  fi

  # The bridge exists before the apiserver binds to its address; the CNI bridge plugin adopts it.
  say "pod bridge $BRIDGE $BRIDGE_IP"
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  say "control plane (apiserver on $BRIDGE_IP)"
  rm -f "$dir/testenv.env"
  ACS_TESTENV_BIND_ADDRESS=$BRIDGE_IP ACS_TESTENV_NODE_NAME=$NODE_NAME \
    start_bg testenv "$dir/testenv.log" "$testenv_bin" up --env-file "$dir/testenv.env"
  wait_until "the control plane" 180 test -s "$dir/testenv.env" || { tail -20 "$dir/testenv.log" >&2; false; }
  # shellcheck disable=SC1091
  source "$dir/testenv.env"
  local k=("$KUBECTL" --kubeconfig "$KUBECONFIG")

  say "containerd"
  mkdir -p "$dir/containerd" "$dir/cni/net.d" "$dir/cni/ipam"
  sed -e "s|@DIR@|$dir|g" -e "s|@PAUSE_IMAGE@|$pause_image|g" \
    "$root/tools/node/containerd-config.toml" >"$dir/containerd/config.toml"
  start_bg containerd "$dir/containerd.log" containerd --config "$dir/containerd/config.toml"
  wait_until "containerd's socket" 30 "${CTR[@]}" version || { tail -20 "$dir/containerd.log" >&2; false; }
  local tar
  for tar in "$dir/images"/*.tar; do "${CTR[@]}" images import --all-platforms "$tar" >/dev/null; done
  if $previous_release; then
    "${CTR[@]}" images import --all-platforms "$dir/images-previous/operator.tar" >/dev/null
  fi

  # Pod network: Debian's bridge + host-local plugins on the bridge made above; no routes beyond
  # the subnet and no masquerading. containerd watches conf_dir and loads it by itself.
  cat >"$dir/cni/net.d/10-acs-node.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "acs-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$BRIDGE_IP"}]],
        "routes": [],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {"type": "loopback"}
  ]
}
CNI

  say "kube-scheduler"
  start_bg kube-scheduler "$dir/kube-scheduler.log" "$bin_dir/kube-scheduler" --kubeconfig="$KUBECONFIG" \
    --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
    --leader-elect=false --secure-port=0

  say "kubelet (syncFrequency $sync_frequency)"
  local pki="$ACS_TESTENV_WORK_DIR/pki"
  mkdir -p "$dir/kubelet" "$dir/pod-logs"
  cat >"$dir/kubelet-config.yaml" <<CFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
# The test machines run cgroup v1, which the kubelet refuses by default since 1.35.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
syncFrequency: $sync_frequency
podLogsDir: $dir/pod-logs
volumePluginDir: $dir/kubelet/volume-plugins
resolvConf: /etc/resolv.conf
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
CFG
  # The node is named 127.0.0.1: --node-ip=127.0.0.1 is refused ("nodeIP can't be loopback"), but
  # an IP-shaped hostname-override becomes the InternalIP, so apiserver -> kubelet stays on loopback.
  start_bg kubelet "$dir/kubelet.log" "$bin_dir/kubelet" --config="$dir/kubelet-config.yaml" \
    --kubeconfig="$ACS_TESTENV_KUBELET_KUBECONFIG" --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" \
    --hostname-override="$NODE_NAME" --v=2
  node_ready() {
    [ "$("${k[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] \
      && [ -z "$("${k[@]}" get node "$NODE_NAME" -o jsonpath='{.spec.taints}')" ]
  }
  wait_until "node $NODE_NAME Ready and untainted" 120 node_ready || { tail -30 "$dir/kubelet.log" >&2; false; }

  {
    cat "$dir/testenv.env"
    printf "export ACS_NODE_NAME='%s'\n" "$NODE_NAME"
    printf "export ACS_NODE_BRIDGE_IP='%s'\n" "$BRIDGE_IP"
    printf "export ACS_NODE_DIR='%s'\n" "$dir"
    printf "export ACS_NODE_SYNC_FREQUENCY='%s'\n" "$sync_frequency"
    printf "export ACS_APP_IMAGE='%s'\n" "$app_image"
    printf "export ACS_OPERATOR_IMAGE='%s'\n" "$operator_image"
    if $previous_release; then
      printf "export ACS_PREVIOUS_RELEASE='%s'\n" "$prev_version"
      printf "export ACS_PREVIOUS_OPERATOR_IMAGE='%s'\n" "$prev_image"
      printf "export ACS_PREVIOUS_CHART='%s'\n" "$prev_chart"
    fi
  } >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  up_done=true
  trap - EXIT INT TERM
  say "node $NODE_NAME Ready after $((SECONDS - t0)) s: source $dir/env (stop with scripts/node.sh down)"
}

status() {
  local p
  for p in testenv containerd kube-scheduler kubelet; do
    if alive "$p"; then echo "$p: running (pid $(cat "$run/$p.pid"))"; else echo "$p: stopped"; fi
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status [--dir DIR] [--sync-frequency DURATION] [--operator-binary PATH] [--no-previous-release]" >&2; exit 2 ;;
esac
