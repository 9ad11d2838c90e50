"""Throttling as the SDK meets it: the emulator's per-resource limits and injected 429s answer
with `Retry-After` and the standard error body, and azure-core's retry policy, which retries a
POST only when a `Retry-After` is present, waits and then succeeds, or gives up after its
budget. Runs on an emulator of its own with a tiny create limit, so the shared one keeps the
service's limits and no fault leaks into other tests."""

from __future__ import annotations

import time

import pytest
from azure.communication.identity import CommunicationIdentityClient, CommunicationUserIdentifier
from azure.core.exceptions import HttpResponseError

import harness

CREATE_LIMIT_WINDOW_SECONDS = 2
API = "api-version=2023-10-01"


@pytest.fixture(scope="module")
def throttled(tmp_path_factory):
    with harness.emulator_process(
        tmp_path_factory.mktemp("throttled"),
        ("--rate-limit", f"create=1/{CREATE_LIMIT_WINDOW_SECONDS}"),
    ) as running:
        yield running


def sdk_client(emulator, **kwargs) -> CommunicationIdentityClient:
    # Its own CA: this emulator is not the one REQUESTS_CA_BUNDLE points at.
    return CommunicationIdentityClient.from_connection_string(
        emulator.connection_string, connection_verify=str(emulator.ca_path), **kwargs
    )


def stats(emulator) -> dict:
    response = emulator.admin("GET", "stats")
    assert response.status_code == 200, response.text
    return response.json()


def count(snapshot: dict, operation: str, status: int) -> int:
    return int(snapshot["operations"].get(operation, {}).get(str(status), 0))


@pytest.fixture
def faults(throttled):
    """Sets faults for one test and always clears them afterwards."""

    def put(config: dict) -> None:
        response = throttled.admin("PUT", "faults", json=config)
        assert response.status_code in (200, 204), response.text

    yield put
    put({})


def wait_for_create_window(emulator) -> str:
    """Polls (with a deadline) until a create is admitted again, so a test knows the state of
    the limit: the probe's own create has just filled the window. Returns the created id."""
    deadline = time.monotonic() + 10 * CREATE_LIMIT_WINDOW_SECONDS
    while True:
        response = harness.raw_call(emulator, "POST", f"/identities?{API}")
        if response.status_code == 201:
            return response.json()["identity"]["id"]
        assert response.status_code == 429, response.text
        assert time.monotonic() < deadline, "the create limit never admitted a request again"


def test_a_rate_limited_request_gets_429_with_retry_after_and_the_error_body(throttled):
    wait_for_create_window(throttled)
    response = harness.raw_call(throttled, "POST", f"/identities?{API}")
    assert response.status_code == 429, response.text
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), response.headers
    assert 1 <= int(retry_after) <= CREATE_LIMIT_WINDOW_SECONDS, retry_after
    error = response.json()["error"]
    assert error["code"] and error["message"], error


def test_the_sdk_waits_out_a_rate_limit_and_then_creates(throttled):
    client = sdk_client(throttled)
    wait_for_create_window(throttled)
    before = stats(throttled)
    started = time.monotonic()
    # The window is full (the probe's create): this create is throttled first, and succeeds
    # only because the SDK retries a POST when, and only when, the 429 carries Retry-After.
    user = client.create_user()
    elapsed = time.monotonic() - started
    after = stats(throttled)
    assert user.properties["id"].startswith("8:acs:")
    throttled_now = count(after, "createIdentity", 429) - count(before, "createIdentity", 429)
    assert 1 <= throttled_now <= 3, after
    assert count(after, "createIdentity", 201) - count(before, "createIdentity", 201) == 1
    assert after["throttled"] - before["throttled"] == throttled_now
    # It waited for the window rather than hammering: at least most of one Retry-After.
    assert elapsed >= CREATE_LIMIT_WINDOW_SECONDS / 2, elapsed


def test_an_injected_429_names_its_retry_after_and_is_retried_by_the_sdk(throttled, faults):
    faults({"rate429": 1.0, "retryAfterSeconds": 7, "operations": ["issueAccessToken"]})
    client = sdk_client(throttled)
    user_id = wait_for_create_window(throttled)
    response = harness.raw_call(
        throttled, "POST", f"/identities/{user_id}/:issueAccessToken?{API}", b'{"scopes": ["chat"]}'
    )
    assert response.status_code == 429, response.text
    assert response.headers.get("Retry-After") == "7", response.headers
    assert response.json()["error"]["code"], response.text

    faults({"rate429": 1.0, "retryAfterSeconds": 1, "operations": ["issueAccessToken"]})
    before = stats(throttled)
    with pytest.raises(HttpResponseError) as excinfo:
        sdk_client(throttled, retry_total=2).get_token(_user(user_id), ["chat"])
    after = stats(throttled)
    assert excinfo.value.status_code == 429
    # One try plus the two retries the client allowed, each after the Retry-After.
    assert count(after, "issueAccessToken", 429) - count(before, "issueAccessToken", 429) == 3
    assert after["injected"].get("429", 0) - before["injected"].get("429", 0) == 3

    faults({})
    token = client.get_token(_user(user_id), ["chat"])
    assert throttled.validate(token.token)["valid"] is True


def _user(raw_id: str) -> CommunicationUserIdentifier:
    return CommunicationUserIdentifier(raw_id, raw_id=raw_id)
