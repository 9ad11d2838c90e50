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
            rollout_restart_targets: Vec::new(),
        },
    );
    t.metadata.namespace = Some("ns".into());
    t.metadata.uid = Some("uid-1".into());
    t
}

fn issued(key: &Seal) -> IssuedToken {
    IssuedToken {
        token: TokenString::new("aaa.bbb.ccc".into()),
        record: RecordedToken {
            expires_on: Timestamp::from_second(1_700_003_600).unwrap(),
            issued_at: Timestamp::from_second(1_700_000_000).unwrap(),
            user_id: "8:acs:r_u".into(),
            scopes: vec![Scope::Voip, Scope::Chat],
            expires_in_minutes: 60,
            revocation_epoch: 2,
            key_fingerprint: key.fingerprint.clone(),
            revision: 3,
        },
    }
}

fn key(b: u8) -> Seal {
    Seal::access_key(&AccessKey::from_bytes(vec![b; 64]))
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

fn intact(state: SecretState) -> (RecordedToken, bool) {
    match state {
        SecretState::Intact { record, drifted } => (record, drifted),
        other => panic!("expected an intact Secret, got {other:?}"),
    }
}

#[test]
fn a_written_secret_reads_back_as_intact_without_drift() {
    let k = key(1);
    let t = issued(&k);
    let s = desired_secret(&owner(), &t, &k).unwrap();
    let (r, drifted) = intact(read_secret(Some(&s), &owner(), &k, None));
    assert_eq!(r, t.record);
    assert!(!drifted);
}

#[test]
fn an_edited_or_lost_token_is_tampered() {
    let k = key(1);
    let s = desired_secret(&owner(), &issued(&k), &k).unwrap();
    let mut edited = s.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("token".into(), ByteString(b"forged".to_vec()));
    assert_eq!(
        read_secret(Some(&edited), &owner(), &k, None),
        SecretState::Tampered
    );
    let mut lost = s;
    lost.data.as_mut().unwrap().remove("token");
    assert_eq!(
        read_secret(Some(&lost), &owner(), &k, None),
        SecretState::Tampered
    );
}

#[test]
fn an_edited_record_is_tampered_unless_the_status_record_proves_the_token() {
    let k = key(1);
    let t = issued(&k);
    let mut s = desired_secret(&owner(), &t, &k).unwrap();
    s.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(annotations::REVOCATION_EPOCH.into(), "9".into());
    assert_eq!(
        read_secret(Some(&s), &owner(), &k, None),
        SecretState::Tampered
    );
    let (r, drifted) = intact(read_secret(Some(&s), &owner(), &k, Some(&t.record)));
    assert_eq!(r.revocation_epoch, 2);
    assert!(drifted);
}

#[test]
fn drift_outside_the_token_is_repaired_with_the_same_token() {
    let k = key(1);
    let t = issued(&k);
    let mut s = desired_secret(&owner(), &t, &k).unwrap();
    s.data
        .as_mut()
        .unwrap()
        .insert("extra".into(), ByteString(b"x".to_vec()));
    s.metadata.labels.as_mut().unwrap().remove("team");
    s.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("other-tool".into(), "keep".into());
    s.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("other-tool/note".into(), "keep".into());
    let (r, drifted) = intact(read_secret(Some(&s), &owner(), &k, None));
    assert!(drifted);
    let w = rewritten_secret(&s, &owner(), t.token.expose().as_bytes(), &r, &k).unwrap();
    assert_eq!(w.data.as_ref().unwrap().len(), 4);
    assert_eq!(token_of(&w), Some(&b"aaa.bbb.ccc"[..]));
    let labels = w.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(labels["other-tool"], "keep");
    assert_eq!(
        w.metadata.annotations.as_ref().unwrap()["other-tool/note"],
        "keep"
    );
    let (_, drifted) = intact(read_secret(Some(&w), &owner(), &k, None));
    assert!(!drifted, "a rewritten Secret has no drift left");
}

#[test]
fn a_template_change_is_drift_and_removed_template_keys_go() {
    let k = key(1);
    let t = issued(&k);
    let s = desired_secret(&owner(), &t, &k).unwrap();
    let mut changed = owner();
    changed.spec.secret_template = Some(SecretTemplate {
        labels: BTreeMap::new(),
        annotations: BTreeMap::from([("note".into(), "n".into())]),
    });
    let (r, drifted) = intact(read_secret(Some(&s), &changed, &k, None));
    assert!(drifted);
    let w = rewritten_secret(&s, &changed, b"aaa.bbb.ccc", &r, &k).unwrap();
    assert!(!w.metadata.labels.as_ref().unwrap().contains_key("team"));
    assert_eq!(w.metadata.annotations.as_ref().unwrap()["note"], "n");
}

#[test]
fn a_secret_sealed_by_the_first_version_reads_as_intact_and_is_resealed() {
    let k = key(1);
    let t = issued(&k);
    let mut s = desired_secret(&owner(), &t, &k).unwrap();
    let v1 = digest_v1(&k, s.data.as_ref().unwrap(), &records(&t.record));
    let ann = s.metadata.annotations.as_mut().unwrap();
    ann.insert(annotations::DIGEST.into(), v1);
    ann.remove(annotations::TEMPLATE_KEYS);
    let (r, drifted) = intact(read_secret(Some(&s), &owner(), &k, None));
    assert_eq!(r, t.record);
    assert!(drifted);
}

#[test]
fn a_rotated_key_is_told_apart_from_an_edit() {
    let k = key(1);
    let s = desired_secret(&owner(), &issued(&k), &k).unwrap();
    assert!(matches!(
        read_secret(Some(&s), &owner(), &key(2), None),
        SecretState::KeyChanged(_)
    ));
}

#[test]
fn foreign_and_missing_secrets_are_reported() {
    let k = key(1);
    assert_eq!(read_secret(None, &owner(), &k, None), SecretState::Missing);
    let mut s = desired_secret(&owner(), &issued(&k), &k).unwrap();
    s.metadata.owner_references = None;
    assert_eq!(
        read_secret(Some(&s), &owner(), &k, None),
        SecretState::Foreign
    );
}

#[test]
fn with_the_operators_sealing_key_a_change_of_principal_is_a_key_change_not_an_edit() {
    let operator_key = AccessKey::from_bytes(vec![9; 64]);
    let before = Seal::new(operator_key.clone(), "entra:principal-a".into());
    let s = desired_secret(&owner(), &issued(&before), &before).unwrap();
    // Same principal: intact. Another principal (or endpoint) under the same sealing key:
    // the token was issued under other credentials and is re-issued.
    assert!(matches!(
        read_secret(Some(&s), &owner(), &before, None),
        SecretState::Intact { drifted: false, .. }
    ));
    let after = Seal::new(operator_key, "entra:principal-b".into());
    assert!(matches!(
        read_secret(Some(&s), &owner(), &after, None),
        SecretState::KeyChanged(_)
    ));
    // From a connection string to Entra: the seal no longer verifies, and the recorded
    // fingerprint says why.
    let hmac = key(1);
    let s = desired_secret(&owner(), &issued(&hmac), &hmac).unwrap();
    assert!(matches!(
        read_secret(Some(&s), &owner(), &before, None),
        SecretState::KeyChanged(_)
    ));
}

#[test]
fn fingerprints_differ_per_key_and_do_not_contain_it() {
    let a = key(1).fingerprint;
    assert_ne!(a, key(2).fingerprint);
    assert_eq!(a.len(), 16);
}
