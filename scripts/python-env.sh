#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environments of the SDK conformance suite and prints
# their interpreters. Each requirements file gets its own venv under the cache root, named after
# the sha-256 of the file's bytes and of the interpreter version, so a reused machine skips the
# install and an edited pin list (or a new python3) gets a fresh venv. A venv counts as ready only
# once its install finished (marker file), so an interrupted run is redone, never half-used.
#
# Usage:  scripts/python-env.sh             progress on stderr; on stdout:
#           ACS_PYTHON_CURRENT=<venv>/bin/python   (tests/python/requirements.txt)
#           ACS_PYTHON_LEGACY=<venv>/bin/python    (tests/python/requirements-legacy.txt)
#         eval "$(scripts/python-env.sh)"   exports nothing itself; callers assign or export.
#         scripts/python-env.sh --bench     only the benchmark's venv; on stdout:
#           ACS_PYTHON_BENCH=<venv>/bin/python     (bench/requirements.txt)
# Env:    ACS_OPERATOR_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/acs-identity-operator)
#         PYTHON3              interpreter to build the venvs from (default: python3)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}
python=${PYTHON3:-python3}

log() { printf 'python-env: %s\n' "$*" >&2; }

bench=false
case "${1:-}" in
  "") ;;
  --bench) bench=true ;;
  *) log "usage: $0 [--bench]"; exit 2 ;;
esac

command -v "$python" >/dev/null 2>&1 || { log "error: $python not found"; exit 1; }
py_version=$("$python" -c 'import sys; print(sys.version)')
mkdir -p "$cache"

# ensure_venv REQUIREMENTS_FILE -> prints the venv's python path on stdout.
ensure_venv() {
  local req=$1
  [ -f "$req" ] || { log "error: missing $req"; return 1; }
  local sha
  sha=$( { cat "$req"; printf '\n%s\n' "$py_version"; } | sha256sum | cut -c1-16)
  local venv="$cache/venv-$sha"
  local marker="$venv/.acs-install-complete"

  # One installer per venv at a time (CI and a developer may share the cache).
  exec {lock_fd}>"$venv.lock"
  flock "$lock_fd"
  if [ -f "$marker" ] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "reusing $venv for ${req#"$root"/}"
  else
    log "creating $venv for ${req#"$root"/}"
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    # The venv's own pip, quiet but not silent; output goes to stderr so stdout stays parseable.
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -r "$req" >&2
    "$venv/bin/python" -m pip check >&2
    printf '%s\n' "$req" > "$marker"
    log "installed ${req#"$root"/}"
  fi
  flock -u "$lock_fd"
  exec {lock_fd}>&-
  printf '%s\n' "$venv/bin/python"
}

if [ "$bench" = true ]; then
  bench_python=$(ensure_venv "$root/bench/requirements.txt")
  printf 'ACS_PYTHON_BENCH=%q\n' "$bench_python"
  exit 0
fi

current=$(ensure_venv "$root/tests/python/requirements.txt")
legacy=$(ensure_venv "$root/tests/python/requirements-legacy.txt")
printf 'ACS_PYTHON_CURRENT=%q\n' "$current"
printf 'ACS_PYTHON_LEGACY=%q\n' "$legacy"
