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
    /// The `spec.secretTemplate` keys last written (`l:<label>`, `a:<annotation>`).
    pub const TEMPLATE_KEYS: &str = "communication.acs.dev/template-keys";
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
    /// Ours, with its token and record intact under the current key; `drifted` when anything
    /// else the operator sets (data keys, labels, annotations, template) differs, which a
    /// rewrite with the same token repairs.
    Intact {
        record: RecordedToken,
        drifted: bool,
    },
    /// Ours, sealed under another access key (the key was rotated, which revokes the token).
    KeyChanged(RecordedToken),
    /// Ours, but its token was changed or lost (or its record cannot be proven): a new token
    /// must be issued.
    Tampered,
}

/// What seals a token Secret, and the fingerprint of the credentials its token was issued
/// under. With a connection string both come from the access key; with Entra ID the seal is
/// the operator's own sealing key and the fingerprint names endpoint and principal.
#[derive(Clone)]
pub struct Seal {
    key: AccessKey,
    fingerprint: String,
}

impl Seal {
    /// Sealed and fingerprinted by an ACS access key.
    pub fn access_key(key: &AccessKey) -> Self {
        Self {
            key: key.clone(),
            fingerprint: key_fingerprint(key),
        }
    }

    /// Sealed by `key`, recording `fingerprint` as the credentials' identity.
    pub fn new(key: AccessKey, fingerprint: String) -> Self {
        Self { key, fingerprint }
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seal([redacted], {})", self.fingerprint)
    }
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

/// The first seal (before drift repair): an HMAC over the whole data map and the records.
/// Still accepted when reading, so Secrets written by an older operator read as intact (and
/// are rewritten with the current seal) instead of as edited.
fn digest_v1(
    key: &Seal,
    data: &BTreeMap<String, ByteString>,
    records: &[(&str, String)],
) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.key.expose())
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

/// The seal: an HMAC keyed with the access key over the token and everything recorded about
/// it, and nothing else. Anyone can read it, but only the key holder can make one that
/// matches an edited token or record; labels, other annotations and extra data keys are not
/// sealed, so drift there is repaired with the same token instead of a new one.
fn seal(key: &Seal, token: &[u8], r: &RecordedToken) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.key.expose())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    m.update(b"v2\0");
    m.update(&(token.len() as u64).to_be_bytes());
    m.update(token);
    let fields = [
        rfc3339(r.expires_on),
        r.user_id.clone(),
        scopes_string(&r.scopes),
    ];
    for (k, v) in records(r)
        .into_iter()
        .chain(["expiresOn", "userId", "scopes"].into_iter().zip(fields))
    {
        m.update(k.as_bytes());
        m.update(b"\0");
        m.update(&(v.len() as u64).to_be_bytes());
        m.update(v.as_bytes());
    }
    format!("v2:{}", STANDARD.encode(m.finalize().into_bytes()))
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

fn data_of(token: &[u8], t: &RecordedToken) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (secret_keys::TOKEN.to_string(), ByteString(token.to_vec())),
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

/// The labels and annotations the operator sets: its own, the records and seal, and
/// `spec.secretTemplate`, plus an annotation naming the template's keys so a key later
/// removed from the template is removed from the Secret too.
fn desired_metadata(
    owner: &CommunicationToken,
    token: &[u8],
    r: &RecordedToken,
    key: &Seal,
) -> Option<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let template = owner.spec.secret_template.clone().unwrap_or_default();
    let template_keys = template
        .labels
        .keys()
        .map(|k| format!("l:{k}"))
        .chain(template.annotations.keys().map(|k| format!("a:{k}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut labels = template.labels;
    labels.insert(api::MANAGED_BY_LABEL.into(), api::MANAGED_BY.into());
    labels.insert(api::TOKEN_LABEL.into(), owner.metadata.name.clone()?);
    labels.insert(api::USER_LABEL.into(), owner.spec.user_ref.name.clone());
    let mut ann = template.annotations;
    for (k, v) in records(r) {
        ann.insert(k.to_string(), v);
    }
    ann.insert(annotations::DIGEST.to_string(), seal(key, token, r));
    if template_keys.is_empty() {
        ann.remove(annotations::TEMPLATE_KEYS);
    } else {
        ann.insert(annotations::TEMPLATE_KEYS.to_string(), template_keys);
    }
    Some((labels, ann))
}

/// The full desired Secret, for a create.
pub fn desired_secret(owner: &CommunicationToken, t: &IssuedToken, key: &Seal) -> Option<Secret> {
    let token = t.token.expose().as_bytes();
    let (labels, ann) = desired_metadata(owner, token, &t.record, key)?;
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
        data: Some(data_of(token, &t.record)),
        ..Secret::default()
    })
}

/// `current` rewritten for a replace: exactly the operator's data keys (`token` is the given
/// one), its labels and annotations restored, template keys no longer in the template
/// removed, and every other label and annotation (other tools') left alone. The
/// `resourceVersion` of `current` stays, so the replace fails if the Secret changed since.
pub fn rewritten_secret(
    current: &Secret,
    owner: &CommunicationToken,
    token: &[u8],
    r: &RecordedToken,
    key: &Seal,
) -> Option<Secret> {
    let (labels, ann) = desired_metadata(owner, token, r, key)?;
    let mut out = current.clone();
    let meta = &mut out.metadata;
    let old_template: Vec<String> = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::TEMPLATE_KEYS))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut cur_labels = meta.labels.take().unwrap_or_default();
    let mut cur_ann = meta.annotations.take().unwrap_or_default();
    for k in &old_template {
        if let Some(l) = k.strip_prefix("l:") {
            cur_labels.remove(l);
        } else if let Some(a) = k.strip_prefix("a:") {
            cur_ann.remove(a);
        }
    }
    cur_ann.remove(annotations::TEMPLATE_KEYS);
    cur_labels.extend(labels);
    cur_ann.extend(ann);
    meta.labels = Some(cur_labels);
    meta.annotations = Some(cur_ann);
    meta.managed_fields = None;
    let ours = owner_reference(owner)?;
    let refs = meta.owner_references.get_or_insert_with(Vec::new);
    if !refs.iter().any(|o| o.uid == ours.uid) {
        refs.push(ours);
    }
    out.data = Some(data_of(token, r));
    out.string_data = None;
    Some(out)
}

/// True when `current` differs from what [`rewritten_secret`] would make of it.
fn drifted(current: &Secret, rewritten: &Secret) -> bool {
    current.data != rewritten.data
        || current.string_data.is_some()
        || current.metadata.labels != rewritten.metadata.labels
        || current.metadata.annotations != rewritten.metadata.annotations
        || current.metadata.owner_references != rewritten.metadata.owner_references
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

/// Reads what a Secret in the cluster records, verifying the seal with `key`. `fallback` is
/// the record kept in the token's status: when the Secret's own record annotations were
/// edited or removed but the token is intact, the status record still proves it.
pub fn read_secret(
    secret: Option<&Secret>,
    owner: &CommunicationToken,
    key: &Seal,
    fallback: Option<&RecordedToken>,
) -> SecretState {
    let Some(secret) = secret else {
        return SecretState::Missing;
    };
    if !is_controlled_by(secret, owner) {
        return SecretState::Foreign;
    }
    let empty = BTreeMap::new();
    let ann = secret.metadata.annotations.as_ref().unwrap_or(&empty);
    let parsed = parse_records(secret, ann);
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(secret_keys::TOKEN))
        .map(|t| t.0.as_slice())
        .filter(|t| !t.is_empty());
    let have = ann.get(annotations::DIGEST);
    if let (Some(token), Some(have)) = (token, have) {
        for r in parsed.iter().chain(fallback) {
            let fresh = seal(key, token, r);
            let legacy = || {
                let data = secret.data.clone().unwrap_or_default();
                digest_v1(key, &data, &records(r))
            };
            if constant_time_eq(fresh.as_bytes(), have.as_bytes())
                || (!have.starts_with("v2:")
                    && constant_time_eq(legacy().as_bytes(), have.as_bytes()))
            {
                // Entra credentials share the operator's sealing key: a seal that verifies
                // may still record other credentials (another principal or endpoint).
                if r.key_fingerprint != key.fingerprint {
                    return SecretState::KeyChanged(r.clone());
                }
                let drift = rewritten_secret(secret, owner, token, r, key)
                    .is_none_or(|w| drifted(secret, &w));
                return SecretState::Intact {
                    record: r.clone(),
                    drifted: drift,
                };
            }
        }
    }
    match parsed.or_else(|| fallback.cloned()) {
        Some(r) if r.key_fingerprint != key.fingerprint => SecretState::KeyChanged(r),
        _ => SecretState::Tampered,
    }
}

/// The current token value of a Secret read as intact (for a repair that keeps it).
pub fn token_of(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()?
        .get(secret_keys::TOKEN)
        .map(|t| t.0.as_slice())
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
mod tests;
