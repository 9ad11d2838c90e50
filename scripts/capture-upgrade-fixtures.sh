#!/usr/bin/env bash
# Captures the upgrade fixtures of a release: the CommunicationUsers, CommunicationTokens and
# Secrets exactly as that release's operator stores them, and the emulator's state (its keys,
# resource id, CA and identities), into tests/fixtures/upgrade/from-<commit>/. The upgrade test
# (tests/e2e/upgrade.rs) applies them raw to a fresh control plane and lets the current operator
# take them over. Run once per release, on a machine with the suite's tools (as the suite
# installs them); the fixtures are committed, so nothing here runs in CI.
#
# The emulator listens on a fixed port (29431, outside Linux's ephemeral range) because a
# user's status records its endpoint, and issues tokens valid for ten years so that the
# takeover has nothing to renew.
#
# Usage: scripts/capture-upgrade-fixtures.sh COMMIT
set -euo pipefail

commit=${1:?usage: $0 COMMIT}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
short=$(git rev-parse --short=7 "$commit")
out="tests/fixtures/upgrade/from-$short"
port=29431
ns=upgrade-fixture
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git worktree remove --force "$work/src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '[capture] %s\n' "$*" >&2; }

say "building the operator of $short, and the current emulator and control-plane harness"
git worktree add --detach "$work/src" "$commit" >/dev/null
# Its own target directory: the release's binary must not take the place of the current one.
(cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --locked --bin acs-identity-operator)
cp "$work/target/debug/acs-identity-operator" "$work/operator"
cargo build --locked -p acs-emulator --bin acs-emulator -p acs-testenv --bin acs-testenv
tools/build-bins.sh >/dev/null
bin_dir="$root/target/debug"

say "starting a control plane with the CRDs of $short"
"$bin_dir/acs-testenv" up --env-file "$work/testenv.env" --crds "$work/src/crds" >"$work/testenv.log" 2>&1 &
pids+=($!)
for _ in $(seq 180); do [ -s "$work/testenv.env" ] && break; sleep 1; done
# shellcheck disable=SC1091
source "$work/testenv.env"
k() { "$ACS_TESTENV_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }

say "starting the emulator on 127.0.0.1:$port (state in $work/emulator-state.json)"
"$bin_dir/acs-emulator" --listen "127.0.0.1:$port" --state-file "$work/emulator-state.json" \
  --ca-cert-out "$work/ca.pem" --connection-string-out "$work/connection-string" \
  --token-lifetime-seconds 315360000 >"$work/emulator.log" 2>&1 &
emulator=$!
pids+=("$emulator")
for _ in $(seq 30); do [ -s "$work/connection-string" ] && break; sleep 1; done

say "running the operator of $short"
"$work/operator" run --kubeconfig "$KUBECONFIG" --acs-ca-cert "$work/ca.pem" \
  --allowed-endpoint-hosts "127.0.0.1" --metrics-addr 127.0.0.1:0 --log-level info \
  >"$work/operator.log" 2>&1 &
operator=$!
pids+=("$operator")

k create namespace "$ns"
k -n "$ns" create secret generic acs-credentials --from-literal=connectionString="$(cat "$work/connection-string")"
k apply -f - <<EOF
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationUser
metadata: {name: alice, namespace: $ns}
spec: {deletionPolicy: Delete}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationUser
metadata: {name: bob, namespace: $ns}
spec: {deletionPolicy: Retain}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {name: alice-calls, namespace: $ns}
spec: {userRef: {name: alice}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {name: alice-chat, namespace: $ns}
spec:
  userRef: {name: alice}
  scopes: [chat, chat.join]
  expiresInMinutes: 60
  renewBefore: 20m
  secretName: alice-chat-token
  secretTemplate:
    labels: {app: chat}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {name: bob-voip, namespace: $ns}
spec: {userRef: {name: bob}, scopes: [voip]}
EOF
k -n "$ns" wait --for=condition=Ready communicationuser --all --timeout=120s
k -n "$ns" wait --for=condition=Ready communicationtoken --all --timeout=120s

say "stopping the operator and the emulator (the emulator writes its state)"
kill "$operator"; wait "$operator" || true
kill "$emulator"; wait "$emulator" || true

mkdir -p "$out"
k -n "$ns" get communicationusers,communicationtokens -o yaml >"$out/objects.yaml"
k -n "$ns" get secrets -o yaml >"$out/secrets.yaml"
cp "$work/emulator-state.json" "$out/emulator-state.json"
printf 'commit %s\nport %s\nnamespace %s\n' "$(git rev-parse "$commit")" "$port" "$ns" >"$out/SOURCE"
say "captured into $out"
