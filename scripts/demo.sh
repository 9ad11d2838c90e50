#!/usr/bin/env bash
# The local demo: a real control plane with a real node (kubelet, containerd), the ACS emulator
# (tokens live 45 s, so a rotation shows within a minute) and the operator running as a pod of its
# own image, installed by its Helm chart; applies examples/ (the app Deployment runs the node's
# local busybox image), waits until everything is Ready, shows `kubectl get acs`, the token Secret
# and the app pod printing its token, waits for a rotation and shows how long the new token took
# to reach the running pod, and tears everything down at the end or on Ctrl-C. The node's kubelet
# syncs pods every 10 s (its default is 1 min) so that the rotation reaches the pod within the
# demo's token lifetime. Nothing needs to be installed by hand: missing binaries are built first.
# The node needs root; without it the demo runs the operator as a process on the host instead
# (no pods) and says so.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
LIFETIME=${DEMO_TOKEN_LIFETIME_SECONDS:-45}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  step "tearing down"
  scripts/dev-env.sh down || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node=true
if [ "$(id -u)" != 0 ]; then
  node=false
  echo "not root: no node (kubelet, containerd); the operator runs on the host and no pod starts"
fi
if $node; then
  step "starting a node (control plane, containerd, kubelet), the ACS emulator, and the operator with its Helm chart"
  scripts/dev-env.sh up --node --token-lifetime-seconds "$LIFETIME"
else
  step "starting the control plane, the ACS emulator and the operator"
  scripts/dev-env.sh up --token-lifetime-seconds "$LIFETIME"
fi
# shellcheck disable=SC1091
source target/dev-env/env
k() { "$KUBECTL" "$@"; }

if $node; then
  step "the operator pod (helm install of charts/acs-identity-operator, image $ACS_OPERATOR_IMAGE)"
  k -n acs-system get pods -o wide
fi

step "applying examples/ (the platform team's ClusterCommunicationService and its Secret; the app team's namespace, a CommunicationUser, two CommunicationTokens, a Deployment)"
k create namespace acs-system --dry-run=client -o yaml | k apply -f - >/dev/null
k -n acs-system create secret generic acs-platform --from-literal=connectionString="$ACS_CONNECTION_STRING" \
  --dry-run=client -o yaml | k apply -f - >/dev/null
echo "secret/acs-platform created in acs-system (connection string of the emulator; not printed)"
# The example names a real-looking endpoint; the demo's ACS resource is the emulator.
sed "s|endpoint: https://acs-demo.communication.azure.com.*|endpoint: ${ACS_ENDPOINT%/}|" examples/05-service.yaml | k apply -f -
k apply -f examples/00-namespace.yaml
k apply -f examples/10-user.yaml -f examples/20-tokens.yaml
if $node; then
  # The node has no registry: the app runs the node's local busybox image.
  sed "s|image: busybox:1.37|image: $ACS_APP_IMAGE\n          imagePullPolicy: Never|" examples/30-deployment.yaml | k apply -f -
fi

step "waiting until every resource is Ready"
k wait --for=condition=Ready clustercommunicationservice/acs-demo --timeout=120s
k -n acs-demo wait --for=condition=Ready communicationuser/alice --timeout=120s
k -n acs-demo wait --for=condition=Ready communicationtoken --all --timeout=120s
if $node; then
  k -n acs-demo rollout status deployment/calling-app --timeout=120s
fi

step "kubectl get clustercommunicationservices (the platform team's view)"
k get clustercommunicationservices
step "kubectl get acs -n acs-demo"
k get acs -n acs-demo -o wide

show_secret() {
  local name=$1
  echo "Secret $name:"
  for key in userId scopes expiresOn token; do
    local v
    v=$(k -n acs-demo get secret "$name" -o "jsonpath={.data.$key}" | base64 -d)
    if [ "$key" = token ]; then
      v="${v:0:16}...${v: -6} (${#v} characters)"
    fi
    printf '  %-10s %s\n' "$key:" "$v"
  done
}

step "the token Secret (token shortened)"
show_secret alice-calling
rev=$(k -n acs-demo get communicationtoken alice-calling -o jsonpath='{.status.revision}')
renews=$(k -n acs-demo get communicationtoken alice-calling -o jsonpath='{.status.renewalTime}')

app_log() { k -n acs-demo logs deployment/calling-app --tail="${1:-1}"; }
if $node; then
  step "the app pod reads the mounted token (its log: prefix, SHA-256 fingerprint, expiry)"
  until [ -n "$(app_log 2>/dev/null)" ]; do sleep 1; done
  app_log
  app_pod=$(k -n acs-demo get pods -l app=calling-app -o jsonpath='{.items[0].metadata.name}')
fi

step "waiting for the operator to rotate the token (renewal time $renews)"
k -n acs-demo wait --for=jsonpath='{.status.revision}'="$((rev + 1))" communicationtoken/alice-calling --timeout=90s
rotated=$(date +%s.%N)
show_secret alice-calling
if $node; then
  step "waiting for the new token to reach the running app pod (no restart)"
  fingerprint=$(k -n acs-demo get secret alice-calling -o jsonpath='{.data.token}' | base64 -d | sha256sum | cut -c1-12)
  deadline=$((SECONDS + 120))
  until app_log 2>/dev/null | grep -q "sha256=$fingerprint"; do
    [ $SECONDS -lt $deadline ] || { echo "the new token did not reach the pod within 120 s"; exit 1; }
    sleep 0.5
  done
  printf 'the app pod %s printed the new token %.1f s after the Secret changed (kubelet syncFrequency 10s, app prints every 5 s):\n' \
    "$app_pod" "$(awk -v now="$(date +%s.%N)" -v t="$rotated" 'BEGIN { print now - t }')"
  app_log 3
  k -n acs-demo get pods -l app=calling-app -o custom-columns=POD:.metadata.name,RESTARTS:.status.containerStatuses[0].restartCount
fi
k get acs -n acs-demo
echo
echo "Events:"
k -n acs-demo get events --sort-by=.metadata.creationTimestamp \
  -o custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message | tail -n 12
echo
echo "The demo environment is torn down now. To keep one running: scripts/dev-env.sh up; source target/dev-env/env"
