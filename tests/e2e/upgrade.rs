//! Upgrades (issue 22, item 4): the objects and Secrets exactly as the previous release stored
//! them (captured once by `scripts/capture-upgrade-fixtures.sh` into
//! `tests/fixtures/upgrade/from-<commit>/`) are applied raw to the real control plane, and the
//! current operator takes them over with no ACS call, no token re-issued, no Secret written and
//! every object Ready.
//!
//! Applying them raw changes only what a new apiserver assigns: UIDs (a token Secret's owner
//! reference follows its token's new UID, as it would have kept the old one in place), the
//! namespace (the test's own), resourceVersions and timestamps. The emulator resumes from the
//! captured state on the captured port, since a user's status records its endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use acs_emulator::EmulatorConfig;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use crate::harness::*;
use crate::support::{eventually, TestEnv};

/// The release whose stored objects are taken over.
const FIXTURE: &str = "tests/fixtures/upgrade/from-8157296";
/// The port the fixtures' emulator listened on (see the capture script).
const PORT: u16 = 29431;

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURE)
        .join(file)
}

/// The items of a `kubectl get -o yaml` List.
fn items(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(file)).expect("fixture");
    let list: Value = serde_yaml::from_str(&text).expect("fixture YAML");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// An object as stored, with what only its apiserver assigns removed, in namespace `ns`.
fn as_new(mut obj: Value, ns: &str) -> Value {
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        meta.remove(k);
    }
    meta.insert("namespace".into(), Value::String(ns.into()));
    obj
}

fn resource(obj: &Value) -> ApiResource {
    let gvk = kube::api::GroupVersionKind::try_from(&kube::api::TypeMeta {
        api_version: obj["apiVersion"].as_str().expect("apiVersion").into(),
        kind: obj["kind"].as_str().expect("kind").into(),
    })
    .expect("gvk");
    let plural = format!("{}s", gvk.kind.to_ascii_lowercase());
    ApiResource::from_gvk_with_plural(&gvk, &plural)
}

/// Creates the users and tokens with their stored status; returns each one's new UID by
/// `Kind/name`.
async fn apply_objects(env: &TestEnv) -> BTreeMap<String, String> {
    let mut uids = BTreeMap::new();
    for item in items("objects.yaml") {
        let status = item["status"].clone();
        let obj = as_new(item, env.ns());
        let ar = resource(&obj);
        let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), env.ns(), &ar);
        let dynamic: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
        let created = api
            .create(&PostParams::default(), &dynamic)
            .await
            .expect("create the stored object");
        let name = created.metadata.name.clone().expect("name");
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .expect("restore the stored status");
        uids.insert(
            format!("{}/{name}", obj["kind"].as_str().unwrap_or_default()),
            created.metadata.uid.expect("uid"),
        );
    }
    uids
}

/// Creates the Secrets, their owner references following their owners' new UIDs; returns the
/// token Secrets' data by name.
async fn apply_secrets(env: &TestEnv, uids: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    let api: Api<Secret> = env.api();
    let mut data = BTreeMap::new();
    for item in items("secrets.yaml") {
        let mut obj = as_new(item, env.ns());
        for owner in obj["metadata"]["ownerReferences"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let key = format!(
                "{}/{}",
                owner["kind"].as_str().unwrap_or_default(),
                owner["name"].as_str().unwrap_or_default()
            );
            owner["uid"] = Value::String(uids.get(&key).expect("owner in the fixtures").clone());
        }
        let secret: Secret = serde_json::from_value(obj.clone()).expect("secret");
        let name = secret.metadata.name.clone().expect("name");
        if obj["metadata"]["ownerReferences"].is_array() {
            data.insert(name.clone(), obj["data"].clone());
        }
        api.create(&PostParams::default(), &secret)
            .await
            .expect("create the stored Secret");
    }
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_stored_by_the_previous_release_are_taken_over_without_an_acs_call_or_a_reissue() {
    let env = TestEnv::new("upgrade").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("emulator-state.json");
    std::fs::copy(fixture("emulator-state.json"), &state).expect("copy the emulator state");
    let acs = Acs::start_with(EmulatorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], PORT)),
        state_file: Some(state),
        token_lifetime_seconds: Some(315_360_000),
        ..EmulatorConfig::default()
    })
    .await;

    let uids = apply_objects(&env).await;
    let stored = apply_secrets(&env, &uids).await;
    let tokens = uids
        .keys()
        .filter(|k| k.starts_with("CommunicationToken/"))
        .count();
    let users = uids.len() - tokens;
    assert!(
        tokens >= 3 && users >= 2,
        "the fixtures hold users and tokens"
    );
    assert_eq!(stored.len(), tokens, "one Secret per token");

    let mut op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    // Every object reconciled once by the new operator.
    for (controller, n) in [("communicationuser", users), ("communicationtoken", tokens)] {
        let sample = format!(
            "acs_identity_operator_reconciles_total{{controller=\"{controller}\",result=\"ok\"}}"
        );
        eventually(
            &format!("every {controller} reconciled"),
            CONVERGE,
            || async {
                let done = op.metric(&sample).await;
                if done >= n as f64 {
                    Ok(())
                } else {
                    Err(done)
                }
            },
        )
        .await;
    }

    // Nothing follows either: no ACS call during a few more seconds (checked every 100 ms).
    let quiet_until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < quiet_until {
        assert_eq!(
            acs.total_calls().await,
            0,
            "no ACS call: {}",
            acs.stats().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for (kind, plural) in [
        ("CommunicationUser", "communicationusers"),
        ("CommunicationToken", "communicationtokens"),
    ] {
        let ar = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("communication.acs.dev", "v1alpha1", kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), env.ns(), &ar);
        for obj in api.list(&Default::default()).await.unwrap() {
            let v = serde_json::to_value(&obj).unwrap();
            let ready = v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                ready["status"], "True",
                "{kind} {:?} Ready: {ready}",
                obj.metadata.name
            );
        }
    }
    // No re-issue: the Secrets hold the stored tokens, and nothing was issued.
    let secrets: Api<Secret> = env.api();
    for (name, data) in &stored {
        let now = serde_json::to_value(secrets.get(name).await.unwrap().data).unwrap();
        assert_eq!(&now, data, "Secret {name} unchanged");
    }
    let issued: f64 = op
        .metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("acs_identity_operator_token_issuances_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(issued, 0.0, "no token issued");
    let logs = op.logs();
    assert!(
        !logs.contains("TokenIssued") && !logs.contains("TokenRotated"),
        "a token was issued:\n{logs}"
    );
    op.stop();
}
