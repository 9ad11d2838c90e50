"""The original 2020 quickstart runs unchanged against the emulator with the SDK it was written
for (azure-communication-administration 1.0.0b4, the 2020-07-20-preview2 surface, `Date`-signed
HMAC), and its port to azure-communication-identity 1.5.0 runs too; each from
COMMUNICATION_SERVICES_CONNECTION_STRING and the CA bundle, the way a reader would run it."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUN_DEADLINE_SECONDS = 120

OUTPUT = re.compile(
    r"\AAzure Communication Services - User Access Tokens Quickstart\n"
    r"\nCreated a user with ID: (?P<id>8:acs:[^\s:]+):\n"
    r"\nIssued a token with 'voip' scope that expires at (?P<expires>\d\d/\d\d/\d\d \d\d:\d\d \d\d [AP]M):\n"
    r"(?P<token>[A-Za-z0-9+/=_-]+\.[A-Za-z0-9+/=_-]+\.[A-Za-z0-9+/=_-]+)\n"
    r"\nSuccessfully revoked all tokens for user with ID: (?P=id)\n"
    r"\nDeleted the user with ID: (?P=id)\n\Z"
)


def run_quickstart(python: str, program: str, emulator) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["COMMUNICATION_SERVICES_CONNECTION_STRING"] = emulator.connection_string
    env["REQUESTS_CA_BUNDLE"] = str(emulator.ca_path)
    env["SSL_CERT_FILE"] = str(emulator.ca_path)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [python, str(HERE / program)],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_SECONDS,
    )


@pytest.mark.parametrize(
    "program, venv",
    [("quickstart_legacy.py", "ACS_PYTHON_LEGACY"), ("quickstart_current.py", "ACS_PYTHON_CURRENT")],
)
def test_the_quickstart_creates_issues_revokes_and_deletes(emulator, python_envs, program, venv):
    started = datetime.now(timezone.utc)
    result = run_quickstart(python_envs[venv], program, emulator)
    finished = datetime.now(timezone.utc)
    report = f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, report
    assert "Exception:" not in result.stdout, report
    match = OUTPUT.match(result.stdout)
    assert match, report

    # The printed expiry is the default 24 h lifetime, in UTC, to the minute.
    expires = datetime.strptime(match["expires"], "%d/%m/%y %I:%M %S %p").replace(tzinfo=timezone.utc)
    day = timedelta(hours=24)
    assert started + day - timedelta(minutes=1) <= expires <= finished + day, report

    listed = emulator.identity(match["id"])
    assert listed["deleted"] is True, listed
    verdict = emulator.validate(match["token"])
    assert verdict["valid"] is False, verdict


def test_the_legacy_sdk_and_the_current_sdk_live_in_separate_environments(python_envs):
    legacy, current = python_envs["ACS_PYTHON_LEGACY"], python_envs["ACS_PYTHON_CURRENT"]
    assert legacy != current
    probe = "import importlib.metadata as m; print(m.version('{}'))"
    version = lambda py, dist: subprocess.run(  # noqa: E731
        [py, "-c", probe.format(dist)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert version(legacy, "azure-communication-administration") == "1.0.0b4"
    assert version(current, "azure-communication-identity") == "1.5.0"
