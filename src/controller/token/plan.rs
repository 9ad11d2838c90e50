//! Pure: what a CommunicationToken reconcile must do, from what it observed (the Secret as
//! read, the user's identity and revocation state, the spec, the clock). Every action the
//! reconciler takes on the token's Secret is decided here, so it is table-tested.

use crate::api::{self, CommunicationToken};
use crate::rotation::{self, RenewalPolicy};
use crate::secret::{RecordedToken, SecretState};

/// Why a new token is issued (a metric label and an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// The first token of this CommunicationToken.
    Initial,
    /// The user now has another identity than the one the token was issued for.
    IdentityChanged,
    /// The Secret was deleted, or its token edited or lost.
    SecretRestored,
    /// The access key changed (which revokes the tokens issued under the old one).
    KeyRotated,
    /// Scopes or lifetime changed, after the revocation that change asked for.
    SpecChanged,
    /// The user revoked its tokens.
    Revoked,
    /// The rotate annotation got a new value.
    Forced,
    /// The renewal time was reached.
    Renewal,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Initial => "initial",
            IssueReason::IdentityChanged => "identity_changed",
            IssueReason::SecretRestored => "secret_restored",
            IssueReason::KeyRotated => "key_rotated",
            IssueReason::SpecChanged => "spec_changed",
            IssueReason::Revoked => "revoked",
            IssueReason::Forced => "forced",
            IssueReason::Renewal => "renewal",
        }
    }

    /// Issuances the token's own guard limits: unscheduled ones the token itself causes (its
    /// token value edited or lost, the rotate annotation, a new identity of its user).
    /// Re-issues forced from outside (a revocation, its own scope change after the revocation
    /// it asked for, a key change) replace a token ACS refuses, so deferring them would leave a
    /// dead token in the Secret; their cause, the user's revocations, is bounded instead.
    pub fn is_guarded(self) -> bool {
        matches!(
            self,
            IssueReason::SecretRestored | IssueReason::Forced | IssueReason::IdentityChanged
        )
    }

    /// Whether the token the Secret holds while this issuance waits is one ACS still accepts
    /// (until it expires): only for a renewal or a forced rotation.
    pub fn held_token_usable(self) -> bool {
        matches!(self, IssueReason::Renewal | IssueReason::Forced)
    }

    /// Whether the token the Secret holds was revoked at ACS.
    pub fn held_token_revoked(self) -> bool {
        matches!(
            self,
            IssueReason::Revoked | IssueReason::SpecChanged | IssueReason::KeyRotated
        )
    }
}

/// What the reconcile must do about the token.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// The Secret holds a good token and is as it should be: record it, requeue at renewal.
    Keep(Served),
    /// The token is good but something else in the Secret drifted: rewrite it with the same
    /// token.
    Repair(Served),
    /// Issue a new token now.
    Issue(IssueReason),
    /// The spec changed: ask the user to revoke tokens issued under this epoch, then wait.
    RequestRevocation(i64),
    /// A revocation is pending (this token's or a sibling's): a token issued now would be
    /// revoked by it. Holds the issuance that waits.
    WaitForRevocation(IssueReason),
    /// Serve no token: the checks before the credentials and the Secret are read stop here
    /// ([`super::gate`]), and so does a Secret that is not ours.
    Stop(Stop),
}

/// The token the Secret holds and goes on serving, with the instant it is renewed at: worked
/// out once, where the plan compares it with the clock, and carried to the status, the event
/// and the requeue.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub record: RecordedToken,
    pub renew: jiff::Timestamp,
}

impl Served {
    pub fn of(token: &CommunicationToken, record: RecordedToken) -> Self {
        let renew = renewal_at(token, &record);
        Served { record, renew }
    }
}

/// A plan that serves no token.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// The status says why.
    NotReady(NotReady),
    /// Nothing to write: look again after this long.
    Wait(std::time::Duration),
}

/// Why the token is not served, said in its Ready condition.
#[derive(Debug, PartialEq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
    /// A Warning event too, when the reason is new.
    pub event: bool,
    pub requeue: std::time::Duration,
    /// The user is gone or going: its Secret goes too.
    pub delete_secret: bool,
}

/// How long a token whose Secret someone else owns waits before it looks again.
pub const FOREIGN_SECRET_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// What a reconcile observed, everything the plan depends on.
pub struct Observed<'a> {
    pub token: &'a CommunicationToken,
    pub state: &'a SecretState,
    /// The user's identity id.
    pub identity: &'a str,
    /// The user's revocation epoch.
    pub epoch: i64,
    /// The user has started a revocation that has not completed.
    pub user_revoking: bool,
    pub now: jiff::Timestamp,
}

pub fn policy(token: &CommunicationToken) -> RenewalPolicy {
    match (&token.spec.renew_before, token.spec.renew_before_percentage) {
        (Some(d), _) => RenewalPolicy::Before(std::time::Duration::from(*d)),
        (None, Some(p)) => RenewalPolicy::RemainingPercentage(p.clamp(1, 99) as u8),
        (None, None) => RenewalPolicy::Default,
    }
}

pub fn renewal_at(token: &CommunicationToken, r: &RecordedToken) -> jiff::Timestamp {
    rotation::renewal_time(
        r.issued_at,
        r.expires_on,
        policy(token),
        token.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn sorted(mut v: Vec<api::token::Scope>) -> Vec<api::token::Scope> {
    v.sort();
    v.dedup();
    v
}

/// The one action for what was observed.
pub fn decide(o: &Observed<'_>) -> Plan {
    let plan = decide_ignoring_revocations(o);
    let Plan::Issue(reason) = plan else {
        return plan;
    };
    // A new token must never be issued while a revocation is on its way: it would be revoked
    // with the old ones and the Secret would hold a dead token with a current epoch.
    let requested = o
        .token
        .status
        .as_ref()
        .and_then(|s| s.revocation_requested)
        .is_some_and(|e| o.epoch <= e);
    if o.user_revoking || (requested && reason != IssueReason::SpecChanged) {
        return Plan::WaitForRevocation(reason);
    }
    plan
}

fn decide_ignoring_revocations(o: &Observed<'_>) -> Plan {
    let token = o.token;
    let revision = token.status.as_ref().map_or(0, |s| s.revision);
    let (r, drifted) = match o.state {
        SecretState::Foreign => {
            let name = token.secret_name();
            return Plan::Stop(Stop::NotReady(NotReady {
                reason: api::condition::reasons::SECRET_CONFLICT,
                message: format!("Secret {name} exists and is not owned by this CommunicationToken; it is never taken over: delete it or choose another secretName"),
                event: true,
                requeue: FOREIGN_SECRET_RECHECK,
                delete_secret: false,
            }));
        }
        SecretState::Missing if revision == 0 => return Plan::Issue(IssueReason::Initial),
        SecretState::Missing | SecretState::Tampered => {
            return Plan::Issue(IssueReason::SecretRestored)
        }
        SecretState::KeyChanged(_) => return Plan::Issue(IssueReason::KeyRotated),
        SecretState::Intact { record, drifted } => (record, *drifted),
    };
    let spec_changed = sorted(r.scopes.clone()) != sorted(token.spec.scopes.clone())
        || r.expires_in_minutes != token.spec.expires_in_minutes;
    let rotate = token
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(api::ROTATE_ANNOTATION));
    let handled = token
        .status
        .as_ref()
        .and_then(|s| s.handled_rotate_annotation.as_ref());
    if r.user_id != o.identity {
        Plan::Issue(if revision == 0 {
            IssueReason::Initial
        } else {
            IssueReason::IdentityChanged
        })
    } else if spec_changed {
        if o.epoch > r.revocation_epoch {
            Plan::Issue(IssueReason::SpecChanged)
        } else {
            Plan::RequestRevocation(r.revocation_epoch)
        }
    } else if r.revocation_epoch < o.epoch {
        Plan::Issue(IssueReason::Revoked)
    } else if rotate.is_some() && rotate != handled {
        Plan::Issue(IssueReason::Forced)
    } else {
        let served = Served::of(token, r.clone());
        if o.now >= served.renew || o.now >= r.expires_on {
            Plan::Issue(IssueReason::Renewal)
        } else if drifted {
            Plan::Repair(served)
        } else {
            Plan::Keep(served)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::token::Scope;
    use crate::api::CommunicationTokenStatus;
    use jiff::Timestamp;

    fn token() -> CommunicationToken {
        let mut t = crate::controller::fixtures::token("ns", "t");
        // The renewal instant's spread is drawn from the UID.
        t.metadata.uid = Some("uid".into());
        t.status = Some(CommunicationTokenStatus {
            revision: 1,
            ..Default::default()
        });
        t
    }

    fn recorded(epoch: i64) -> RecordedToken {
        RecordedToken {
            expires_on: Timestamp::from_second(3600).unwrap(),
            issued_at: Timestamp::from_second(0).unwrap(),
            user_id: "id".into(),
            scopes: vec![Scope::Voip],
            expires_in_minutes: 60,
            revocation_epoch: epoch,
            key_fingerprint: "fp".into(),
            revision: 1,
        }
    }

    fn intact(epoch: i64, drifted: bool) -> SecretState {
        SecretState::Intact {
            record: recorded(epoch),
            drifted,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn plan(t: &CommunicationToken, state: &SecretState, epoch: i64, now: i64) -> Plan {
        decide(&Observed {
            token: t,
            state,
            identity: "id",
            epoch,
            user_revoking: false,
            now: at(now),
        })
    }

    #[test]
    fn a_fresh_token_is_kept_until_its_renewal_time_which_the_plan_carries() {
        let t = token();
        let Plan::Keep(kept) = plan(&t, &intact(0, false), 0, 60) else {
            panic!("not kept")
        };
        assert_eq!(kept.record, recorded(0));
        assert_eq!(kept.renew, renewal_at(&t, &recorded(0)));
        // The instant it carries is the one the plan compared with the clock.
        let renew = kept.renew.as_second();
        assert!(matches!(
            plan(&t, &intact(0, false), 0, renew - 1),
            Plan::Keep(_)
        ));
        assert_eq!(
            plan(&t, &intact(0, false), 0, renew + 1),
            Plan::Issue(IssueReason::Renewal)
        );
    }

    #[test]
    fn drift_with_an_intact_token_is_repaired_not_reissued() {
        let t = token();
        assert_eq!(
            plan(&t, &intact(0, true), 0, 60),
            Plan::Repair(Served::of(&t, recorded(0)))
        );
        // A renewal due anyway rewrites the whole Secret with the new token.
        assert_eq!(
            plan(&t, &intact(0, true), 0, 2400),
            Plan::Issue(IssueReason::Renewal)
        );
    }

    #[test]
    fn a_moved_epoch_reissues_and_a_spec_change_asks_for_a_revocation_first() {
        let mut t = token();
        assert_eq!(
            plan(&t, &intact(0, false), 1, 60),
            Plan::Issue(IssueReason::Revoked)
        );
        t.spec.scopes = vec![Scope::Chat];
        assert_eq!(
            plan(&t, &intact(0, false), 0, 60),
            Plan::RequestRevocation(0)
        );
        assert_eq!(
            plan(&t, &intact(0, false), 1, 60),
            Plan::Issue(IssueReason::SpecChanged)
        );
    }

    #[test]
    fn missing_tampered_and_rekeyed_secrets_are_reissued() {
        let mut t = token();
        assert_eq!(
            plan(&t, &SecretState::Missing, 0, 0),
            Plan::Issue(IssueReason::SecretRestored)
        );
        assert_eq!(
            plan(&t, &SecretState::Tampered, 0, 0),
            Plan::Issue(IssueReason::SecretRestored)
        );
        assert_eq!(
            plan(&t, &SecretState::KeyChanged(recorded(0)), 0, 0),
            Plan::Issue(IssueReason::KeyRotated)
        );
        t.status = None;
        assert_eq!(
            plan(&t, &SecretState::Missing, 0, 0),
            Plan::Issue(IssueReason::Initial)
        );
    }

    #[test]
    fn a_new_identity_reissues() {
        let t = token();
        let d = decide(&Observed {
            token: &t,
            state: &intact(0, false),
            identity: "other",
            epoch: 0,
            user_revoking: false,
            now: at(60),
        });
        assert_eq!(d, Plan::Issue(IssueReason::IdentityChanged));
    }

    #[test]
    fn the_rotate_annotation_forces_one_rotation() {
        let mut t = token();
        t.metadata.annotations =
            Some([(api::ROTATE_ANNOTATION.to_string(), "1".to_string())].into());
        assert_eq!(
            plan(&t, &intact(0, false), 0, 60),
            Plan::Issue(IssueReason::Forced)
        );
        t.status.as_mut().unwrap().handled_rotate_annotation = Some("1".into());
        assert!(matches!(plan(&t, &intact(0, false), 0, 60), Plan::Keep(_)));
    }

    #[test]
    fn only_issuances_the_token_causes_itself_are_guarded() {
        use IssueReason::*;
        let all = [
            Initial,
            IdentityChanged,
            SecretRestored,
            KeyRotated,
            SpecChanged,
            Revoked,
            Forced,
            Renewal,
        ];
        let guarded: Vec<_> = all.iter().filter(|r| r.is_guarded()).collect();
        assert_eq!(guarded, [&IdentityChanged, &SecretRestored, &Forced]);
        // While one waits, only a renewal's or a forced rotation's Secret still works.
        let usable: Vec<_> = all.iter().filter(|r| r.held_token_usable()).collect();
        assert_eq!(usable, [&Forced, &Renewal]);
        let revoked: Vec<_> = all.iter().filter(|r| r.held_token_revoked()).collect();
        assert_eq!(revoked, [&KeyRotated, &SpecChanged, &Revoked]);
    }

    #[test]
    fn nothing_is_issued_while_a_revocation_is_pending() {
        let mut t = token();
        let revoking = |t: &CommunicationToken, state: &SecretState, epoch| {
            decide(&Observed {
                token: t,
                state,
                identity: "id",
                epoch,
                user_revoking: true,
                now: at(2400),
            })
        };
        assert_eq!(
            revoking(&t, &intact(0, false), 0),
            Plan::WaitForRevocation(IssueReason::Renewal)
        );
        assert_eq!(
            revoking(&t, &SecretState::Missing, 0),
            Plan::WaitForRevocation(IssueReason::SecretRestored)
        );
        // Keeping or repairing the current token is still fine.
        assert!(matches!(
            decide(&Observed {
                token: &t,
                state: &intact(0, true),
                identity: "id",
                epoch: 0,
                user_revoking: true,
                now: at(60),
            }),
            Plan::Repair(_)
        ));
        // This token's own pending request (a deletion in progress) blocks any issuance but
        // the one its spec change asked for.
        t.status.as_mut().unwrap().revocation_requested = Some(0);
        assert_eq!(
            plan(&t, &SecretState::Missing, 0, 60),
            Plan::WaitForRevocation(IssueReason::SecretRestored)
        );
        t.spec.scopes = vec![Scope::Chat];
        assert_eq!(
            plan(&t, &intact(0, false), 1, 60),
            Plan::Issue(IssueReason::SpecChanged)
        );
    }
}
