//! The bad-input table of scenario 6: each case is the objects to create and what must happen,
//! either a rejection at admission whose message names the field, or a Ready=False condition
//! with a reason and a Warning (or Normal) event of that reason on the object.

use serde_json::{json, Value};

/// What a case must produce.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The last object is rejected at admission with a message containing `field`.
    Rejected { field: &'static str },
    /// The object `name` of `kind` gets Ready=False with one of `reasons` and an event with
    /// that reason.
    Condition {
        kind: &'static str,
        name: String,
        reasons: &'static [&'static str],
    },
}

/// One bad input.
#[derive(Debug, Clone)]
pub struct Case {
    pub label: String,
    /// Objects created in order (Secrets, users, tokens as JSON).
    pub objects: Vec<Value>,
    pub expect: Expect,
}

/// Everything the table needs to know about the stage.
pub struct Inputs {
    /// The emulator's endpoint (`https://127.0.0.1:PORT`).
    pub endpoint: String,
    /// The emulator's resource GUID.
    pub resource: String,
    /// A well-formed key that is not the emulator's.
    pub wrong_key: String,
    /// A loopback port nothing listens on.
    pub closed_port: u16,
}

pub fn token(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "communication.acs.dev/v1alpha1",
        "kind": "CommunicationToken",
        "metadata": {"name": name},
        "spec": spec,
    })
}

pub fn user(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "communication.acs.dev/v1alpha1",
        "kind": "CommunicationUser",
        "metadata": {"name": name},
        "spec": spec,
    })
}

pub fn secret(name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    })
}

fn rejected(label: &str, object: Value, field: &'static str) -> Case {
    Case {
        label: label.to_string(),
        objects: vec![object],
        expect: Expect::Rejected { field },
    }
}

fn condition(
    label: &str,
    objects: Vec<Value>,
    kind: &'static str,
    name: &str,
    reasons: &'static [&'static str],
) -> Case {
    Case {
        label: label.to_string(),
        objects,
        expect: Expect::Condition {
            kind,
            name: name.to_string(),
            reasons,
        },
    }
}

/// A user with its own credentials Secret holding `connection`, and a token for it.
fn user_with_connection(prefix: &str, connection: &str) -> Vec<Value> {
    vec![
        secret(
            &format!("{prefix}-creds"),
            json!({ "connectionString": connection }),
        ),
        user(
            prefix,
            json!({"credentials": {"secretName": format!("{prefix}-creds")}}),
        ),
    ]
}

/// The admission cases: invalid scopes, bounds, formats and templates.
pub fn admission_cases() -> Vec<Case> {
    let u = |extra: Value| {
        let mut spec = json!({"userRef": {"name": "control"}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        spec
    };
    let long = "x".repeat(254);
    let big_label = "v".repeat(64);
    let big_annotation = "a".repeat(4097);
    let many_labels: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
    vec![
        rejected(
            "scope not known to ACS (`pstn`)",
            token("a-scope", u(json!({"scopes": ["pstn"]}))),
            "scopes",
        ),
        rejected(
            "scope with the wrong case (`Chat`)",
            token("a-scope-case", u(json!({"scopes": ["Chat"]}))),
            "scopes",
        ),
        rejected(
            "no scopes",
            token("a-scope-empty", u(json!({"scopes": []}))),
            "scopes",
        ),
        rejected(
            "a scope twice",
            token("a-scope-dup", u(json!({"scopes": ["voip", "voip"]}))),
            "scopes",
        ),
        rejected(
            "scopes not a list",
            token("a-scope-type", u(json!({"scopes": "voip"}))),
            "scopes",
        ),
        rejected(
            "lifetime below 60 minutes",
            token("a-exp-low", u(json!({"expiresInMinutes": 59}))),
            "expiresInMinutes",
        ),
        rejected(
            "lifetime above 1440 minutes",
            token("a-exp-high", u(json!({"expiresInMinutes": 1441}))),
            "expiresInMinutes",
        ),
        rejected(
            "lifetime not an integer",
            token("a-exp-type", u(json!({"expiresInMinutes": "sixty"}))),
            "expiresInMinutes",
        ),
        rejected(
            "renewBefore not a duration",
            token("a-rb-format", u(json!({"renewBefore": "soon"}))),
            "renewBefore",
        ),
        rejected(
            "renewBefore under one minute",
            token("a-rb-short", u(json!({"renewBefore": "10s"}))),
            "renewBefore",
        ),
        rejected(
            "renewBefore not shorter than the lifetime",
            token(
                "a-rb-long",
                u(json!({"expiresInMinutes": 60, "renewBefore": "2h"})),
            ),
            "renewBefore",
        ),
        rejected(
            "renewBefore and renewBeforePercentage together",
            token(
                "a-rb-both",
                u(json!({"renewBefore": "30m", "renewBeforePercentage": 20})),
            ),
            "renewBefore",
        ),
        rejected(
            "renewBeforePercentage below 5",
            token("a-rbp-low", u(json!({"renewBeforePercentage": 4}))),
            "renewBeforePercentage",
        ),
        rejected(
            "renewBeforePercentage above 95",
            token("a-rbp-high", u(json!({"renewBeforePercentage": 96}))),
            "renewBeforePercentage",
        ),
        rejected(
            "secretName not a DNS name",
            token("a-sn-format", u(json!({"secretName": "Not_Valid"}))),
            "secretName",
        ),
        rejected(
            "secretName over 253 characters",
            token("a-sn-long", u(json!({"secretName": long}))),
            "secretName",
        ),
        rejected("no userRef", token("a-no-user", json!({})), "userRef"),
        rejected(
            "empty userRef.name",
            token("a-user-empty", json!({"userRef": {"name": ""}})),
            "userRef.name",
        ),
        rejected(
            "reserved label key in secretTemplate",
            token(
                "a-tpl-reserved",
                u(json!({"secretTemplate": {"labels": {"communication.acs.dev/x": "y"}}})),
            ),
            "labels",
        ),
        rejected(
            "reserved annotation key in secretTemplate",
            token(
                "a-tpl-reserved-ann",
                u(json!({"secretTemplate": {"annotations": {"communication.acs.dev/x": "y"}}})),
            ),
            "annotations",
        ),
        rejected(
            "label value over 63 characters",
            token(
                "a-tpl-label-long",
                u(json!({"secretTemplate": {"labels": {"team": big_label}}})),
            ),
            "labels",
        ),
        rejected(
            "annotation value over 4096 characters",
            token(
                "a-tpl-ann-long",
                u(json!({"secretTemplate": {"annotations": {"note": big_annotation}}})),
            ),
            "annotations",
        ),
        rejected(
            "65 labels in secretTemplate",
            token(
                "a-tpl-many",
                u(json!({"secretTemplate": {"labels": many_labels}})),
            ),
            "labels",
        ),
        rejected(
            "suspend not a boolean",
            token("a-suspend", u(json!({"suspend": "yes"}))),
            "suspend",
        ),
        rejected(
            "unknown deletionPolicy",
            user("a-policy", json!({"deletionPolicy": "Forget"})),
            "deletionPolicy",
        ),
        rejected(
            "identityId not an ACS id",
            user("a-id-format", json!({"identityId": "not-an-id"})),
            "identityId",
        ),
        rejected(
            "identityId with an unknown cloud prefix",
            user("a-id-cloud", json!({"identityId": "8:teams:abc_def"})),
            "identityId",
        ),
        rejected(
            "empty credentials.secretName",
            user("a-cred-empty", json!({"credentials": {"secretName": ""}})),
            "secretName",
        ),
        rejected(
            "empty credentials.key",
            user(
                "a-cred-key",
                json!({"credentials": {"secretName": "acs-credentials", "key": ""}}),
            ),
            "key",
        ),
        rejected(
            "credentials.secretName over 253 characters",
            user(
                "a-cred-long",
                json!({"credentials": {"secretName": "x".repeat(254)}}),
            ),
            "secretName",
        ),
    ]
}

/// The cases the API accepts: references, credentials and templates that only the operator can
/// judge, each of which must become a condition and an event.
pub fn condition_cases(i: &Inputs) -> Vec<Case> {
    let good_key = &i.wrong_key;
    let many_annotations: serde_json::Map<String, Value> = (0..64)
        .map(|n| (format!("note-{n}"), json!("a".repeat(4096))))
        .collect();
    let tok = |name: &str, user: &str, extra: Value| {
        let mut spec = json!({"userRef": {"name": user}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        token(name, spec)
    };
    let with_token = |mut objects: Vec<Value>, user: &str, name: &str| {
        objects.push(tok(name, user, json!({})));
        objects
    };
    vec![
        condition(
            "token for a user that does not exist",
            vec![tok("c-missing-user", "nobody", json!({}))],
            "CommunicationToken",
            "c-missing-user",
            &["UserNotFound"],
        ),
        condition(
            "token for a user that exists only in another namespace",
            vec![tok("c-other-ns-user", "elsewhere", json!({}))],
            "CommunicationToken",
            "c-other-ns-user",
            &["UserNotFound"],
        ),
        condition(
            "token whose userRef names another namespace (`other/u`)",
            vec![tok("c-slash-user", "kube-system/control", json!({}))],
            "CommunicationToken",
            "c-slash-user",
            &["UserNotFound"],
        ),
        condition(
            "credentials Secret that does not exist",
            vec![user(
                "c-no-secret",
                json!({"credentials": {"secretName": "does-not-exist"}}),
            )],
            "CommunicationUser",
            "c-no-secret",
            &["CredentialsNotFound"],
        ),
        condition(
            "credentials Secret in another namespace (`ns/name`)",
            vec![user(
                "c-xns-secret",
                json!({"credentials": {"secretName": "kube-system/acs-credentials"}}),
            )],
            "CommunicationUser",
            "c-xns-secret",
            &["CredentialsNotFound"],
        ),
        condition(
            "credentials Secret without the named key",
            vec![
                secret("c-nokey-creds", json!({"other": "x"})),
                user(
                    "c-nokey",
                    json!({"credentials": {"secretName": "c-nokey-creds"}}),
                ),
            ],
            "CommunicationUser",
            "c-nokey",
            &["CredentialsInvalid"],
        ),
        condition(
            "connection string that is not one",
            user_with_connection("c-cs-garbage", "this is not a connection string"),
            "CommunicationUser",
            "c-cs-garbage",
            &["CredentialsInvalid"],
        ),
        condition(
            "connection string without accesskey",
            user_with_connection("c-cs-nokey", &format!("endpoint={}/", i.endpoint)),
            "CommunicationUser",
            "c-cs-nokey",
            &["CredentialsInvalid"],
        ),
        condition(
            "accesskey that is not base64",
            user_with_connection(
                "c-cs-b64",
                &format!("endpoint={}/;accesskey=***not base64***", i.endpoint),
            ),
            "CommunicationUser",
            "c-cs-b64",
            &["CredentialsInvalid"],
        ),
        condition(
            "endpoint that is not an https URL",
            user_with_connection(
                "c-cs-ftp",
                &format!("endpoint=ftp://127.0.0.1/;accesskey={good_key}"),
            ),
            "CommunicationUser",
            "c-cs-ftp",
            &["CredentialsInvalid"],
        ),
        condition(
            "empty connection string",
            user_with_connection("c-cs-empty", ""),
            "CommunicationUser",
            "c-cs-empty",
            &["CredentialsInvalid"],
        ),
        condition(
            "wrong access key for the right endpoint",
            user_with_connection(
                "c-wrong-key",
                &format!("endpoint={}/;accesskey={}", i.endpoint, i.wrong_key),
            ),
            "CommunicationUser",
            "c-wrong-key",
            &["CredentialsRejected"],
        ),
        condition(
            "endpoint where nothing listens",
            user_with_connection(
                "c-closed",
                &format!(
                    "endpoint=https://127.0.0.1:{}/;accesskey={good_key}",
                    i.closed_port
                ),
            ),
            "CommunicationUser",
            "c-closed",
            &["AcsError", "AcsUnreachable"],
        ),
        condition(
            "token of a user whose credentials are malformed",
            with_token(
                user_with_connection("c-cs-user-tok", "endpoint=;accesskey="),
                "c-cs-user-tok",
                "c-cs-user-tok-t",
            ),
            "CommunicationToken",
            "c-cs-user-tok-t",
            &["UserNotReady"],
        ),
        condition(
            "adopted identityId that does not exist",
            vec![
                user(
                    "c-adopt-missing",
                    json!({"identityId": format!("8:acs:{}_00000000-dead-beef-0000-000000000000", i.resource)}),
                ),
                tok("c-adopt-missing-t", "c-adopt-missing", json!({})),
            ],
            "CommunicationToken",
            "c-adopt-missing-t",
            // The 404 of the first issue says the identity does not exist: the token (and
            // its user) report IdentityNotFound and stop calling ACS.
            &["IdentityNotFound"],
        ),
        condition(
            "adopted identityId of another ACS resource",
            vec![
                user(
                    "c-adopt-foreign",
                    json!({"identityId": "8:acs:00000000-0000-0000-0000-000000000000_foreign"}),
                ),
                tok("c-adopt-foreign-t", "c-adopt-foreign", json!({})),
            ],
            "CommunicationToken",
            "c-adopt-foreign-t",
            &["CredentialsRejected"],
        ),
        condition(
            "secretName of the credentials Secret",
            vec![tok(
                "c-steal-creds",
                "control",
                json!({"secretName": "acs-credentials"}),
            )],
            "CommunicationToken",
            "c-steal-creds",
            &["SecretConflict"],
        ),
        condition(
            "secretName of an unrelated existing Secret",
            vec![
                secret("app-config", json!({"k": "v"})),
                tok(
                    "c-foreign-secret",
                    "control",
                    json!({"secretName": "app-config"}),
                ),
            ],
            "CommunicationToken",
            "c-foreign-secret",
            &["SecretConflict"],
        ),
        condition(
            "label value with invalid characters in secretTemplate",
            vec![tok(
                "c-tpl-label-chars",
                "control",
                json!({"secretTemplate": {"labels": {"team": "not valid!"}}}),
            )],
            "CommunicationToken",
            "c-tpl-label-chars",
            &["SecretRejected", "InvalidSecretTemplate"],
        ),
        condition(
            "label key with invalid characters in secretTemplate",
            vec![tok(
                "c-tpl-label-key",
                "control",
                json!({"secretTemplate": {"labels": {"bad key": "x"}}}),
            )],
            "CommunicationToken",
            "c-tpl-label-key",
            &["SecretRejected", "InvalidSecretTemplate"],
        ),
        condition(
            "oversized secretTemplate (64 annotations of 4 KiB, over the 256 KiB limit)",
            vec![tok(
                "c-tpl-huge",
                "control",
                json!({"secretTemplate": {"annotations": many_annotations}}),
            )],
            "CommunicationToken",
            "c-tpl-huge",
            &["SecretRejected", "InvalidSecretTemplate"],
        ),
    ]
}

/// Two tokens that claim one Secret name: the later one must get the conflict. Created apart so
/// their creation order is certain.
pub fn conflicting_secret_names() -> (Value, Value, Case) {
    let first = token(
        "c-dup-first",
        json!({"userRef": {"name": "control"}, "secretName": "shared-secret"}),
    );
    let second = token(
        "c-dup-second",
        json!({"userRef": {"name": "control"}, "secretName": "shared-secret"}),
    );
    let case = condition(
        "two tokens with the same secretName (the later one)",
        vec![],
        "CommunicationToken",
        "c-dup-second",
        &["SecretConflict"],
    );
    (first, second, case)
}
