"""The baseline of the benchmark: what a user would write without the operator.

The ACS quickstart (create a user, issue a token) extended the obvious way: the official Python
SDK (azure-communication-identity) issues each token and the official Kubernetes client
(kubernetes) writes it into a Secret, one after the other. Every `--tokens-per-user` tokens
share one new identity, as the operator's benchmark workload does.

Prints one JSON line at the end: {"tokens": N, "users": U, "seconds": S}, where S is the time of
the loop (client construction and imports excluded, which favours the baseline).

Env: COMMUNICATION_SERVICES_CONNECTION_STRING (as in the quickstart), KUBECONFIG, and
REQUESTS_CA_BUNDLE for the emulator's CA.
"""
import argparse
import json
import os
import time

from azure.communication.identity import CommunicationIdentityClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException


def write_secret(core, namespace, name, data):
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(
            name=name, labels={"app.kubernetes.io/managed-by": "baseline-script"}
        ),
        type="Opaque",
        string_data=data,
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as e:
        # A rerun replaces the token, as a cron job extending the quickstart would.
        if e.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--tokens-per-user", type=int, default=5)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()

    identity = CommunicationIdentityClient.from_connection_string(
        os.environ["COMMUNICATION_SERVICES_CONNECTION_STRING"]
    )
    k8s_config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    core = k8s.CoreV1Api()

    users = 0
    user = None
    start = time.perf_counter()
    for i in range(args.tokens):
        if i % args.tokens_per_user == 0:
            user = identity.create_user()
            users += 1
        token = identity.get_token(user, ["voip"])
        write_secret(
            core,
            args.namespace,
            "baseline-t-%05d" % i,
            {
                "token": token.token,
                "expiresOn": str(token.expires_on),
                "userId": user.properties["id"],
                "scopes": "voip",
            },
        )
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": args.tokens, "users": users, "seconds": seconds}))


if __name__ == "__main__":
    main()
