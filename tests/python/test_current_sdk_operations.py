"""Every operation of azure-communication-identity 1.5.0 (sync and async) succeeds against the
emulator over TLS from a connection string, and what comes back behaves like the service's:
ids of the resource, tokens whose lifetime, `exp` and `expiresOn` agree, revocation ordered so a
token issued right after a revoke is valid, and delete that makes the id unusable."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from azure.communication.identity import (
    CommunicationIdentityClient,
    CommunicationTokenScope,
    CommunicationUserIdentifier,
)
from azure.communication.identity.aio import (
    CommunicationIdentityClient as AsyncCommunicationIdentityClient,
)

import tokens

ALL_SCOPES = [s.value for s in CommunicationTokenScope]
ACS_ID = re.compile(r"^8:acs:[0-9a-f-]{36}_[0-9a-f-]{36}$")


def test_the_sdk_knows_exactly_the_five_documented_scopes():
    assert sorted(ALL_SCOPES) == sorted(["chat", "voip", "chat.join", "chat.join.limited", "voip.join"])


def test_create_user_returns_a_new_acs_identity_that_the_emulator_lists(client, emulator, resource_guid):
    first = client.create_user()
    second = client.create_user()
    for user in (first, second):
        assert isinstance(user, CommunicationUserIdentifier)
        assert ACS_ID.match(user.properties["id"]), user.properties["id"]
        assert user.raw_id == user.properties["id"]
        assert user.properties["id"].startswith(f"8:acs:{resource_guid}_")
        listed = emulator.identity(user.properties["id"])
        assert listed["deleted"] is False
    assert first.properties["id"] != second.properties["id"], "create is not idempotent: ids must differ"


def test_create_user_and_token_without_expiry_issues_a_24_hour_token(client, emulator):
    before = tokens.now()
    user, token = client.create_user_and_token(["chat", "voip"])
    after = tokens.now()
    assert ACS_ID.match(user.properties["id"])
    tokens.assert_lifetime(token, 1440, before, after)
    assert emulator.validate(token.token)["valid"] is True


@pytest.mark.parametrize("minutes", [60, 1440])
def test_create_user_and_token_honours_token_expires_in(client, emulator, minutes):
    before = tokens.now()
    user, token = client.create_user_and_token(["voip"], token_expires_in=timedelta(minutes=minutes))
    after = tokens.now()
    tokens.assert_lifetime(token, minutes, before, after)
    assert emulator.validate(token.token)["valid"] is True
    assert emulator.identity(user.properties["id"])["deleted"] is False


@pytest.mark.parametrize("scope", ALL_SCOPES)
def test_get_token_accepts_each_scope_alone(client, emulator, scope):
    user = client.create_user()
    before = tokens.now()
    token = client.get_token(user, [scope])
    after = tokens.now()
    tokens.assert_lifetime(token, 1440, before, after)
    verdict = emulator.validate(token.token)
    assert verdict["valid"] is True, verdict
    assert (verdict["id"], verdict["scopes"]) == (user.properties["id"], [scope]), verdict


def test_get_token_accepts_all_five_scopes_together(client, emulator):
    user = client.create_user()
    before = tokens.now()
    token = client.get_token(user, list(CommunicationTokenScope))
    after = tokens.now()
    tokens.assert_lifetime(token, 1440, before, after)
    verdict = emulator.validate(token.token)
    assert verdict["valid"] is True, verdict
    assert sorted(verdict["scopes"]) == sorted(ALL_SCOPES), verdict


@pytest.mark.parametrize("minutes", [60, 61, 720, 1439, 1440])
def test_get_token_honours_every_lifetime_within_the_bounds(client, emulator, minutes):
    user = client.create_user()
    before = tokens.now()
    token = client.get_token(user, ["chat"], token_expires_in=timedelta(minutes=minutes))
    after = tokens.now()
    tokens.assert_lifetime(token, minutes, before, after)
    assert emulator.validate(token.token)["valid"] is True


@pytest.mark.parametrize("api_version", ["2021-03-07", "2022-06-01", "2022-10-01", "2023-10-01"])
def test_every_api_version_the_sdk_offers_works(emulator, api_version):
    client = CommunicationIdentityClient.from_connection_string(
        emulator.connection_string, api_version=api_version
    )
    before = tokens.now()
    user, first = client.create_user_and_token(["chat"])
    second = client.get_token(user, ["voip"])
    after = tokens.now()
    for token in (first, second):
        tokens.assert_lifetime(token, 1440, before, after)
    client.revoke_tokens(user)
    assert emulator.validate(second.token)["valid"] is False
    client.delete_user(user)
    assert emulator.identity(user.properties["id"])["deleted"] is True


def test_the_token_credential_of_the_sdk_parses_every_minted_token(client):
    # Many tokens, so a payload that only sometimes base64-encodes to '-'/'_' is caught too.
    user = client.create_user()
    for scopes in ([s] for s in ALL_SCOPES * 4):
        token = client.get_token(user, scopes)
        tokens.jwt_exp(token.token)


def test_revoke_invalidates_earlier_tokens_and_a_token_issued_right_after_is_valid(client, emulator):
    user = client.create_user()
    chat = client.get_token(user, ["chat"])
    voip = client.get_token(user, ["voip"])
    for token in (chat, voip):
        assert emulator.validate(token.token)["valid"] is True

    assert client.revoke_tokens(user) is None
    for token in (chat, voip):
        verdict = emulator.validate(token.token)
        assert verdict["valid"] is False, verdict
        assert "revok" in str(verdict["reason"]).lower(), verdict

    # Same second as the revoke: only a sequence-ordered revocation gets this right.
    fresh = client.get_token(user, ["voip"])
    assert emulator.validate(fresh.token)["valid"] is True
    assert emulator.validate(voip.token)["valid"] is False


def test_revoke_without_tokens_succeeds_and_twice_in_a_row_too(client, emulator):
    user = client.create_user()
    client.revoke_tokens(user)
    client.revoke_tokens(user)
    token = client.get_token(user, ["chat"])
    assert emulator.validate(token.token)["valid"] is True


def test_delete_user_marks_the_identity_deleted_and_invalidates_its_tokens(client, emulator):
    user, token = client.create_user_and_token(["chat"])
    assert emulator.validate(token.token)["valid"] is True
    assert client.delete_user(user) is None
    assert emulator.identity(user.properties["id"])["deleted"] is True
    verdict = emulator.validate(token.token)
    assert verdict["valid"] is False, verdict
    assert "delet" in str(verdict["reason"]).lower(), verdict


def test_the_secondary_access_key_works_like_the_primary(emulator):
    client = CommunicationIdentityClient.from_connection_string(
        emulator.connection_string_with_key(emulator.secondary_key)
    )
    user, token = client.create_user_and_token(["voip"])
    assert emulator.validate(token.token)["valid"] is True
    client.delete_user(user)


def test_the_connection_string_file_names_the_endpoint_and_the_primary_key(emulator):
    pairs = dict(
        part.split("=", 1) for part in emulator.connection_string.strip().rstrip(";").split(";")
    )
    pairs = {k.lower(): v for k, v in pairs.items()}
    assert pairs["endpoint"].rstrip("/") == emulator.endpoint
    assert pairs["endpoint"].startswith("https://127.0.0.1:")
    assert pairs["accesskey"] == emulator.primary_key


def test_the_async_client_runs_every_operation(emulator):
    # aiohttp sends the id with literal colons in the path; the SDK signs that form.
    async def flow():
        async with AsyncCommunicationIdentityClient.from_connection_string(
            emulator.connection_string
        ) as client:
            user = await client.create_user()
            before = tokens.now()
            other, first = await client.create_user_and_token(
                ["chat", "voip"], token_expires_in=timedelta(minutes=60)
            )
            second = await client.get_token(user, list(CommunicationTokenScope))
            third = await client.get_token(user, ["voip"], token_expires_in=timedelta(minutes=1440))
            after = tokens.now()
            tokens.assert_lifetime(first, 60, before, after)
            tokens.assert_lifetime(second, 1440, before, after)
            tokens.assert_lifetime(third, 1440, before, after)
            await client.revoke_tokens(user)
            revoked = [emulator.validate(t.token)["valid"] for t in (second, third)]
            fresh = await client.get_token(user, ["chat"])
            await client.delete_user(user)
            await client.delete_user(other)
            return user, other, first, revoked, fresh

    user, other, first, revoked, fresh = asyncio.run(flow())
    assert revoked == [False, False]
    for identity in (user, other):
        assert emulator.identity(identity.properties["id"])["deleted"] is True
    for token in (first, fresh):
        assert emulator.validate(token.token)["valid"] is False


def test_responses_echo_the_client_request_id_the_sdk_sends(client):
    # The SDK asks for the echo (x-ms-return-client-request-id: true); service recordings show it.
    seen = {}

    def capture(pipeline_response):
        seen["sent"] = pipeline_response.http_request.headers["x-ms-client-request-id"]
        seen["echoed"] = pipeline_response.http_response.headers.get("x-ms-client-request-id")

    user = client.create_user(raw_response_hook=capture)
    assert seen["sent"] and seen["echoed"] == seen["sent"], seen
    client.delete_user(user, raw_response_hook=capture)
    assert seen["sent"] and seen["echoed"] == seen["sent"], seen
