#!/usr/bin/env bash
# The local demo: a real control plane, the ACS emulator (tokens live 45 s, so a rotation shows
# within a minute) and the operator; applies examples/, waits until everything is Ready, shows
# `kubectl get acs` and the token Secret, waits for a rotation, and tears everything down at the
# end or on Ctrl-C. Nothing needs to be installed by hand: missing binaries are built first.
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

step "starting the control plane, the ACS emulator and the operator"
scripts/dev-env.sh up --token-lifetime-seconds "$LIFETIME"
# shellcheck disable=SC1091
source target/dev-env/env
k() { "$KUBECTL" "$@"; }

step "applying examples/ (namespace, credentials, a CommunicationUser, two CommunicationTokens, a Deployment)"
k apply -f examples/00-namespace.yaml
k -n acs-demo create secret generic acs-credentials --from-literal=connectionString="$ACS_CONNECTION_STRING" \
  --dry-run=client -o yaml | k apply -f - >/dev/null
echo "secret/acs-credentials created (connection string of the emulator; not printed)"
k apply -f examples/

step "waiting until every resource is Ready"
k -n acs-demo wait --for=condition=Ready communicationuser/alice --timeout=120s
k -n acs-demo wait --for=condition=Ready communicationtoken --all --timeout=120s

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

step "waiting for the operator to rotate the token (renewal time $renews)"
k -n acs-demo wait --for=jsonpath='{.status.revision}'="$((rev + 1))" communicationtoken/alice-calling --timeout=90s
show_secret alice-calling
k get acs -n acs-demo
echo
echo "Events:"
k -n acs-demo get events --sort-by=.metadata.creationTimestamp \
  -o custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message | tail -n 12
echo
echo "The demo environment is torn down now. To keep one running: scripts/dev-env.sh up; source target/dev-env/env"
