//! The CRDs' own validation on the apiserver, without an operator: every admission case of the
//! reliability suite's bad-input table (OpenAPI bounds and formats, CEL rules with
//! `messageExpression`) and the immutable fields (CEL transition rules on `oldSelf`) are refused
//! with a 422 naming the field. Cheap enough for the compatibility tier, where it proves the
//! oldest supported apiserver evaluates every rule the CRDs carry.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{json, Value};

use crate::support::TestEnv;

#[allow(dead_code)]
#[path = "../reliability/bad_cases.rs"]
mod bad_cases;

use bad_cases::Expect;

fn api_for(env: &TestEnv, kind: &str) -> Api<DynamicObject> {
    let ar = if kind == "Secret" {
        ApiResource::erase::<Secret>(&())
    } else {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            acs_identity_operator::api::GROUP,
            acs_identity_operator::api::VERSION,
            kind,
        ))
    };
    Api::namespaced_with(env.client.clone(), env.ns(), &ar)
}

async fn create_json(env: &TestEnv, body: &Value) -> Result<(), kube::Error> {
    let kind = body["kind"].as_str().expect("object with a kind");
    let obj: DynamicObject = serde_json::from_value(body.clone()).expect("object");
    api_for(env, kind)
        .create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
}

async fn merge_spec(env: &TestEnv, kind: &str, name: &str, spec: Value) -> Result<(), kube::Error> {
    api_for(env, kind)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .map(|_| ())
}

/// `None` when `result` is a 422 naming `field`, else what happened instead.
fn refusal_problem(field: &str, result: Result<(), kube::Error>) -> Option<String> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(field) => None,
        Err(kube::Error::Api(s)) => Some(format!("{} {}", s.code, s.message)),
        Err(e) => Some(format!("error: {e}")),
        Ok(()) => Some("accepted".into()),
    }
}

#[tokio::test]
async fn every_bad_input_of_the_table_is_refused_at_admission_naming_its_field() {
    let env = TestEnv::new("admission-table").await;
    let mut checked = 0;
    let mut problems = Vec::new();
    for case in bad_cases::admission_cases() {
        let Expect::Rejected { field } = case.expect else {
            continue;
        };
        checked += 1;
        let result = create_json(&env, &case.objects[0]).await;
        if let Some(p) = refusal_problem(field, result) {
            problems.push(format!("{} (expected `{field}`): {p}", case.label));
        }
    }
    eprintln!("admission: {checked} table cases checked");
    assert!(checked >= 30, "only {checked} admission cases");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn immutable_fields_are_refused_on_update_by_the_transition_rules() {
    let env = TestEnv::new("admission-immutable").await;
    let id = |suffix: &str| format!("8:acs:00000000-0000-0000-0000-000000000000_{suffix}");
    for obj in [
        bad_cases::user(
            "u",
            json!({"identityId": id("first"), "deletionPolicy": "Retain"}),
        ),
        bad_cases::token("t-default", json!({"userRef": {"name": "u"}})),
        bad_cases::token(
            "t-named",
            json!({"userRef": {"name": "u"}, "secretName": "t-first"}),
        ),
    ] {
        create_json(&env, &obj)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", obj["metadata"]["name"]));
    }
    let tok = "CommunicationToken";
    let cases = [
        (
            tok,
            "t-default",
            json!({"userRef": {"name": "other"}}),
            "userRef is immutable",
        ),
        (
            tok,
            "t-named",
            json!({"secretName": "t-second"}),
            "secretName is immutable",
        ),
        (
            tok,
            "t-default",
            json!({"secretName": "t-other"}),
            "secretName is immutable",
        ),
        (
            "CommunicationUser",
            "u",
            json!({"identityId": id("second")}),
            "identityId is immutable",
        ),
    ];
    let mut problems = Vec::new();
    for (kind, name, spec, message) in cases {
        let result = merge_spec(&env, kind, name, spec.clone()).await;
        if let Some(p) = refusal_problem(message, result) {
            problems.push(format!("{kind} {name} {spec} (expected `{message}`): {p}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A change to a mutable field still goes through.
    merge_spec(&env, tok, "t-named", json!({"expiresInMinutes": 120}))
        .await
        .expect("a mutable field can change");
}
