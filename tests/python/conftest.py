"""Session fixtures of the Python SDK conformance suite: one emulator process over TLS for the
whole run, trusted by the SDKs through REQUESTS_CA_BUNDLE / SSL_CERT_FILE exactly as a user
would point them at its CA, and clients built from its connection string."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from azure.communication.identity import CommunicationIdentityClient

import harness


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """The emulator every test shares, with the service's default limits."""
    with harness.emulator_process(tmp_path_factory.mktemp("emulator")) as running:
        saved = {name: os.environ.get(name) for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
        # requests (sync SDK) reads REQUESTS_CA_BUNDLE; OpenSSL's default context (aiohttp, the
        # async SDK) reads SSL_CERT_FILE. Loopback only, so trusting just its CA is enough.
        os.environ["REQUESTS_CA_BUNDLE"] = str(running.ca_path)
        os.environ["SSL_CERT_FILE"] = str(running.ca_path)
        try:
            yield running
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="session")
def client(emulator):
    """The current SDK's sync client, built the way the docs show: from the connection string."""
    return CommunicationIdentityClient.from_connection_string(emulator.connection_string)


@pytest.fixture(scope="session")
def resource_guid(client):
    """The emulated resource's immutable id: the first GUID of every identity it creates."""
    user = client.create_user()
    match = re.fullmatch(r"8:acs:([0-9a-f-]{36})_(.+)", user.properties["id"])
    assert match, f"identity id {user.properties['id']!r} is not 8:acs:<resource>_<id>"
    return match.group(1)


def _python_envs() -> dict:
    """Venv interpreters from run.sh's environment, else from scripts/python-env.sh (idempotent,
    quick once the venvs exist)."""
    names = ("ACS_PYTHON_CURRENT", "ACS_PYTHON_LEGACY")
    if all(os.environ.get(n) for n in names):
        return {n: os.environ[n] for n in names}
    script = harness.REPO_ROOT / "scripts" / "python-env.sh"
    out = subprocess.run([str(script)], check=True, capture_output=True, text=True).stdout
    envs = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if name in names:
            envs[name] = shlex.split(value)[0]
    assert set(envs) == set(names), f"python-env.sh printed {out!r}"
    return envs


@pytest.fixture(scope="session")
def python_envs() -> dict:
    envs = _python_envs()
    for name, path in envs.items():
        assert Path(path).is_file(), f"{name}={path} does not exist; run scripts/python-env.sh"
    return envs
