"""Test harness of the Python SDK conformance suite: starts the emulator binary, talks to its
admin API, and signs raw requests the way the official SDK does (for the checks that must go
around the SDK). Fixtures live in conftest.py; this module holds the plain code they use."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_SECONDS = 60.0
LISTENING_LINE = re.compile(r"^acs-emulator listening on (https?://\S+)\s*$")
EMPTY_BODY_SHA256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def emulator_binary() -> Path:
    """The emulator binary: $ACS_EMULATOR_BIN, else $CARGO_TARGET_DIR/debug/acs-emulator
    (CARGO_TARGET_DIR defaulting to target/); relative paths are taken from the repository root."""
    configured = os.environ.get("ACS_EMULATOR_BIN")
    if configured:
        path = Path(configured)
    else:
        path = Path(os.environ.get("CARGO_TARGET_DIR") or "target") / "debug" / "acs-emulator"
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def random_access_key() -> str:
    """A key shaped like a real ACS access key: 64 random bytes, standard base64 (88 chars)."""
    return base64.b64encode(os.urandom(64)).decode("ascii")


@dataclass
class Emulator:
    """A running emulator process and what the suite needs to reach it."""

    process: subprocess.Popen
    endpoint: str
    connection_string: str
    primary_key: str
    secondary_key: str
    ca_path: Path
    stderr_path: Path
    stdout_lines: list = field(default_factory=list)

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc

    def connection_string_with_key(self, key: str) -> str:
        return f"endpoint={self.endpoint}/;accesskey={key}"

    def diagnostics(self) -> str:
        """The emulator's output so far, for assertion messages (the emulator is a dev tool that
        may print its own dev keys; the suite's keys are random per run)."""
        try:
            err = self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            err = "<no stderr file>"
        out = "\n".join(self.stdout_lines[-50:])
        return f"--- emulator stdout (tail) ---\n{out}\n--- emulator stderr (tail) ---\n{err}"

    # Admin API (fixed routes of docs/emulator.md).
    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method, f"{self.endpoint}/_emulator/{path}", verify=str(self.ca_path), timeout=30, **kwargs
        )

    def identities(self) -> list:
        response = self.admin("GET", "identities")
        assert response.status_code == 200, response.text
        return response.json()["identities"]

    def identity(self, identity_id: str) -> dict:
        matches = [i for i in self.identities() if i["id"] == identity_id]
        assert len(matches) == 1, f"{identity_id} listed {len(matches)} times by /_emulator/identities"
        return matches[0]

    def validate(self, token: str) -> dict:
        response = self.admin("POST", "validate", json={"token": token})
        assert response.status_code == 200, response.text
        verdict = response.json()
        assert isinstance(verdict.get("valid"), bool), verdict
        return verdict


def start_emulator(workdir: Path, extra_args: tuple = ()) -> Emulator:
    """Starts the emulator on an ephemeral loopback port over TLS and waits, with a deadline, for
    its `acs-emulator listening on <endpoint>` line. Raises RuntimeError with a clear message when
    the binary is missing or does not come up."""
    binary = emulator_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise RuntimeError(
            f"emulator binary not found at {binary}: build it with `cargo build -p acs-emulator` "
            "(or point ACS_EMULATOR_BIN at it)"
        )
    primary, secondary = random_access_key(), random_access_key()
    ca_path = workdir / "emulator-ca.pem"
    conn_path = workdir / "connection-string.txt"
    stderr_path = workdir / "emulator.stderr"
    argv = [
        str(binary),
        "--listen",
        "127.0.0.1:0",
        "--access-key",
        primary,
        "--access-key",
        secondary,
        "--ca-cert-out",
        str(ca_path),
        "--connection-string-out",
        str(conn_path),
        *extra_args,
    ]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, cwd=workdir
        )
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    seen: list = []

    def pump() -> None:
        # Drains stdout for the whole run so the emulator never blocks on a full pipe.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            seen.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="emulator-stdout", daemon=True).start()
    emulator = Emulator(process, "", "", primary, secondary, ca_path, stderr_path, seen)

    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    try:
        first = lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        stop_emulator(emulator)
        raise RuntimeError(
            f"emulator printed nothing within {STARTUP_DEADLINE_SECONDS}s\n{emulator.diagnostics()}"
        ) from None
    if first is None:
        code = process.wait(timeout=10)
        raise RuntimeError(f"emulator exited with {code} before listening\n{emulator.diagnostics()}")
    match = LISTENING_LINE.match(first)
    if not match:
        stop_emulator(emulator)
        raise RuntimeError(
            f"first stdout line is not `acs-emulator listening on <endpoint>`: {first!r}\n"
            f"{emulator.diagnostics()}"
        )
    emulator.endpoint = match.group(1).rstrip("/")
    # The contract: both files exist once the listening line is out.
    emulator.connection_string = conn_path.read_text().strip()
    assert ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----"), "CA file is not PEM"
    return emulator


def stop_emulator(emulator: Emulator) -> Optional[int]:
    """Stops the process (SIGTERM, then SIGKILL after a deadline); returns its exit code."""
    process = emulator.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    return process.returncode


# HMAC signing exactly as azure-communication-identity 1.5.0 does it (checked against the
# vectors in tests/fixtures/acs-hmac-vectors.json by test_signing_helper.py).
def rfc1123(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def content_sha256(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def signature(key_b64: str, string_to_sign: str) -> str:
    digest = hmac.new(base64.b64decode(key_b64), string_to_sign.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def signed_headers(
    key_b64: str,
    method: str,
    path_and_query: str,
    host: str,
    body: bytes,
    date: str,
    signed_body: Optional[bytes] = None,
) -> dict:
    """Headers the SDK would send. `signed_body` (default: `body`) is what the hash and signature
    cover, so a caller can sign one body and send another."""
    digest = content_sha256(body if signed_body is None else signed_body)
    to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{digest}"
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": digest,
        "x-ms-return-client-request-id": "true",
        "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
        + signature(key_b64, to_sign),
    }


def raw_call(
    emulator: Emulator,
    method: str,
    path_and_query: str,
    body: bytes = b"",
    *,
    key: Optional[str] = None,
    date: Optional[str] = None,
    signed_body: Optional[bytes] = None,
    extra_headers: Optional[dict] = None,
) -> requests.Response:
    """One HMAC-signed request sent with `requests`, outside the SDK (requests sends the path
    as given, so the signed target is the target on the wire)."""
    headers = signed_headers(
        key or emulator.primary_key,
        method,
        path_and_query,
        emulator.host,
        body,
        date or rfc1123(time.time()),
        signed_body,
    )
    headers["Accept"] = "application/json"
    if body:
        headers["Content-Type"] = "application/json"
    headers.update(extra_headers or {})
    return requests.request(
        method,
        emulator.endpoint + path_and_query,
        data=body,
        headers=headers,
        verify=str(emulator.ca_path),
        timeout=30,
    )


@contextlib.contextmanager
def emulator_process(workdir: Path, extra_args: tuple = ()):
    """One emulator process for the duration of the block; a start-up failure or a crash during
    the block fails the tests (never a skip: a suite that cannot reach the emulator shows
    nothing)."""
    failure = None
    try:
        running = start_emulator(workdir, extra_args)
    except RuntimeError as err:
        failure = str(err)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield running
    finally:
        alive = running.process.poll() is None
        code = stop_emulator(running)
        if not alive:
            pytest.fail(
                f"the emulator died during the run (exit {code})\n{running.diagnostics()}",
                pytrace=False,
            )
