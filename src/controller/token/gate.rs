//! Pure: the checks a token passes before its credentials or its Secret are read, all from
//! the caches (the claim on the Secret name, suspension, a Secret the apiserver rejected, the
//! user and its identity). Each stop is a [`Stop`], the plan that serves no token, so it is
//! table-tested and acted on in one place.

use std::time::Duration;

use super::plan::{NotReady, Stop};
use crate::api::condition::{reasons, types};
use crate::api::{CommunicationToken, CommunicationTokenStatus, CommunicationUser, ConditionExt};

/// How long a token whose Secret name another token holds waits before it looks again (the
/// other token's deletion wakes it sooner).
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// How long a token that names the operator's sealing key, or whose Secret the apiserver
/// rejected, waits: only a change of its spec helps, and that wakes it.
pub const REFUSED_RECHECK: Duration = Duration::from_secs(300);
/// How long a new token waits, without a word, for a user that has no status yet before it
/// looks again (the user's first status normally wakes it sooner). A token older than this
/// whose user still has no status (its reconcile failing before any verdict) says so.
pub const USER_SETUP_RECHECK: Duration = Duration::from_secs(30);

/// The token's user, as the cache shows it.
pub enum UserSeen<'a> {
    Missing,
    Deleting,
    Found(&'a CommunicationUser),
}

/// What the checks read (`'u`: the cached user, which outlives the check).
pub struct Gate<'a, 'u> {
    pub token: &'a CommunicationToken,
    /// The status this reconcile builds on.
    pub status: &'a CommunicationTokenStatus,
    pub namespace: &'a str,
    pub secret_name: &'a str,
    /// An earlier-created token (not being deleted) that claims the same Secret name.
    pub earlier_claimant: Option<String>,
    /// The Secret name is the operator's own sealing key.
    pub names_sealing_key: bool,
    pub user: UserSeen<'u>,
    /// Created less than [`USER_SETUP_RECHECK`] ago.
    pub young: bool,
    pub resync: Duration,
}

fn not_ready(reason: &'static str, message: String, event: bool, requeue: Duration) -> Stop {
    Stop::NotReady(NotReady {
        reason,
        message,
        event,
        requeue,
        delete_secret: false,
    })
}

/// The user (with its identity) when every check passes, else why the token stops here.
pub fn check<'u>(g: &Gate<'_, 'u>) -> Result<(&'u CommunicationUser, String), Stop> {
    let name = g.secret_name;
    if let Some(other) = &g.earlier_claimant {
        let msg = format!("Secret {name} is already used by CommunicationToken {other}; choose another secretName");
        return Err(not_ready(
            reasons::SECRET_CONFLICT,
            msg,
            true,
            CONFLICT_RECHECK,
        ));
    }
    // The operator's own sealing key is never a token Secret: a token created before the key
    // would otherwise hand the operator a key of the requester's choosing.
    if g.names_sealing_key {
        let msg = format!("Secret {name} is the operator's sealing key; choose another secretName");
        return Err(not_ready(
            reasons::SECRET_CONFLICT,
            msg,
            true,
            REFUSED_RECHECK,
        ));
    }
    if g.token.spec.suspend {
        let msg = "issuing and renewing are suspended (spec.suspend)".to_string();
        return Err(not_ready(reasons::SUSPENDED, msg, false, g.resync));
    }
    // A Secret the apiserver rejected for this generation stays rejected until the spec
    // changes; do not issue (and waste) another token for it.
    let gen = g.token.metadata.generation;
    if g.status
        .conditions
        .find(types::READY)
        .is_some_and(|c| c.reason == reasons::SECRET_REJECTED && c.observed_generation == gen)
    {
        return Err(Stop::Wait(REFUSED_RECHECK));
    }
    let user_name = &g.token.spec.user_ref.name;
    let user = match g.user {
        UserSeen::Found(u) => u,
        UserSeen::Missing | UserSeen::Deleting => {
            // The identity is gone or going, and every token of it with it.
            let message = match g.user {
                UserSeen::Deleting => format!("CommunicationUser {user_name} is being deleted"),
                _ => format!(
                    "CommunicationUser {user_name} not found in namespace {}",
                    g.namespace
                ),
            };
            return Err(Stop::NotReady(NotReady {
                reason: reasons::USER_NOT_FOUND,
                message,
                event: true,
                requeue: g.resync,
                delete_secret: true,
            }));
        }
    };
    let Some(identity) = user.identity_id() else {
        // A user with no verdict yet is being set up, the normal course of a first apply:
        // its first status (an identity, or why not) wakes this token, so a new token writes
        // nothing until then. Cold starts had a status write (and an event) per token here.
        if user.status.is_none() && g.status.conditions.is_empty() && g.young {
            return Err(Stop::Wait(USER_SETUP_RECHECK));
        }
        let msg = format!("waiting for CommunicationUser {user_name} to have an identity");
        return Err(not_ready(reasons::USER_NOT_READY, msg, false, g.resync));
    };
    // The user knows its identity was deleted outside the operator: issuing would only meet
    // the same 404. Its status changing (a new identity) wakes this token.
    if user.identity_lost() {
        let msg = format!("the identity {identity} of CommunicationUser {user_name} no longer exists in ACS: delete and recreate the CommunicationUser");
        return Err(not_ready(reasons::IDENTITY_NOT_FOUND, msg, true, g.resync));
    }
    Ok((user, identity.to_string()))
}

/// Credentials that cannot be had (not a passing failure): the token says why.
pub fn credentials_refused(e: &crate::credentials::CredentialsError) -> Stop {
    Stop::NotReady(NotReady {
        reason: e.reason(),
        message: e.message(),
        event: true,
        requeue: e.requeue(),
        delete_secret: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{set_condition, CommunicationUserStatus};

    const RESYNC: Duration = Duration::from_secs(3600);

    fn token() -> CommunicationToken {
        let mut t = crate::controller::fixtures::token("ns", "t");
        t.metadata.generation = Some(2);
        t
    }

    fn user(identity: Option<&str>, reason: Option<&'static str>) -> CommunicationUser {
        let mut u = crate::controller::fixtures::user("ns", "u");
        let mut st = CommunicationUserStatus {
            identity_id: identity.map(str::to_string),
            ..Default::default()
        };
        if let Some(reason) = reason {
            set_condition(
                &mut st.conditions,
                types::READY,
                false,
                reason,
                "m",
                None,
                jiff::Timestamp::UNIX_EPOCH,
            );
        }
        u.status = Some(st);
        u
    }

    fn gate<'a>(
        t: &'a CommunicationToken,
        st: &'a CommunicationTokenStatus,
        user: UserSeen<'a>,
    ) -> Gate<'a, 'a> {
        Gate {
            token: t,
            status: st,
            namespace: "ns",
            secret_name: "t",
            earlier_claimant: None,
            names_sealing_key: false,
            user,
            young: false,
            resync: RESYNC,
        }
    }

    /// The stop's reason, event and requeue; or the identity when the token goes on.
    fn outcome(g: &Gate<'_, '_>) -> Result<String, (&'static str, bool, Duration, bool)> {
        match check(g) {
            Ok((_, id)) => Ok(id),
            Err(Stop::NotReady(n)) => Err((n.reason, n.event, n.requeue, n.delete_secret)),
            Err(Stop::Wait(d)) => Err(("", false, d, false)),
        }
    }

    #[test]
    fn each_check_stops_with_its_reason_event_and_requeue_in_order() {
        let t = token();
        let st = CommunicationTokenStatus::default();
        let ready = user(Some("8:acs:r_u"), None);
        let found = || UserSeen::Found(&ready);
        assert_eq!(outcome(&gate(&t, &st, found())), Ok("8:acs:r_u".into()));

        let mut g = gate(&t, &st, found());
        g.earlier_claimant = Some("older".into());
        g.names_sealing_key = true;
        assert_eq!(
            outcome(&g),
            Err((reasons::SECRET_CONFLICT, true, CONFLICT_RECHECK, false)),
            "the claim is checked first"
        );
        g.earlier_claimant = None;
        assert_eq!(
            outcome(&g),
            Err((reasons::SECRET_CONFLICT, true, REFUSED_RECHECK, false))
        );

        let mut suspended = token();
        suspended.spec.suspend = true;
        assert_eq!(
            outcome(&gate(&suspended, &st, UserSeen::Missing)),
            Err((reasons::SUSPENDED, false, RESYNC, false)),
            "suspension is checked before the user"
        );

        assert_eq!(
            outcome(&gate(&t, &st, UserSeen::Missing)),
            Err((reasons::USER_NOT_FOUND, true, RESYNC, true))
        );
        assert_eq!(
            outcome(&gate(&t, &st, UserSeen::Deleting)),
            Err((reasons::USER_NOT_FOUND, true, RESYNC, true))
        );

        let lost = user(Some("8:acs:r_u"), Some(reasons::IDENTITY_NOT_FOUND));
        assert_eq!(
            outcome(&gate(&t, &st, UserSeen::Found(&lost))),
            Err((reasons::IDENTITY_NOT_FOUND, true, RESYNC, false))
        );
    }

    #[test]
    fn a_rejected_secret_waits_silently_for_a_new_generation() {
        let t = token();
        let ready = user(Some("8:acs:r_u"), None);
        let mut st = CommunicationTokenStatus::default();
        set_condition(
            &mut st.conditions,
            types::READY,
            false,
            reasons::SECRET_REJECTED,
            "m",
            Some(2),
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            outcome(&gate(&t, &st, UserSeen::Found(&ready))),
            Err(("", false, REFUSED_RECHECK, false))
        );
        let mut edited = token();
        edited.metadata.generation = Some(3);
        assert!(outcome(&gate(&edited, &st, UserSeen::Found(&ready))).is_ok());
    }

    #[test]
    fn a_new_token_waits_silently_for_a_user_being_set_up_and_an_old_one_says_so() {
        let t = token();
        let st = CommunicationTokenStatus::default();
        let setting_up = crate::controller::fixtures::user("ns", "u");
        let mut g = gate(&t, &st, UserSeen::Found(&setting_up));
        g.young = true;
        assert_eq!(outcome(&g), Err(("", false, USER_SETUP_RECHECK, false)));
        g.young = false;
        assert_eq!(
            outcome(&g),
            Err((reasons::USER_NOT_READY, false, RESYNC, false))
        );
        // A user with a verdict but no identity: said at once, young or not.
        let refused = user(None, Some(reasons::CREDENTIALS_NOT_FOUND));
        let mut g = gate(&t, &st, UserSeen::Found(&refused));
        g.young = true;
        assert_eq!(
            outcome(&g),
            Err((reasons::USER_NOT_READY, false, RESYNC, false))
        );
    }
}
