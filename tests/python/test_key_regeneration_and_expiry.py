"""Key rotation and token expiry as the SDK and a downstream service see them. Regenerating an
access key (admin API) makes the old key's requests 401 `Denied` and revokes every token minted
under it, as rotating a key does on the service, while the other key and its tokens carry on.
A token past its lifetime is judged expired. Runs on an emulator of its own, since it changes
the keys and the token lifetime."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from azure.communication.identity import CommunicationIdentityClient
from azure.core.exceptions import ClientAuthenticationError

import harness
import tokens


@pytest.fixture(scope="module")
def rotating(tmp_path_factory):
    with harness.emulator_process(tmp_path_factory.mktemp("rotating")) as running:
        yield running


def sdk_client(emulator, key: str) -> CommunicationIdentityClient:
    return CommunicationIdentityClient.from_connection_string(
        emulator.connection_string_with_key(key), connection_verify=str(emulator.ca_path)
    )


def test_regenerating_a_key_denies_it_and_revokes_only_the_tokens_it_minted(rotating):
    primary = sdk_client(rotating, rotating.primary_key)
    secondary = sdk_client(rotating, rotating.secondary_key)
    user, by_primary = primary.create_user_and_token(["chat"])
    by_secondary = secondary.get_token(user, ["voip"])
    assert rotating.validate(by_primary.token)["valid"] is True
    assert rotating.validate(by_secondary.token)["valid"] is True

    response = rotating.admin("POST", "keys/regenerate", json={"key": "primary"})
    assert response.status_code == 200, response.text
    new_connection_string = response.json()["connectionString"]
    assert rotating.primary_key not in new_connection_string

    with pytest.raises(ClientAuthenticationError) as excinfo:
        primary.get_token(user, ["chat"])
    assert (excinfo.value.status_code, excinfo.value.error.code) == (401, "Denied")

    verdict = rotating.validate(by_primary.token)
    assert verdict == {**verdict, "valid": False, "reason": "keyRegenerated"}, verdict
    assert rotating.validate(by_secondary.token)["valid"] is True

    rotated = CommunicationIdentityClient.from_connection_string(
        new_connection_string, connection_verify=str(rotating.ca_path)
    )
    fresh = rotated.get_token(user, ["chat"])
    assert rotating.validate(fresh.token)["valid"] is True
    rotated.delete_user(user)
    assert rotating.validate(by_secondary.token)["valid"] is False


def test_a_token_past_its_lifetime_is_judged_expired(rotating):
    client = sdk_client(rotating, rotating.secondary_key)
    lifetime = 2
    response = rotating.admin("PUT", "config", json={"tokenLifetimeSeconds": lifetime})
    assert response.status_code == 200, response.text
    try:
        user = client.create_user()
        before = tokens.now()
        # The client asks for the default; the override is the emulator's, not the request's.
        token = client.get_token(user, ["chat"])
        after = tokens.now()
    finally:
        reset = rotating.admin("PUT", "config", json={"tokenLifetimeSeconds": None})
        assert reset.status_code == 200, reset.text
    expires = tokens.parse_expires_on(token.expires_on)
    assert before + timedelta(seconds=lifetime) - tokens.SLACK <= expires
    assert expires <= after + timedelta(seconds=lifetime) + tokens.SLACK
    assert abs(tokens.jwt_exp(token.token) - expires.timestamp()) <= 1

    # Poll, with a deadline, until the downstream check turns it down.
    deadline = time.monotonic() + lifetime + 10
    while (verdict := rotating.validate(token.token))["valid"]:
        assert time.monotonic() < deadline, f"token still valid past its lifetime: {verdict}"
    assert verdict["reason"] == "expired", verdict
    assert tokens.now() >= expires - timedelta(seconds=1)

    # The override is gone: the next token has the requested lifetime again.
    before = tokens.now()
    again = client.get_token(user, ["chat"], token_expires_in=timedelta(minutes=60))
    tokens.assert_lifetime(again, 60, before, tokens.now())
