//! Scenario 6: a table of bad inputs (see `bad_cases.rs`), each rejected at admission with the
//! field named, or turned into a condition and an event, while a healthy control token in the
//! same namespace keeps working and the operator process never restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use acs_identity_operator::api::{CommunicationToken, CommunicationUser};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::bad_cases::{self, Case, Expect, Inputs};
use crate::fleet::{self, poll, spawn, Stage, SuiteRef};
use crate::harness::{create_token, create_user, free_port, token_spec};
use crate::report::CaseRow;
use crate::support::TestEnv;

pub const NAME: &str = "6. Bad input";

/// How long the operator has to turn an accepted bad input into a condition and an event.
const JUDGED_WITHIN: Duration = Duration::from_secs(90);

pub async fn run(suite: SuiteRef) {
    let stage = Stage::new(&suite, "rel-bad", Default::default()).await;
    let other = TestEnv::new("rel-bad-other").await;
    let elsewhere: Api<CommunicationUser> = other.api();
    elsewhere
        .create(
            &PostParams::default(),
            &CommunicationUser::new("elsewhere", Default::default()),
        )
        .await
        .expect("user in another namespace");

    let mut op = spawn(&suite, stage.args("op-bad", &[]));
    let pid = op.pid();
    create_user(&stage.env, "control", Default::default()).await;
    create_token(&stage.env, "control", token_spec("control")).await;
    fleet::wait_tokens_ready(&stage.env, 1, Duration::from_secs(60)).await;
    let credentials_before = credentials(&stage).await;

    let wrong_key = base64::engine::general_purpose::STANDARD
        .encode([rand::random::<[u8; 32]>(), rand::random::<[u8; 32]>()].concat());
    suite.add_key(&wrong_key);
    let inputs = Inputs {
        endpoint: stage.acs.emu.endpoint(),
        resource: stage.acs.emu.resource_id().to_string(),
        wrong_key,
        closed_port: free_port(),
    };

    let mut handled = 0;
    let mut total = 0;
    for case in bad_cases::admission_cases() {
        total += 1;
        let Expect::Rejected { field } = case.expect else {
            continue;
        };
        let result = create_json(&stage.env, &case.objects[0]).await;
        handled += usize::from(record_rejection(&suite, &case.label, field, result));
    }
    for (label, field, result) in immutability_cases(&stage).await {
        total += 1;
        handled += usize::from(record_rejection(&suite, label, field, result));
    }

    let mut cases = bad_cases::condition_cases(&inputs);
    for case in &cases {
        for obj in &case.objects {
            if let Err(e) = create_json(&stage.env, obj).await {
                panic!("{}: creating {}: {e}", case.label, obj["metadata"]["name"]);
            }
        }
    }
    let (first, second, conflict) = bad_cases::conflicting_secret_names();
    create_json(&stage.env, &first)
        .await
        .expect("first claimant");
    let tokens = stage.tokens();
    poll(
        "the first claimant of a Secret name to be Ready",
        JUDGED_WITHIN,
        Duration::from_millis(250),
        || async {
            let t = tokens.get("c-dup-first").await.map_err(|e| e.to_string())?;
            let ready = t.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if ready {
                Ok(())
            } else {
                Err(format!("{:?}", t.status))
            }
        },
    )
    .await;
    create_json(&stage.env, &second)
        .await
        .expect("second claimant");
    cases.push(conflict);
    total += cases.len();
    handled += judge_conditions(&suite, &stage, &cases).await;

    suite.check(
        NAME,
        "bad inputs rejected naming the field, or turned into a condition and an event",
        format!("{total} of {total} (≥ 30)"),
        format!("{handled} of {total}"),
        handled == total && total >= 30,
    );
    let alive = op.is_running() && op.pid() == pid;
    suite.check(
        NAME,
        "operator process never crashed or restarted",
        format!("pid {} alive", pid.unwrap_or(0)),
        if alive { "alive" } else { "exited" },
        alive,
    );
    let kept = credentials(&stage).await == credentials_before;
    suite.check(
        NAME,
        "credentials Secret untouched by a token naming it",
        "unchanged",
        if kept { "unchanged" } else { "CHANGED" },
        kept,
    );
    // The control keeps being served: a forced rotation and a brand-new token both complete.
    let served = control_still_served(&stage).await;
    suite.check(
        NAME,
        "control token rotated on demand and a new token became Ready after all cases",
        "both within 60 s",
        &served,
        served == "both",
    );
    fleet::gather_evidence(&suite, &stage.env, Some(&op)).await;
    op.kill();
}

/// Records an admission case; true when it was rejected with a message naming `field`.
fn record_rejection(
    suite: &SuiteRef,
    label: &str,
    field: &str,
    result: Result<(), kube::Error>,
) -> bool {
    let (ok, observed) = match result {
        Ok(()) => (false, "accepted".to_string()),
        Err(kube::Error::Api(s)) => (
            s.code == 422 && s.message.contains(field),
            format!("{} {}", s.code, s.message),
        ),
        Err(e) => (false, format!("error: {e}")),
    };
    suite.case(CaseRow {
        case: label.to_string(),
        expected: format!("rejected at admission naming `{field}`"),
        observed,
        ok,
    });
    ok
}

/// Updates of immutable fields, which the API must refuse. They target objects of their own,
/// so a change that gets through cannot disturb the control token.
async fn immutability_cases(
    stage: &Stage,
) -> Vec<(&'static str, &'static str, Result<(), kube::Error>)> {
    let tokens: Api<CommunicationToken> = stage.env.api();
    let users: Api<CommunicationUser> = stage.env.api();
    let pp = PatchParams::default();
    let id = |suffix: &str| format!("8:acs:{}_{suffix}", stage.acs.emu.resource_id());
    for obj in [
        bad_cases::user(
            "c-immutable",
            json!({"identityId": id("first"), "deletionPolicy": "Retain"}),
        ),
        bad_cases::token(
            "c-immutable-default",
            json!({"userRef": {"name": "c-immutable"}}),
        ),
        bad_cases::token(
            "c-immutable-named",
            json!({"userRef": {"name": "c-immutable"}, "secretName": "c-immutable-first"}),
        ),
    ] {
        create_json(&stage.env, &obj)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", obj["metadata"]["name"]));
    }
    let patch = |name: &'static str, spec: Value| {
        let tokens = tokens.clone();
        let users = users.clone();
        let pp = pp.clone();
        async move {
            let body = Patch::Merge(json!({ "spec": spec }));
            if name == "c-immutable" {
                users.patch(name, &pp, &body).await.map(|_| ())
            } else {
                tokens.patch(name, &pp, &body).await.map(|_| ())
            }
        }
    };
    vec![
        (
            "changing a token's userRef",
            "userRef is immutable",
            patch(
                "c-immutable-default",
                json!({"userRef": {"name": "someone-else"}}),
            )
            .await,
        ),
        (
            "changing a token's secretName",
            "secretName is immutable",
            patch(
                "c-immutable-named",
                json!({"secretName": "c-immutable-second"}),
            )
            .await,
        ),
        (
            "setting a token's secretName after creation (it defaulted to the token's name)",
            "secretName is immutable",
            patch(
                "c-immutable-default",
                json!({"secretName": "c-immutable-other"}),
            )
            .await,
        ),
        (
            "changing a user's identityId",
            "identityId is immutable",
            patch("c-immutable", json!({"identityId": id("second")})).await,
        ),
    ]
}

/// Polls until every condition case shows its condition and event, then records each; returns
/// how many did.
async fn judge_conditions(suite: &SuiteRef, stage: &Stage, cases: &[Case]) -> usize {
    let deadline = Instant::now() + JUDGED_WITHIN;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut done: BTreeMap<String, bool> = BTreeMap::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let world = World::read(stage).await;
        for c in cases {
            let Expect::Condition {
                kind,
                name,
                reasons,
            } = &c.expect
            else {
                continue;
            };
            let (cond, events) = world.about(kind, name);
            let matched = cond.as_ref().is_some_and(|c| {
                c.status == "False"
                    && reasons.contains(&c.reason.as_str())
                    && events.iter().any(|(r, _)| *r == c.reason)
            });
            let observed = format!(
                "{} / events: {}",
                cond.map_or("no Ready condition".to_string(), |c| format!(
                    "Ready={} {}: {}",
                    c.status, c.reason, c.message
                )),
                if events.is_empty() {
                    "none".to_string()
                } else {
                    events
                        .iter()
                        .map(|(r, t)| format!("{t} {r}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            seen.insert(c.label.clone(), observed);
            done.insert(c.label.clone(), matched);
        }
        if done.values().all(|d| *d) || Instant::now() >= deadline {
            break;
        }
    }
    let mut handled = 0;
    for c in cases {
        let Expect::Condition { reasons, .. } = &c.expect else {
            continue;
        };
        let reason = reasons.join(" or ");
        let ok = done.get(&c.label).copied().unwrap_or(false);
        handled += usize::from(ok);
        suite.case(CaseRow {
            case: c.label.clone(),
            expected: format!("Ready=False {reason} + event {reason}"),
            observed: seen.get(&c.label).cloned().unwrap_or_default(),
            ok,
        });
    }
    handled
}

/// One reading of users, tokens and events.
struct World {
    users: Vec<CommunicationUser>,
    tokens: Vec<CommunicationToken>,
    /// (object name, reason, type)
    events: Vec<(String, String, String)>,
}

impl World {
    async fn read(stage: &Stage) -> World {
        let lp = ListParams::default();
        let users = stage
            .users()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let tokens = stage
            .tokens()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let ev: Api<k8s_openapi::api::events::v1::Event> = stage.env.api();
        let events = ev
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e.regarding.and_then(|r| r.name).unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.type_.unwrap_or_default(),
                )
            })
            .collect();
        World {
            users,
            tokens,
            events,
        }
    }

    fn about(&self, kind: &str, name: &str) -> (Option<Condition>, Vec<(String, String)>) {
        let conditions = match kind {
            "CommunicationUser" => self
                .users
                .iter()
                .find(|u| u.name_any() == name)
                .and_then(|u| u.status.as_ref())
                .map(|s| s.conditions.clone()),
            _ => self
                .tokens
                .iter()
                .find(|t| t.name_any() == name)
                .and_then(|t| t.status.as_ref())
                .map(|s| s.conditions.clone()),
        };
        let ready = conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        let events = self
            .events
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, r, t)| (r.clone(), t.clone()))
            .collect();
        (ready, events)
    }
}

/// Forces a rotation of the control token and creates a new token; "both" when both complete.
async fn control_still_served(stage: &Stage) -> String {
    let tokens: Api<CommunicationToken> = stage.env.api();
    let revision = |t: &CommunicationToken| t.status.as_ref().map_or(0, |s| s.revision);
    let before = revision(&tokens.get("control").await.expect("control"));
    tokens
        .patch(
            "control",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                acs_identity_operator::api::ROTATE_ANNOTATION: "reliability"
            }}})),
        )
        .await
        .expect("annotate control");
    create_token(&stage.env, "control-late", token_spec("control")).await;
    let rotated = async {
        poll(
            "the control token to rotate",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async {
                let t = tokens.get("control").await.map_err(|e| e.to_string())?;
                if revision(&t) > before {
                    Ok(())
                } else {
                    Err(format!("revision {}", revision(&t)))
                }
            },
        )
        .await
    };
    let late = async {
        poll(
            "a new control token to become Ready",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async {
                let t = tokens
                    .get("control-late")
                    .await
                    .map_err(|e| e.to_string())?;
                let ready = t.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if ready {
                    Ok(())
                } else {
                    Err(format!("{:?}", t.status))
                }
            },
        )
        .await
    };
    tokio::join!(rotated, late);
    "both".to_string()
}

async fn credentials(stage: &Stage) -> Option<BTreeMap<String, k8s_openapi::ByteString>> {
    let secrets: Api<Secret> = stage.env.api();
    secrets
        .get("acs-credentials")
        .await
        .ok()
        .and_then(|s| s.data)
}

/// Creates a Secret, CommunicationUser or CommunicationToken from raw JSON (invalid values do
/// not fit the typed structs).
async fn create_json(env: &TestEnv, body: &Value) -> Result<(), kube::Error> {
    let ar = match body["kind"].as_str() {
        Some("Secret") => ApiResource::erase::<Secret>(&()),
        Some(kind) => ApiResource::from_gvk(&GroupVersionKind::gvk(
            acs_identity_operator::api::GROUP,
            acs_identity_operator::api::VERSION,
            kind,
        )),
        None => panic!("object without a kind: {body}"),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), env.ns(), &ar);
    let obj: DynamicObject = serde_json::from_value(body.clone()).expect("object");
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}
