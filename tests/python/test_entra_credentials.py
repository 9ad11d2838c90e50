"""The official SDK through a TokenCredential against the emulator's Entra stand-in:
azure-identity's ClientSecretCredential (MSAL: OpenID discovery, then the token endpoint),
ClientAssertionCredential and WorkloadIdentityCredential (a projected ServiceAccount token
from a local HTTPS issuer), passed to CommunicationIdentityClient(endpoint, credential). The
SDK asks for `https://communication.azure.com//.default` and sends only the bearer token; the
emulator checks the principal's data-plane role at every request."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import requests
from azure.communication.identity import CommunicationIdentityClient
from azure.communication.identity.aio import (
    CommunicationIdentityClient as AsyncCommunicationIdentityClient,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential

import harness
import oidc_issuer

ACS_SCOPE = "https://communication.azure.com//.default"
OWNER = "Communication and Email Service Owner"


def register(emulator, **body) -> dict:
    response = emulator.admin("POST", "entra/clients", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def secret_credential(emulator, registered: dict) -> ClientSecretCredential:
    return ClientSecretCredential(
        registered["tenantId"],
        registered["clientId"],
        registered["clientSecret"],
        authority=emulator.endpoint,
        disable_instance_discovery=True,
    )


def claims_of(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def entra_stats(emulator) -> dict:
    response = emulator.admin("GET", "stats")
    assert response.status_code == 200, response.text
    return response.json()["entra"]


def test_client_secret_credential_drives_every_sdk_operation(emulator):
    registered = register(emulator, displayName="sdk", secret=True, roles=["Contributor"])
    credential = secret_credential(emulator, registered)
    access = credential.get_token(ACS_SCOPE)
    claims = claims_of(access.token)
    assert claims["aud"] == "https://communication.azure.com"
    assert claims["tid"] == registered["tenantId"]
    assert claims["appid"] == registered["clientId"]
    assert claims["iss"] == f"{emulator.endpoint}/{registered['tenantId']}/v2.0"

    before = entra_stats(emulator)["bearerRequests"].get("accepted", 0)
    client = CommunicationIdentityClient(emulator.endpoint, credential)
    user = client.create_user()
    token = client.get_token(user, ["chat"])
    verdict = emulator.validate(token.token)
    assert verdict["valid"] is True and verdict["keySlot"] == "entra", verdict
    other, other_token = client.create_user_and_token(["voip"])
    assert emulator.validate(other_token.token)["valid"] is True
    client.revoke_tokens(other)
    assert emulator.validate(other_token.token)["reason"] == "revoked"
    client.delete_user(other)
    assert emulator.identity(other.properties["id"])["deleted"] is True
    after = entra_stats(emulator)["bearerRequests"]["accepted"]
    assert after - before == 5, (before, after)


def test_the_async_sdk_and_credential_work_too(emulator):
    registered = register(emulator, secret=True, roles=[OWNER])

    async def run():
        credential = AsyncClientSecretCredential(
            registered["tenantId"],
            registered["clientId"],
            registered["clientSecret"],
            authority=emulator.endpoint,
            disable_instance_discovery=True,
        )
        async with credential, AsyncCommunicationIdentityClient(emulator.endpoint, credential) as client:
            return await client.create_user_and_token(["chat"])

    user, token = asyncio.run(run())
    assert emulator.identity(user.properties["id"])["deleted"] is False
    assert emulator.validate(token.token)["valid"] is True


def test_a_principal_without_a_role_is_refused_until_it_has_one(emulator):
    registered = register(emulator, secret=True, roles=[])
    client = CommunicationIdentityClient(emulator.endpoint, secret_credential(emulator, registered))
    with pytest.raises(HttpResponseError) as excinfo:
        client.create_user()
    assert excinfo.value.status_code == 403
    assert excinfo.value.error.code == "AuthorizationFailed"
    assert registered["clientId"] in excinfo.value.error.message

    response = emulator.admin(
        "PUT", f"entra/clients/{registered['clientId']}/roles", json={"roles": ["Contributor"]}
    )
    assert response.status_code == 200, response.text
    # The same client and its cached token work once the role is assigned.
    assert client.create_user().properties["id"].startswith("8:acs:")


def test_a_wrong_secret_fails_in_the_credential_with_aadsts7000215(emulator):
    registered = register(emulator, secret=True, roles=["Contributor"])
    registered["clientSecret"] += "x"
    client = CommunicationIdentityClient(emulator.endpoint, secret_credential(emulator, registered))
    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.create_user()
    assert "AADSTS7000215" in str(excinfo.value)


@pytest.fixture(scope="module")
def federated(tmp_path_factory):
    """A dedicated emulator that trusts a local ServiceAccount issuer (`--oidc-ca-cert`), logging
    at debug level so the test can read what it logs."""
    issuer = oidc_issuer.Issuer()
    workdir = tmp_path_factory.mktemp("federated")
    extra = ("--oidc-ca-cert", str(issuer.ca_path), "--log-level", "debug")
    try:
        with harness.emulator_process(workdir, extra) as running:
            yield running, issuer
    finally:
        issuer.close()


@pytest.fixture
def federated_env(federated, monkeypatch):
    """The dedicated emulator has a CA of its own: requests (sync SDK) must trust it instead."""
    running, issuer = federated
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_path))
    return running, issuer


def workload_client(running, issuer, namespace="apps", name="acs") -> dict:
    return register(
        running,
        displayName="workload",
        federated=[{
            "issuer": issuer.url,
            "subject": f"system:serviceaccount:{namespace}:{name}",
            "audience": oidc_issuer.EXCHANGE_AUDIENCE,
        }],
        roles=[OWNER],
    )


def test_workload_identity_credential_exchanges_a_service_account_token(federated_env, tmp_path):
    running, issuer = federated_env
    registered = workload_client(running, issuer)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(issuer.service_account_token("apps", "acs"))
    credential = WorkloadIdentityCredential(
        tenant_id=registered["tenantId"],
        client_id=registered["clientId"],
        token_file_path=str(token_file),
        authority=running.endpoint,
    )
    client = CommunicationIdentityClient(running.endpoint, credential)
    user, token = client.create_user_and_token(["chat", "voip"])
    verdict = running.validate(token.token)
    assert verdict["valid"] is True and verdict["keySlot"] == "entra", verdict
    assert claims_of(credential.get_token(ACS_SCOPE).token)["appidacr"] == "2"


def test_client_assertion_credential_and_the_assertion_errors(federated_env):
    running, issuer = federated_env
    registered = workload_client(running, issuer, name="callable")
    assertion = issuer.service_account_token("apps", "callable")
    credential = ClientAssertionCredential(
        registered["tenantId"], registered["clientId"], lambda: assertion, authority=running.endpoint
    )
    client = CommunicationIdentityClient(running.endpoint, credential)
    assert client.create_user().properties["id"].startswith("8:acs:")

    # Another service account, and an expired token, are refused as Entra refuses them.
    for wrong, code in [
        (issuer.service_account_token("apps", "other"), "AADSTS700213"),
        (issuer.service_account_token("apps", "callable", exp=1_000_000_000), "AADSTS700024"),
    ]:
        refused = ClientAssertionCredential(
            registered["tenantId"], registered["clientId"], lambda w=wrong: w, authority=running.endpoint
        )
        with pytest.raises(ClientAuthenticationError) as excinfo:
            CommunicationIdentityClient(running.endpoint, refused).create_user()
        assert code in str(excinfo.value)

    # Nothing secret reached the emulator's debug log.
    logs = running.stderr_path.read_text(errors="replace")
    assert "entra token issued" in logs
    assert assertion not in logs and assertion.rsplit(".", 1)[1] not in logs
    access = credential.get_token(ACS_SCOPE).token
    assert access not in logs and access.rsplit(".", 1)[1] not in logs


def test_the_discovery_documents_msal_reads(emulator):
    registered = register(emulator, secret=True, roles=[])
    tenant = registered["tenantId"]
    ca = str(emulator.ca_path)
    config = requests.get(
        f"{emulator.endpoint}/{tenant}/v2.0/.well-known/openid-configuration", verify=ca, timeout=30
    ).json()
    assert config["token_endpoint"] == f"{emulator.endpoint}/{tenant}/oauth2/v2.0/token"
    assert config["issuer"] == f"{emulator.endpoint}/{tenant}/v2.0"
    keys = requests.get(config["jwks_uri"], verify=ca, timeout=30).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA"
    instance = requests.get(
        f"{emulator.endpoint}/common/discovery/instance",
        params={
            "api-version": "1.1",
            "authorization_endpoint": f"{emulator.endpoint}/{tenant}/oauth2/v2.0/authorize",
        },
        verify=ca,
        timeout=30,
    ).json()
    assert instance["tenant_discovery_endpoint"] == (
        f"{emulator.endpoint}/{tenant}/v2.0/.well-known/openid-configuration"
    )
    assert instance["metadata"][0]["aliases"] == [emulator.host]
