#!/usr/bin/env bash
# Makes sure the Debian packages the node needs are installed: containerd, runc and the CNI
# plugins run pods; umoci, skopeo, busybox-static, gcc and binutils assemble the images; iproute2
# and iptables set up the pod bridge (the kubelet also programs iptables). Installs what is missing
# with apt-get when running as root; otherwise names exactly what is missing and fails, because a
# node tier that silently skips proves nothing.
set -euo pipefail

say() { printf '[node-deps] %s\n' "$*" >&2; }

# "<check> <package>": a command on PATH, or an absolute path that must exist.
needs=(
  "containerd containerd"
  "ctr containerd"
  "runc runc"
  "/usr/lib/cni/bridge containernetworking-plugins"
  "/usr/lib/cni/host-local containernetworking-plugins"
  "/usr/lib/cni/loopback containernetworking-plugins"
  "iptables iptables"
  "conntrack conntrack"
  "ip iproute2"
  "umoci umoci"
  "skopeo skopeo"
  "/bin/busybox busybox-static"
  "gcc gcc"
  "strip binutils"
)

missing_packages() {
  local entry check pkg out=()
  for entry in "${needs[@]}"; do
    read -r check pkg <<<"$entry"
    if [[ $check == /* ]]; then [ -e "$check" ] && continue; else command -v "$check" >/dev/null 2>&1 && continue; fi
    [[ " ${out[*]} " == *" $pkg "* ]] || out+=("$pkg")
  done
  echo "${out[*]}"
}

missing=$(missing_packages)
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "missing Debian packages: $missing"
  say "install them as root: apt-get install -y --no-install-recommends $missing"
  exit 1
fi
say "installing $missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! apt-get install -y --no-install-recommends $missing >/dev/null; then
  apt-get update >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $missing >/dev/null
fi
missing=$(missing_packages)
[ -z "$missing" ] || { say "still missing after apt-get: $missing"; exit 1; }
