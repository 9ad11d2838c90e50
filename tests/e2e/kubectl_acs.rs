//! `kubectl acs` (the `kubectl-acs` binary) against the real control plane and a running
//! operator, with the caller's kubeconfig only: status, inspect, renew, revoke (with and
//! without confirmation), check. Each request is counted at ACS.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use acs_identity_operator::api::CommunicationToken;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sha2::{Digest, Sha256};

use crate::harness::*;
use crate::support::TestEnv;

/// Runs `kubectl acs <args>` as the test's admin, with `stdin` as its input.
fn kubectl_acs(env: &TestEnv, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-acs"))
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .args(["-n", env.ns()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl-acs runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The row of `name` in `status` output, split into cells.
fn row<'a>(out: &'a str, kind: &str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() > 3 && cells[0] == kind && cells[1] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} row in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_acs_shows_inspects_renews_revokes_and_checks() {
    let (env, acs) = keyed_namespace("kubectl-acs").await;
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    let user_id = ready_user_id(&env, "alice").await;
    ready_tokens(&env, "alice", &["web"]).await;

    // status: one row per object, Ready with its reason, and nothing to do.
    let out = kubectl_acs(&env, &["status"], "");
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    eprintln!("kubectl acs status:\n{s}");
    let header: Vec<&str> = s.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..4], ["KIND", "NAME", "READY", "REASON"], "{s}");
    let web = row(&s, "CommunicationToken", "web");
    assert_eq!(web[2], "True", "{s}");
    assert!(matches!(web[3], "TokenIssued" | "TokenValid"), "{s}");
    assert_eq!(web[4], "in", "expiry in the future: {s}");
    let alice = row(&s, "CommunicationUser", "alice");
    assert_eq!(alice[2], "True", "{s}");
    let missing = kubectl_acs(&env, &["status", "nobody"], "");
    assert!(!missing.status.success());
    assert!(text(&missing).contains("no CommunicationUser or CommunicationToken named nobody"));

    // inspect: the identity, scopes and fingerprint, never the token.
    let token = secret_token(&env, "web").await.unwrap();
    let out = kubectl_acs(&env, &["inspect", "web"], "");
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    eprintln!("kubectl acs inspect web:\n{s}");
    assert!(s.contains(&format!("Identity            {user_id}")), "{s}");
    assert!(s.contains("Scopes              voip"), "{s}");
    let sha: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(s.contains(&format!("SHA-256             {sha}")), "{s}");
    assert!(!s.contains(&token), "inspect printed the token");
    for part in token.split('.') {
        assert!(!s.contains(part), "inspect printed part of the token");
    }

    // renew: one new token, waited for.
    let issued = acs.calls("issueAccessToken").await;
    let out = kubectl_acs(&env, &["renew", "web"], "");
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("revision 2 issued"), "{s}");
    assert_eq!(acs.calls("issueAccessToken").await - issued, 1);
    assert_ne!(secret_token(&env, "web").await.unwrap(), token);

    // revoke: refused without confirmation, nothing revoked; done with --yes.
    let out = kubectl_acs(&env, &["revoke", "alice"], "n\n");
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("aborted: nothing revoked"), "{s}");
    assert_eq!(acs.revocations(&user_id).await, 0);
    let out = kubectl_acs(&env, &["revoke", "alice", "--yes"], "");
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("tokens revoked (epoch 1)"), "{s}");
    assert!(s.contains("every token re-issued"), "{s}");
    assert_eq!(acs.revocations(&user_id).await, 1);
    // It waited for the re-issue: the token already holds a new one of the new epoch.
    let tokens: Api<CommunicationToken> = env.api();
    let st = tokens.get("web").await.unwrap().status.unwrap();
    assert!(st.revision >= 3 && st.revocation_epoch == Some(1), "{st:?}");

    // check: the operator's Deployments (one as the chart labels it, its status set by hand:
    // no controller runs pods here), the CRDs' served versions and the caller's rights.
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "acs-identity-operator", "labels": {
            "app.kubernetes.io/part-of": "acs-identity-operator",
            "app.kubernetes.io/version": "9.9.9"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "op"}},
                 "template": {"metadata": {"labels": {"app": "op"}},
                              "spec": {"containers": [{"name": "operator", "image": "x"}]}}},
    }))
    .unwrap();
    let deployments: Api<Deployment> = env.api();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let status = serde_json::json!({"status": {"replicas": 1, "readyReplicas": 1}});
    deployments
        .patch_status(
            "acs-identity-operator",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    let out = kubectl_acs(&env, &["check"], "");
    let s = text(&out);
    eprintln!("kubectl acs check:\n{s}");
    assert!(
        s.contains(&format!(
            "operator   {}/acs-identity-operator: version 9.9.9, 1/1 replicas ready",
            env.ns()
        )),
        "{s}"
    );
    assert!(
        s.contains(
            "crd        communicationtokens.communication.acs.dev: serves v1alpha1 (storage)"
        ),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "rbac       communicationusers in {}: get, list, watch, create, update, patch, delete",
            env.ns()
        )),
        "{s}"
    );
    // The chart tests' Deployments on this shared control plane run no pods: only they can
    // make it report a problem.
    if !out.status.success() {
        assert!(s.contains(" 0/1 replicas ready"), "{s}");
    }
}
