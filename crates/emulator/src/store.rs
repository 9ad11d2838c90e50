//! The emulated resource's state: identities, the global issue/revoke sequence, access keys and
//! their generations, and the downstream-service judgement of a token. Pure and synchronous;
//! callers hold it behind one mutex for short critical sections.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Caller, KeySlot, ENTRA_SLOT};
use super::token::Claims;
use acs_client::AccessKey;

/// One identity, kept forever (deleted ones too) so the admin API can list every identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRecord {
    pub id: String,
    #[serde(default)]
    pub external_id: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    /// Tokens whose sequence number is at most this are revoked.
    #[serde(default)]
    pub revoked_through_seq: u64,
    /// Legacy revocation by instant: tokens issued before it are revoked.
    #[serde(default)]
    pub tokens_valid_from: Option<Timestamp>,
    #[serde(default)]
    pub last_token_issued_at: Option<Timestamp>,
    #[serde(default)]
    pub tokens_issued: u64,
    #[serde(default)]
    pub revocations: u64,
}

impl IdentityRecord {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// An access key and how many times its slot has been regenerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub key: AccessKey,
    pub generation: u64,
}

/// Why an identity operation cannot proceed; each maps to a documented error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Not an `8:acs:<guid>_<id>` id.
    Malformed,
    /// An id of another resource GUID.
    NotOwned,
    /// Never created here.
    NotFound,
    /// Deleted.
    Deleted,
}

/// What an issued token needs from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueStamp {
    pub seq: u64,
    pub key_slot: Caller,
    pub key_generation: u64,
}

/// A downstream service's verdict on a token's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Expired,
    ForeignResource,
    UnknownIdentity,
    IdentityDeleted,
    KeyRegenerated,
    Revoked,
}

impl Verdict {
    /// The `reason` string of `/_emulator/validate` (documented).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verdict::Valid => None,
            Verdict::Expired => Some("expired"),
            Verdict::ForeignResource => Some("foreignResource"),
            Verdict::UnknownIdentity => Some("unknownIdentity"),
            Verdict::IdentityDeleted => Some("identityDeleted"),
            Verdict::KeyRegenerated => Some("keyRegenerated"),
            Verdict::Revoked => Some("revoked"),
        }
    }
}

/// The whole mutable state of one emulated resource.
#[derive(Debug, Clone)]
pub struct Store {
    pub resource_id: Uuid,
    /// Last value of the global sequence shared by issues and revocations.
    pub sequence: u64,
    pub keys: [KeyState; 2],
    identities: HashMap<String, IdentityRecord>,
    /// Ids in creation order, for a stable listing.
    order: Vec<String>,
    /// externalId → id of the live identity that carries it.
    by_external: HashMap<String, String>,
}

impl Store {
    pub fn new(
        resource_id: Uuid,
        keys: [KeyState; 2],
        sequence: u64,
        identities: Vec<IdentityRecord>,
    ) -> Self {
        let mut s = Self {
            resource_id,
            sequence,
            keys,
            identities: HashMap::with_capacity(identities.len()),
            order: Vec::with_capacity(identities.len()),
            by_external: HashMap::new(),
        };
        for record in identities {
            s.insert(record);
        }
        s
    }

    fn insert(&mut self, record: IdentityRecord) {
        if let (Some(ext), false) = (&record.external_id, record.is_deleted()) {
            self.by_external.insert(ext.clone(), record.id.clone());
        }
        self.order.push(record.id.clone());
        self.identities.insert(record.id.clone(), record);
    }

    /// Every identity ever created, oldest first.
    pub fn list(&self) -> impl Iterator<Item = &IdentityRecord> {
        self.order.iter().filter_map(|id| self.identities.get(id))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Creates an identity; with an `external_id`, returns the live identity that already has
    /// it (`false`: not created). A deleted identity releases its externalId.
    pub fn create(&mut self, external_id: Option<&str>, now: Timestamp) -> (IdentityRecord, bool) {
        if let Some(ext) = external_id {
            if let Some(existing) = self
                .by_external
                .get(ext)
                .and_then(|id| self.identities.get(id))
            {
                return (existing.clone(), false);
            }
        }
        let id = format!("8:acs:{}_{}", self.resource_id, Uuid::new_v4());
        let record = IdentityRecord {
            id,
            external_id: external_id.map(str::to_string),
            created_at: now,
            deleted_at: None,
            revoked_through_seq: 0,
            tokens_valid_from: None,
            last_token_issued_at: None,
            tokens_issued: 0,
            revocations: 0,
        };
        self.insert(record.clone());
        (record, true)
    }

    /// The live identity `id`, or why it cannot be used.
    pub fn live(&self, id: &str) -> Result<&IdentityRecord, LookupError> {
        self.check_owned(id)?;
        let record = self.identities.get(id).ok_or(LookupError::NotFound)?;
        if record.is_deleted() {
            return Err(LookupError::Deleted);
        }
        Ok(record)
    }

    fn live_mut(&mut self, id: &str) -> Result<&mut IdentityRecord, LookupError> {
        self.live(id)?;
        self.identities.get_mut(id).ok_or(LookupError::NotFound)
    }

    fn check_owned(&self, id: &str) -> Result<(), LookupError> {
        // ACS users of sovereign clouds are well-formed ids, just never this resource's.
        if ["8:gcch-acs:", "8:dod-acs:", "8:spool:"]
            .iter()
            .any(|p| id.starts_with(p))
        {
            return Err(LookupError::NotOwned);
        }
        let rest = id.strip_prefix("8:acs:").ok_or(LookupError::Malformed)?;
        let (guid, local) = rest.split_once('_').ok_or(LookupError::Malformed)?;
        let guid = Uuid::parse_str(guid).map_err(|_| LookupError::Malformed)?;
        if local.is_empty() {
            return Err(LookupError::Malformed);
        }
        if guid != self.resource_id {
            return Err(LookupError::NotOwned);
        }
        Ok(())
    }

    /// Records a token issue and hands out its sequence number and key stamp.
    pub fn issue(
        &mut self,
        id: &str,
        now: Timestamp,
        caller: Caller,
    ) -> Result<IssueStamp, LookupError> {
        self.live(id)?;
        self.sequence += 1;
        let seq = self.sequence;
        // Tokens minted for an Entra principal depend on no access key.
        let key_generation = match caller {
            Caller::Key(slot) => self.keys[slot.index()].generation,
            Caller::Entra => 0,
        };
        let record = self.live_mut(id)?;
        record.last_token_issued_at = Some(now);
        record.tokens_issued += 1;
        Ok(IssueStamp {
            seq,
            key_slot: caller,
            key_generation,
        })
    }

    /// Revokes every token issued so far for `id` (by sequence, so ordering is exact).
    pub fn revoke(&mut self, id: &str) -> Result<(), LookupError> {
        self.live(id)?;
        self.sequence += 1;
        let seq = self.sequence;
        let record = self.live_mut(id)?;
        record.revoked_through_seq = seq;
        record.revocations += 1;
        Ok(())
    }

    /// Legacy revocation: tokens issued before `from` are revoked.
    pub fn set_tokens_valid_from(&mut self, id: &str, from: Timestamp) -> Result<(), LookupError> {
        let record = self.live_mut(id)?;
        record.tokens_valid_from = Some(from);
        record.revocations += 1;
        Ok(())
    }

    /// Deletes `id`: its tokens die with it and its externalId is released.
    pub fn delete(&mut self, id: &str, now: Timestamp) -> Result<(), LookupError> {
        self.live(id)?;
        self.sequence += 1;
        let seq = self.sequence;
        let record = self.live_mut(id)?;
        record.deleted_at = Some(now);
        record.revoked_through_seq = seq;
        let ext = record.external_id.clone();
        if let Some(ext) = ext {
            if self.by_external.get(&ext).is_some_and(|owner| owner == id) {
                self.by_external.remove(&ext);
            }
        }
        Ok(())
    }

    /// Replaces the key of `slot`; every token minted under the old key becomes invalid.
    pub fn regenerate_key(&mut self, slot: KeySlot, key: AccessKey) -> u64 {
        let state = &mut self.keys[slot.index()];
        state.key = key;
        state.generation += 1;
        state.generation
    }

    /// The current keys with their slots, for request authentication.
    pub fn signing_keys(&self) -> [(KeySlot, AccessKey); 2] {
        [
            (KeySlot::Primary, self.keys[0].key.clone()),
            (KeySlot::Secondary, self.keys[1].key.clone()),
        ]
    }

    /// Judges verified claims as a downstream ACS service would, at `now`.
    pub fn judge(&self, claims: &Claims, now: Timestamp) -> Verdict {
        if now.as_second() >= claims.exp {
            return Verdict::Expired;
        }
        if claims.resource_id != self.resource_id.to_string() {
            return Verdict::ForeignResource;
        }
        let Some(record) = self.identities.get(&claims.identity_id()) else {
            return Verdict::UnknownIdentity;
        };
        if record.is_deleted() {
            return Verdict::IdentityDeleted;
        }
        if claims.key_slot != ENTRA_SLOT {
            let generation = match KeySlot::parse(&claims.key_slot) {
                Some(slot) => self.keys[slot.index()].generation,
                None => return Verdict::KeyRegenerated,
            };
            if claims.key_generation != generation {
                return Verdict::KeyRegenerated;
            }
        }
        if claims.seq <= record.revoked_through_seq {
            return Verdict::Revoked;
        }
        if let Some(from) = record.tokens_valid_from {
            if i128::from(claims.issued_at_ns) < from.as_nanosecond() {
                return Verdict::Revoked;
            }
        }
        Verdict::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let key = |b| KeyState {
            key: AccessKey::from_bytes(vec![b; 64]),
            generation: 0,
        };
        Store::new(Uuid::new_v4(), [key(1), key(2)], 0, Vec::new())
    }

    fn claims_for(s: &Store, id: &str, stamp: &IssueStamp, now: Timestamp) -> Claims {
        Claims {
            pad: String::new(),
            skypeid: id.trim_start_matches("8:").into(),
            scp: 0,
            csi: String::new(),
            iat: now.as_second(),
            exp: now.as_second() + 3600,
            acs_scope: "chat".into(),
            resource_id: s.resource_id.to_string(),
            seq: stamp.seq,
            issued_at_ns: i64::try_from(now.as_nanosecond()).unwrap(),
            key_slot: stamp.key_slot.as_str().into(),
            key_generation: stamp.key_generation,
        }
    }

    #[test]
    fn revocation_is_ordered_by_sequence_not_by_clock() {
        let mut s = store();
        let now = Timestamp::now();
        let (u, _) = s.create(None, now);
        let before = s.issue(&u.id, now, Caller::Key(KeySlot::Primary)).unwrap();
        s.revoke(&u.id).unwrap();
        let after = s.issue(&u.id, now, Caller::Key(KeySlot::Primary)).unwrap();
        assert_eq!(
            s.judge(&claims_for(&s, &u.id, &before, now), now),
            Verdict::Revoked
        );
        assert_eq!(
            s.judge(&claims_for(&s, &u.id, &after, now), now),
            Verdict::Valid
        );
    }

    #[test]
    fn external_ids_are_get_or_create_until_deleted() {
        let mut s = store();
        let now = Timestamp::now();
        let (a, created) = s.create(Some("alice"), now);
        assert!(created);
        let (b, created) = s.create(Some("alice"), now);
        assert!(!created);
        assert_eq!(a.id, b.id);
        s.delete(&a.id, now).unwrap();
        let (c, created) = s.create(Some("alice"), now);
        assert!(created);
        assert_ne!(c.id, a.id);
        assert_eq!(s.live(&a.id), Err(LookupError::Deleted));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn ids_are_checked_for_shape_and_owner() {
        let s = store();
        assert_eq!(s.live("nope"), Err(LookupError::Malformed));
        assert_eq!(s.live("8:acs:not-a-guid_x"), Err(LookupError::Malformed));
        assert_eq!(s.live("8:gcch-acs:whatever"), Err(LookupError::NotOwned));
        assert_eq!(
            s.live(&format!("8:acs:{}_x", Uuid::new_v4())),
            Err(LookupError::NotOwned)
        );
        assert_eq!(
            s.live(&format!("8:acs:{}_x", s.resource_id)),
            Err(LookupError::NotFound)
        );
    }

    #[test]
    fn deletion_expiry_key_regeneration_and_legacy_instants_invalidate() {
        let mut s = store();
        let now = Timestamp::now();
        let (u, _) = s.create(None, now);
        let t = s
            .issue(&u.id, now, Caller::Key(KeySlot::Secondary))
            .unwrap();
        let c = claims_for(&s, &u.id, &t, now);
        assert_eq!(s.judge(&c, now), Verdict::Valid);
        assert_eq!(
            s.judge(&c, now + jiff::SignedDuration::from_secs(3600)),
            Verdict::Expired
        );
        s.set_tokens_valid_from(&u.id, now + jiff::SignedDuration::from_nanos(1))
            .unwrap();
        assert_eq!(s.judge(&c, now), Verdict::Revoked);
        let (v, _) = s.create(None, now);
        let by_entra = s.issue(&v.id, now, Caller::Entra).unwrap();
        let e = claims_for(&s, &v.id, &by_entra, now);
        assert_eq!(e.key_slot, "entra");
        s.regenerate_key(KeySlot::Secondary, AccessKey::from_bytes(vec![9; 64]));
        s.regenerate_key(KeySlot::Primary, AccessKey::from_bytes(vec![8; 64]));
        assert_eq!(s.judge(&c, now), Verdict::KeyRegenerated);
        // A token minted for an Entra principal outlives key regenerations.
        assert_eq!(s.judge(&e, now), Verdict::Valid);
        s.delete(&u.id, now).unwrap();
        assert_eq!(s.judge(&c, now), Verdict::IdentityDeleted);
    }
}
