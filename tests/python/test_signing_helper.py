"""The suite's own raw-request signer must sign exactly as the SDK does, or the raw-request
tests (tampered body, stale date, 429 headers) would prove nothing. Checked against every
current-SDK vector, and against the installed SDK's own policy at the current time."""

import base64
import email.utils
import json
from pathlib import Path

import pytest
from azure.communication.identity._shared import policy as sdk_policy

import harness

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "acs-hmac-vectors.json").read_text()
)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_the_raw_signer_reproduces_each_sdk_vector(vector):
    body = base64.b64decode(vector["body_base64"])
    headers = harness.signed_headers(
        VECTORS["access_key_base64"],
        vector["method"],
        vector["path_and_query_signed"],
        vector["host_signed"],
        body,
        vector["x-ms-date"],
    )
    assert headers["x-ms-content-sha256"] == vector["x-ms-content-sha256"]
    assert headers["Authorization"] == vector["authorization"]


def test_the_raw_signer_formats_dates_like_the_sdk():
    # The SDK's own formatter, called now, and ours for the same second must agree.
    sdk_date = sdk_policy.get_current_utc_time()
    parsed = email.utils.parsedate_to_datetime(sdk_date)
    assert harness.rfc1123(parsed.timestamp()) == sdk_date
