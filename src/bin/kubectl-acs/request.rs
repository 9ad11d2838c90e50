//! `kubectl acs renew` and `revoke`: an annotation the operator acts on, then a watch for the
//! result. Nothing here talks to ACS.

use std::io::{BufRead, Write};
use std::time::Duration;

use acs_identity_operator::api::condition::types;
use acs_identity_operator::api::{
    CommunicationToken, CommunicationUser, ConditionExt, REVOKE_ANNOTATION, ROTATE_ANNOTATION,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::json;

use crate::{Error, Target};

/// A value no earlier request used: the time, to the nanosecond.
fn fresh_value() -> String {
    jiff::Timestamp::now().to_string()
}

pub async fn renew(t: &Target, name: &str, timeout: Duration) -> Result<(), Error> {
    let api: Api<CommunicationToken> = Api::namespaced(t.client.clone(), &t.namespace);
    let before = api
        .get(name)
        .await
        .map_err(|e| not_found(e, "CommunicationToken", name, t))?;
    let revision = before.status.as_ref().map_or(0, |s| s.revision);
    let patch = json!({"metadata": {"annotations": {ROTATE_ANNOTATION: fresh_value()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("communicationtoken/{name}: renewal requested (revision {revision})");
    let done = tokio::time::timeout(
        timeout,
        await_condition(api, name, move |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref())
                .is_some_and(|s| s.revision > revision && s.conditions.is_true(types::READY))
        }),
    )
    .await
    .map_err(|_| format!("no new token within {timeout:?}: kubectl acs status {name}"))??;
    let st = done.and_then(|t| t.status).unwrap_or_default();
    println!(
        "communicationtoken/{name}: revision {} issued, expires {}",
        st.revision,
        st.expires_on.map_or("-".into(), |e| e.0.to_string())
    );
    Ok(())
}

pub async fn revoke(t: &Target, name: &str, yes: bool, timeout: Duration) -> Result<(), Error> {
    let api: Api<CommunicationUser> = Api::namespaced(t.client.clone(), &t.namespace);
    let user = api
        .get(name)
        .await
        .map_err(|e| not_found(e, "CommunicationUser", name, t))?;
    let epoch = user.revocation_epoch();
    if !yes {
        print!(
            "Revoke every token of communicationuser/{name} in namespace {}? Workloads keep failing until they read the re-issued tokens. [y/N] ",
            t.namespace
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("aborted: nothing revoked");
            return Ok(());
        }
    }
    let patch = json!({"metadata": {"annotations": {REVOKE_ANNOTATION: fresh_value()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("communicationuser/{name}: revocation requested (epoch {epoch})");
    let started = tokio::time::Instant::now();
    let revoked = tokio::time::timeout(
        timeout,
        await_condition(api, name, move |u: Option<&CommunicationUser>| {
            u.is_some_and(|u| u.revocation_epoch() > epoch)
        }),
    )
    .await
    .map_err(|_| format!("not revoked within {timeout:?}: kubectl acs status {name}"))??;
    let epoch = revoked.map_or(epoch + 1, |u| u.revocation_epoch());
    println!("communicationuser/{name}: tokens revoked (epoch {epoch}); waiting for the re-issue");
    // Its tokens: re-issued once each holds a token of the new epoch and is Ready (suspended
    // ones are not re-issued).
    let tokens: Api<CommunicationToken> = Api::namespaced(t.client.clone(), &t.namespace);
    let mine = |tok: &CommunicationToken| tok.spec.user_ref.name == name && !tok.spec.suspend;
    loop {
        let pending: Vec<String> = tokens
            .list(&Default::default())
            .await?
            .into_iter()
            .filter(|tok| mine(tok))
            .filter(|tok| {
                !tok.status.as_ref().is_some_and(|s| {
                    s.revocation_epoch.is_some_and(|e| e >= epoch)
                        && s.conditions.is_true(types::READY)
                })
            })
            .map(|tok| kube::ResourceExt::name_any(&tok))
            .collect();
        if pending.is_empty() {
            println!("communicationuser/{name}: every token re-issued");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "not re-issued within {timeout:?}: {} (kubectl acs status)",
                pending.join(", ")
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn not_found(e: kube::Error, kind: &str, name: &str, t: &Target) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("{kind} {name} not found in namespace {}", t.namespace).into()
        }
        e => e.into(),
    }
}
