"""What the service refuses, the emulator refuses the same way, as the official SDK sees it:
expiry bounds and bad scopes (400 ValidationError), a wrong key, a tampered body, a stale or
future date, a signature over another path or host (401 Denied), another resource's identity
(401 IdentityNotOwned), and a deleted identity (a 4xx with the standard error body)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
import requests
from azure.communication.identity import CommunicationIdentityClient, CommunicationUserIdentifier
from azure.communication.identity._shared import policy as sdk_policy
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

import harness

API = "api-version=2023-10-01"


def error_of(excinfo):
    """(status, code, message, target) of an SDK exception, from the service's error body."""
    err = excinfo.value
    assert err.error is not None, f"no standard error body: {err.response.text()!r}"
    return err.status_code, err.error.code, err.error.message, err.error.target


def assert_denied(excinfo):
    assert isinstance(excinfo.value, ClientAuthenticationError)
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (401, "Denied"), (status, code, message)
    assert message == "Denied by the resource provider."


# --- expiry bounds ------------------------------------------------------------------------

@pytest.mark.parametrize("minutes", [0, 59, 1441, 10080])
def test_get_token_rejects_a_lifetime_outside_60_to_1440_minutes(client, minutes):
    user = client.create_user()
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_token(user, ["chat"], token_expires_in=timedelta(minutes=minutes))
    status, code, message, target = error_of(excinfo)
    assert (status, code) == (400, "ValidationError"), message
    assert "[60, 1440]" in message and str(minutes) in message, message
    assert target == "ExpiresInMinutes"


@pytest.mark.parametrize("minutes", [59, 1441])
def test_create_user_and_token_rejects_a_lifetime_outside_the_bounds(client, minutes):
    with pytest.raises(HttpResponseError) as excinfo:
        client.create_user_and_token(["voip"], token_expires_in=timedelta(minutes=minutes))
    status, code, message, target = error_of(excinfo)
    assert (status, code) == (400, "ValidationError"), message
    assert "[60, 1440]" in message and str(minutes) in message, message
    assert target == "ExpiresInMinutes"


# --- scopes -----------------------------------------------------------------------------

def test_get_token_rejects_an_empty_scope_list(client):
    user = client.create_user()
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_token(user, [])
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (400, "ValidationError"), message
    assert "scopes" in message.lower()


def test_get_token_rejects_missing_scopes(client):
    user = client.create_user()
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_token(user, None)  # the SDK sends {"scopes": null}
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (400, "ValidationError"), message
    assert "scopes" in message.lower()


@pytest.mark.parametrize("scopes", [["foo"], ["chat", "pstn"], ["VOIP.JOINED"]])
def test_get_token_rejects_an_unknown_scope(client, scopes):
    user = client.create_user()
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_token(user, scopes)
    status, code, message, _ = error_of(excinfo)
    # 400 as for every other scope error; the exact code is the emulator's documented choice.
    assert (status, code) == (400, "ValidationError"), message


def test_create_user_and_token_rejects_an_unknown_scope(client):
    with pytest.raises(HttpResponseError) as excinfo:
        client.create_user_and_token(["foo"])
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (400, "ValidationError"), message


@pytest.mark.parametrize("scope", ["chat.join", "chat.join.limited", "voip.join"])
def test_a_join_scope_is_rejected_on_an_api_version_that_predates_it(emulator, scope):
    client = CommunicationIdentityClient.from_connection_string(
        emulator.connection_string, api_version="2022-10-01"
    )
    user = client.create_user()
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_token(user, [scope])
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (400, "ValidationError"), message


# --- authentication -----------------------------------------------------------------------

def test_a_wrong_access_key_is_denied(emulator):
    client = CommunicationIdentityClient.from_connection_string(
        emulator.connection_string_with_key(harness.random_access_key())
    )
    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.create_user()
    assert_denied(excinfo)
    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.create_user_and_token(["chat"])
    assert_denied(excinfo)


def test_a_wrong_key_cannot_touch_an_existing_identity(client, emulator):
    user, token = client.create_user_and_token(["chat"])
    intruder = CommunicationIdentityClient.from_connection_string(
        emulator.connection_string_with_key(harness.random_access_key())
    )
    for call in (
        lambda: intruder.get_token(user, ["chat"]),
        lambda: intruder.revoke_tokens(user),
        lambda: intruder.delete_user(user),
    ):
        with pytest.raises(ClientAuthenticationError) as excinfo:
            call()
        assert_denied(excinfo)
    assert emulator.validate(token.token)["valid"] is True
    assert emulator.identity(user.properties["id"])["deleted"] is False


def _swap_scope(request):
    # Same length, so Content-Length still fits: only the signed hash gives the change away.
    body = request.http_request.body
    assert '"voip"' in body, body
    request.http_request.body = body.replace('"voip"', '"chat"')


def test_a_body_changed_after_signing_is_denied(client):
    user = client.create_user()
    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.get_token(user, ["voip"], raw_request_hook=_swap_scope)
    assert_denied(excinfo)
    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.create_user_and_token(["voip"], raw_request_hook=_swap_scope)
    assert_denied(excinfo)


def test_a_body_that_does_not_match_its_own_signed_hash_is_denied(client, emulator):
    user = client.create_user()
    path = f"/identities/{user.properties['id']}/:issueAccessToken?{API}"
    sent = json.dumps({"scopes": ["chat"]}).encode()
    signed = json.dumps({"scopes": ["voip"]}).encode()
    assert harness.raw_call(emulator, "POST", path, sent).status_code == 200  # control
    response = harness.raw_call(emulator, "POST", path, sent, signed_body=signed)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "Denied"


def _date_offset(monkeypatch, seconds: float):
    """Makes the SDK sign (consistently) with a clock that is `seconds` off."""
    monkeypatch.setattr(
        sdk_policy, "get_current_utc_time", lambda: harness.rfc1123(time.time() + seconds)
    )


@pytest.mark.parametrize("seconds", [-600, 600, -3600])
def test_a_correctly_signed_request_with_a_date_far_from_now_is_denied(client, monkeypatch, seconds):
    _date_offset(monkeypatch, seconds)
    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.create_user()
    assert_denied(excinfo)


@pytest.mark.parametrize("seconds", [-120, 120])
def test_a_date_two_minutes_off_is_within_the_clock_skew_window(client, monkeypatch, seconds):
    _date_offset(monkeypatch, seconds)
    user = client.create_user()
    assert user.properties["id"].startswith("8:acs:")


def test_a_date_rewritten_after_signing_is_denied(client):
    def rewrite(request):
        request.http_request.headers["x-ms-date"] = harness.rfc1123(time.time() - 1)

    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.create_user(raw_request_hook=rewrite)
    assert_denied(excinfo)


@pytest.mark.parametrize(
    "case",
    ["no authorization", "bearer", "other path", "other host", "other method", "bad base64"],
)
def test_a_signature_over_anything_but_the_request_as_received_is_denied(emulator, case):
    path = f"/identities?{API}"
    date = harness.rfc1123(time.time())
    headers = harness.signed_headers(emulator.primary_key, "POST", path, emulator.host, b"", date)
    if case == "no authorization":
        del headers["Authorization"]
    elif case == "bearer":
        headers["Authorization"] = "Bearer abc.def.ghi"
    elif case == "other path":
        headers = harness.signed_headers(
            emulator.primary_key, "POST", "/identities?api-version=2022-10-01", emulator.host, b"", date
        )
    elif case == "other host":
        port = emulator.host.rsplit(":", 1)[1]
        headers = harness.signed_headers(
            emulator.primary_key, "POST", path, f"localhost:{port}", b"", date
        )
    elif case == "other method":
        headers = harness.signed_headers(emulator.primary_key, "PUT", path, emulator.host, b"", date)
    elif case == "bad base64":
        headers["Authorization"] = headers["Authorization"].split("Signature=")[0] + "Signature=%%%"
    headers["Accept"] = "application/json"
    response = requests.post(
        emulator.endpoint + path, headers=headers, verify=str(emulator.ca_path), timeout=30
    )
    assert response.status_code == 401, (case, response.status_code, response.text)
    error = response.json()["error"]
    if case != "bearer":  # Entra tokens are another scheme; the service's code for them is unknown
        assert error["code"] == "Denied", response.text
    assert error["message"], response.text


def test_the_raw_signer_is_accepted_when_nothing_is_tampered(emulator):
    response = harness.raw_call(emulator, "POST", f"/identities?{API}")
    assert response.status_code == 201, response.text
    assert response.json()["identity"]["id"].startswith("8:acs:")


# --- identities the caller may not use -------------------------------------------------------

def _foreign_user(resource_guid: str) -> CommunicationUserIdentifier:
    other = str(uuid.uuid4())
    assert other != resource_guid
    raw = f"8:acs:{other}_{uuid.uuid4()}"
    return CommunicationUserIdentifier(raw, raw_id=raw)


@pytest.mark.parametrize("operation", ["get_token", "revoke_tokens", "delete_user"])
def test_an_identity_of_another_resource_is_not_owned(client, resource_guid, operation):
    user = _foreign_user(resource_guid)
    call = {
        "get_token": lambda: client.get_token(user, ["chat"]),
        "revoke_tokens": lambda: client.revoke_tokens(user),
        "delete_user": lambda: client.delete_user(user),
    }[operation]
    with pytest.raises(ClientAuthenticationError) as excinfo:
        call()
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (401, "IdentityNotOwned"), message
    assert message == "Provided identity doesn't belong to the resource."


# --- deleted and unknown identities ---------------------------------------------------------
# The service's answer here is not documented (reference §13); the emulator's documented choice
# is 404 `IdentityNotFound`, which the SDK raises as ResourceNotFoundError.

def assert_identity_not_found(excinfo):
    assert isinstance(excinfo.value, ResourceNotFoundError)
    status, code, message, _ = error_of(excinfo)
    assert (status, code) == (404, "IdentityNotFound"), message
    assert message


@pytest.mark.parametrize("operation", ["get_token", "revoke_tokens", "delete_user"])
def test_a_deleted_identity_cannot_be_used_again(client, emulator, operation):
    user = client.create_user()
    client.delete_user(user)
    call = {
        "get_token": lambda: client.get_token(user, ["chat"]),
        "revoke_tokens": lambda: client.revoke_tokens(user),
        "delete_user": lambda: client.delete_user(user),
    }[operation]
    with pytest.raises(ResourceNotFoundError) as excinfo:
        call()
    assert_identity_not_found(excinfo)
    assert emulator.identity(user.properties["id"])["deleted"] is True


def test_delete_user_twice_fails_the_second_time_and_changes_nothing(client, emulator):
    user, token = client.create_user_and_token(["chat"])
    client.delete_user(user)
    with pytest.raises(ResourceNotFoundError) as excinfo:
        client.delete_user(user)
    assert_identity_not_found(excinfo)
    assert emulator.identity(user.properties["id"])["deleted"] is True
    assert emulator.validate(token.token)["valid"] is False


def test_an_identity_of_this_resource_that_was_never_created_is_not_found(client, resource_guid):
    raw = f"8:acs:{resource_guid}_{uuid.uuid4()}"
    user = CommunicationUserIdentifier(raw, raw_id=raw)
    with pytest.raises(ResourceNotFoundError) as excinfo:
        client.get_token(user, ["chat"])
    assert_identity_not_found(excinfo)


# --- api-versions and routes ----------------------------------------------------------------

@pytest.mark.parametrize("api_version", ["2099-01-01", "2020-01-01", "latest"])
def test_an_unknown_api_version_is_a_4xx_with_the_standard_error_body(emulator, api_version):
    client = CommunicationIdentityClient.from_connection_string(
        emulator.connection_string, api_version=api_version
    )
    with pytest.raises(HttpResponseError) as excinfo:
        client.create_user()
    status, code, message, _ = error_of(excinfo)
    assert 400 <= status < 500 and code and message, (status, code, message)


@pytest.mark.parametrize(
    "method, target",
    [("POST", "/identity?" + API), ("POST", "/identities"), ("GET", "/identities?" + API)],
)
def test_an_unknown_route_or_a_missing_api_version_is_a_4xx_with_the_standard_error_body(
    emulator, method, target
):
    response = harness.raw_call(emulator, method, target)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"], error
