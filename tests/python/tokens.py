"""Checks on what the emulator returns for a token, shared by the test modules: the `expiresOn`
string as the service writes it, and agreement between it, the JWT's `exp`, and the requested
lifetime."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from azure.communication.identity._shared.user_credential import CommunicationTokenCredential

# The service writes .NET DateTimeOffset round-trip dates: up to 7 fractional digits and an
# explicit +00:00 offset (recordings: `2022-11-16T09:48:02.7233445+00:00`).
EXPIRES_ON = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?\+00:00$")
# The emulator and the suite share one clock; this only absorbs the time a call takes.
SLACK = timedelta(seconds=5)


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_expires_on(expires_on) -> datetime:
    assert isinstance(expires_on, str), f"1.5.0 hands expiresOn through as a string, got {expires_on!r}"
    assert EXPIRES_ON.match(expires_on), f"expiresOn {expires_on!r} is not shaped like the service's"
    return datetime.fromisoformat(expires_on)


def assert_lifetime(access_token, minutes: int, before: datetime, after: datetime) -> None:
    """`access_token` (azure.core AccessToken from the SDK) expires `minutes` after it was issued
    (between `before` and `after`), and its JWT `exp` says the same as `expiresOn`."""
    expires = parse_expires_on(access_token.expires_on)
    lifetime = timedelta(minutes=minutes)
    assert before + lifetime - SLACK <= expires <= after + lifetime + SLACK, (
        f"expiresOn {access_token.expires_on} is not {minutes} min after issue "
        f"({before.isoformat()} .. {after.isoformat()})"
    )
    exp = jwt_exp(access_token.token)
    assert abs(exp - expires.timestamp()) <= 1, f"JWT exp {exp} != expiresOn {access_token.expires_on}"


def jwt_exp(token: str) -> int:
    """`exp` as the SDK's own CommunicationTokenCredential reads it (standard base64 + '=='): the
    check that catches a base64url payload with '-' or '_' in it."""
    payload = token.split(".")[1]
    assert "-" not in payload and "_" not in payload, "token payload segment has base64url characters"
    with CommunicationTokenCredential(token) as credential:
        parsed = credential.get_token()
    assert parsed.token == token
    assert isinstance(parsed.expires_on, int)
    return parsed.expires_on
