#!/usr/bin/env bash
# Runs the Python SDK conformance suite against the emulator: prepares the virtual environments
# (scripts/python-env.sh, cached), then pytest with the current-SDK venv. The legacy venv's
# interpreter reaches the suite through ACS_PYTHON_LEGACY. Exit code = pytest's, except that
# "no tests collected" (5) is turned into a failure (1): a run that tested nothing must not pass.
#
# Usage: tests/python/run.sh [pytest args...]
# Env:   ACS_EMULATOR_BIN    emulator binary (default: $CARGO_TARGET_DIR/debug/acs-emulator,
#                            CARGO_TARGET_DIR defaulting to target/; build it with
#                            `cargo build -p acs-emulator`)
#        ACS_OPERATOR_CACHE  cache root for the venvs (see scripts/python-env.sh)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac  # as cargo resolves it
export ACS_EMULATOR_BIN=${ACS_EMULATOR_BIN:-$target_dir/debug/acs-emulator}

envs=$("$root/scripts/python-env.sh")
eval "$envs"
export ACS_PYTHON_CURRENT ACS_PYTHON_LEGACY

cd "$here"
set +e
PYTHONDONTWRITEBYTECODE=1 "$ACS_PYTHON_CURRENT" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$rc"
