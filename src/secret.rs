//! Pure: the desired token Secret for an issued token, and the reverse: what a Secret in the
//! cluster says about the token it holds, checked with a keyed digest so an edit by hand (or a
//! rotated access key) is detected without the operator keeping any token.
//!
//! The Secret, not the status, is the record of the current token: its annotations carry the
//! issue time, revocation epoch and key fingerprint, sealed by the digest. A crash between
//! writing the Secret and writing status therefore never causes a needless re-issue.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::acs::{AccessKey, Scope, TokenString};
use crate::api::{self, secret_keys, CommunicationToken};

/// Annotations the operator writes on a token Secret.
pub mod annotations {
    pub const ISSUED_AT: &str = "communication.acs.dev/issued-at";
    pub const REVOCATION_EPOCH: &str = "communication.acs.dev/revocation-epoch";
    pub const KEY_FINGERPRINT: &str = "communication.acs.dev/key-fingerprint";
    pub const REVISION: &str = "communication.acs.dev/revision";
    pub const EXPIRES_IN_MINUTES: &str = "communication.acs.dev/expires-in-minutes";
    pub const DIGEST: &str = "communication.acs.dev/digest";
}

/// A token as issued, with everything recorded next to it.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedToken {
    pub token: TokenString,
    pub record: RecordedToken,
}

/// What a Secret says about its token, without the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedToken {
    pub expires_on: Timestamp,
    pub issued_at: Timestamp,
    pub user_id: String,
    pub scopes: Vec<Scope>,
    pub expires_in_minutes: i32,
    pub revocation_epoch: i64,
    pub key_fingerprint: String,
    pub revision: i64,
}

/// The state of a token Secret as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretState {
    /// No Secret.
    Missing,
    /// A Secret this CommunicationToken does not control: never touched.
    Foreign,
    /// Ours, intact, sealed under the current key.
    Valid(RecordedToken),
    /// Ours, sealed under another access key (the key was rotated, which revokes the token).
    KeyChanged(RecordedToken),
    /// Ours, but its data or records do not match the digest: edited by hand.
    Tampered,
}

/// A short, non-reversible fingerprint of an access key, safe to show in annotations.
pub fn key_fingerprint(key: &AccessKey) -> String {
    let mut h = Sha256::new();
    h.update(b"acs-identity-operator/key-fingerprint\0");
    h.update(key.expose());
    URL_SAFE_NO_PAD.encode(&h.finalize()[..12])
}

fn scopes_string(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn rfc3339(t: Timestamp) -> String {
    // Whole seconds in UTC, e.g. 2025-01-02T03:04:05Z.
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// HMAC over every value the operator relies on, keyed with the access key: anyone can read
/// the digest, but only the key holder can produce one that matches edited data.
fn digest(
    key: &AccessKey,
    data: &BTreeMap<String, ByteString>,
    records: &[(&str, String)],
) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    for (k, v) in data {
        m.update(k.as_bytes());
        m.update(b"\0");
        m.update(&(v.0.len() as u64).to_be_bytes());
        m.update(&v.0);
    }
    for (k, v) in records {
        m.update(k.as_bytes());
        m.update(b"\0");
        m.update(v.as_bytes());
        m.update(b"\0");
    }
    STANDARD.encode(m.finalize().into_bytes())
}

fn records(t: &RecordedToken) -> Vec<(&'static str, String)> {
    vec![
        (annotations::ISSUED_AT, rfc3339(t.issued_at)),
        (
            annotations::REVOCATION_EPOCH,
            t.revocation_epoch.to_string(),
        ),
        (annotations::KEY_FINGERPRINT, t.key_fingerprint.clone()),
        (annotations::REVISION, t.revision.to_string()),
        (
            annotations::EXPIRES_IN_MINUTES,
            t.expires_in_minutes.to_string(),
        ),
    ]
}

fn data_of(issued: &IssuedToken) -> BTreeMap<String, ByteString> {
    let t = &issued.record;
    BTreeMap::from([
        (
            secret_keys::TOKEN.to_string(),
            ByteString(issued.token.expose().as_bytes().to_vec()),
        ),
        (
            secret_keys::EXPIRES_ON.to_string(),
            ByteString(rfc3339(t.expires_on).into_bytes()),
        ),
        (
            secret_keys::USER_ID.to_string(),
            ByteString(t.user_id.clone().into_bytes()),
        ),
        (
            secret_keys::SCOPES.to_string(),
            ByteString(scopes_string(&t.scopes).into_bytes()),
        ),
    ])
}

/// The controller ownerReference of a CommunicationToken.
pub fn owner_reference(owner: &CommunicationToken) -> Option<OwnerReference> {
    let mut r = owner.controller_owner_ref(&())?;
    r.block_owner_deletion = Some(true);
    Some(r)
}

/// The full desired Secret for server-side apply.
pub fn desired_secret(
    owner: &CommunicationToken,
    t: &IssuedToken,
    key: &AccessKey,
) -> Option<Secret> {
    let data = data_of(t);
    let records = records(&t.record);
    let sealed = digest(key, &data, &records);
    let template = owner.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.insert(api::MANAGED_BY_LABEL.into(), api::MANAGED_BY.into());
    labels.insert(api::TOKEN_LABEL.into(), owner.metadata.name.clone()?);
    labels.insert(api::USER_LABEL.into(), owner.spec.user_ref.name.clone());
    let mut ann = template.annotations;
    for (k, v) in records {
        ann.insert(k.to_string(), v);
    }
    ann.insert(annotations::DIGEST.to_string(), sealed);
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(owner.secret_name()),
            namespace: owner.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(ann),
            owner_references: Some(vec![owner_reference(owner)?]),
            ..ObjectMeta::default()
        },
        type_: Some(api::SECRET_TYPE.to_string()),
        data: Some(data),
        ..Secret::default()
    })
}

/// True when `secret` is controlled by `owner` (same UID).
pub fn is_controlled_by(secret: &Secret, owner: &CommunicationToken) -> bool {
    let Some(uid) = owner.metadata.uid.as_deref() else {
        return false;
    };
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Reads what a Secret in the cluster records, verifying the digest with `key`.
pub fn read_secret(
    secret: Option<&Secret>,
    owner: &CommunicationToken,
    key: &AccessKey,
) -> SecretState {
    let Some(secret) = secret else {
        return SecretState::Missing;
    };
    if !is_controlled_by(secret, owner) {
        return SecretState::Foreign;
    }
    let empty = BTreeMap::new();
    let ann = secret.metadata.annotations.as_ref().unwrap_or(&empty);
    let Some(recorded) = parse_records(secret, ann) else {
        return SecretState::Tampered;
    };
    let data = secret.data.clone().unwrap_or_default();
    let rec_values: Vec<(&str, String)> = [
        annotations::ISSUED_AT,
        annotations::REVOCATION_EPOCH,
        annotations::KEY_FINGERPRINT,
        annotations::REVISION,
        annotations::EXPIRES_IN_MINUTES,
    ]
    .into_iter()
    .map(|k| (k, ann.get(k).cloned().unwrap_or_default()))
    .collect();
    let want = digest(key, &data, &rec_values);
    let Some(have) = ann.get(annotations::DIGEST) else {
        return SecretState::Tampered;
    };
    // The data must have exactly the four keys with the token present.
    let shape_ok = data.len() == 4
        && data
            .get(secret_keys::TOKEN)
            .is_some_and(|t| !t.0.is_empty());
    if shape_ok && constant_time_eq(want.as_bytes(), have.as_bytes()) {
        return SecretState::Valid(recorded);
    }
    if recorded.key_fingerprint != key_fingerprint(key) {
        return SecretState::KeyChanged(recorded);
    }
    SecretState::Tampered
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_records(secret: &Secret, ann: &BTreeMap<String, String>) -> Option<RecordedToken> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let scopes = text(secret_keys::SCOPES)?
        .split(',')
        .map(Scope::parse)
        .collect::<Option<Vec<_>>>()?;
    Some(RecordedToken {
        expires_on: text(secret_keys::EXPIRES_ON)?.parse().ok()?,
        issued_at: ann.get(annotations::ISSUED_AT)?.parse().ok()?,
        user_id: text(secret_keys::USER_ID)?,
        scopes,
        expires_in_minutes: ann.get(annotations::EXPIRES_IN_MINUTES)?.parse().ok()?,
        revocation_epoch: ann.get(annotations::REVOCATION_EPOCH)?.parse().ok()?,
        key_fingerprint: ann.get(annotations::KEY_FINGERPRINT)?.clone(),
        revision: ann.get(annotations::REVISION)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommunicationTokenSpec, SecretTemplate, UserRef};

    fn owner() -> CommunicationToken {
        let mut t = CommunicationToken::new(
            "web",
            CommunicationTokenSpec {
                user_ref: UserRef {
                    name: "alice".into(),
                },
                scopes: vec![Scope::Voip, Scope::Chat],
                expires_in_minutes: 60,
                renew_before: None,
                renew_before_percentage: None,
                secret_name: None,
                secret_template: Some(SecretTemplate {
                    labels: BTreeMap::from([("team".into(), "a".into())]),
                    annotations: BTreeMap::new(),
                }),
                suspend: false,
                revoke_on_delete: true,
            },
        );
        t.metadata.namespace = Some("ns".into());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    fn issued(key: &AccessKey) -> IssuedToken {
        IssuedToken {
            token: TokenString::new("aaa.bbb.ccc".into()),
            record: RecordedToken {
                expires_on: Timestamp::from_second(1_700_003_600).unwrap(),
                issued_at: Timestamp::from_second(1_700_000_000).unwrap(),
                user_id: "8:acs:r_u".into(),
                scopes: vec![Scope::Voip, Scope::Chat],
                expires_in_minutes: 60,
                revocation_epoch: 2,
                key_fingerprint: key_fingerprint(key),
                revision: 3,
            },
        }
    }

    fn key(b: u8) -> AccessKey {
        AccessKey::from_bytes(vec![b; 64])
    }

    #[test]
    fn desired_secret_has_the_documented_shape() {
        let k = key(1);
        let s = desired_secret(&owner(), &issued(&k), &k).unwrap();
        assert_eq!(s.type_.as_deref(), Some(api::SECRET_TYPE));
        assert_eq!(s.metadata.name.as_deref(), Some("web"));
        let data = s.data.as_ref().unwrap();
        assert_eq!(data["expiresOn"].0, b"2023-11-14T23:13:20Z");
        assert_eq!(data["scopes"].0, b"voip,chat");
        assert_eq!(data["userId"].0, b"8:acs:r_u");
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[api::MANAGED_BY_LABEL], api::MANAGED_BY);
        let owner_ref = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner_ref.controller, Some(true));
        assert_eq!(owner_ref.uid, "uid-1");
    }

    #[test]
    fn a_written_secret_reads_back_as_valid() {
        let k = key(1);
        let t = issued(&k);
        let s = desired_secret(&owner(), &t, &k).unwrap();
        match read_secret(Some(&s), &owner(), &k) {
            SecretState::Valid(r) => {
                assert_eq!(r.revocation_epoch, 2);
                assert_eq!(r.revision, 3);
                assert_eq!(r, t.record);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edits_to_data_or_records_are_detected() {
        let k = key(1);
        let s = desired_secret(&owner(), &issued(&k), &k).unwrap();
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("token".into(), ByteString(b"forged".to_vec()));
        assert_eq!(
            read_secret(Some(&edited), &owner(), &k),
            SecretState::Tampered
        );
        let mut edited = s.clone();
        edited
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(annotations::REVOCATION_EPOCH.into(), "9".into());
        assert_eq!(
            read_secret(Some(&edited), &owner(), &k),
            SecretState::Tampered
        );
        let mut edited = s;
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), ByteString(b"x".to_vec()));
        assert_eq!(
            read_secret(Some(&edited), &owner(), &k),
            SecretState::Tampered
        );
    }

    #[test]
    fn a_rotated_key_is_told_apart_from_an_edit() {
        let k = key(1);
        let s = desired_secret(&owner(), &issued(&k), &k).unwrap();
        assert!(matches!(
            read_secret(Some(&s), &owner(), &key(2)),
            SecretState::KeyChanged(_)
        ));
    }

    #[test]
    fn foreign_and_missing_secrets_are_reported() {
        let k = key(1);
        assert_eq!(read_secret(None, &owner(), &k), SecretState::Missing);
        let mut s = desired_secret(&owner(), &issued(&k), &k).unwrap();
        s.metadata.owner_references = None;
        assert_eq!(read_secret(Some(&s), &owner(), &k), SecretState::Foreign);
    }

    #[test]
    fn fingerprints_differ_per_key_and_do_not_contain_it() {
        let a = key_fingerprint(&key(1));
        assert_ne!(a, key_fingerprint(&key(2)));
        assert_eq!(a.len(), 16);
    }
}
