//! The observe step of a user reconcile: what its tokens and the other users say, read from
//! the caches (no API call), for [`super::plan::decide`].

use kube::ResourceExt;

use super::plan::{Creds, Observed, Refused};
use crate::api::condition::{reasons, types};
use crate::api::{CommunicationUser, CommunicationUserStatus, ConditionExt};
use crate::controller::Context;
use crate::credentials::{Credentials, CredentialsError};

pub(super) fn observe<'a>(
    ctx: &Context,
    user: &'a CommunicationUser,
    status: &'a CommunicationUserStatus,
    creds: Result<&'a Credentials, &CredentialsError>,
) -> Observed<'a> {
    let identity = status.identity_id.as_deref();
    let adopt = user.spec.identity_id.as_deref();
    let adoption_refused = match (identity, adopt, creds) {
        (None, Some(id), Ok(c)) => adoption_refused(ctx, user, id, c),
        _ => None,
    };
    Observed {
        identity,
        endpoint: status.endpoint.as_deref(),
        adopt,
        creds: creds
            .map(|c| Creds {
                endpoint: &c.endpoint,
                source: c.source.to_string(),
            })
            .map_err(|e| Refused {
                reason: e.reason(),
                message: e.message(),
                requeue: e.requeue(),
            }),
        lost: identity.and_then(|id| lost(ctx, user, id)),
        adoption_refused,
        api_mode: ctx.config.api_mode,
        resync: ctx.config.resync_period,
    }
}

/// The identity `id` is known deleted outside the operator: from a revoke (the user's own
/// status), or from one of its tokens (named).
fn lost(ctx: &Context, user: &CommunicationUser, id: &str) -> Option<Option<String>> {
    let ns = user.namespace().unwrap_or_default();
    let reporter = ctx
        .tokens_of_user(&ns, &user.name_any(), |t| {
            t.status.as_ref().is_some_and(|s| {
                s.identity_id.as_deref() == Some(id)
                    && s.conditions
                        .find(types::READY)
                        .is_some_and(|c| c.reason == reasons::IDENTITY_NOT_FOUND)
            })
        })
        .first()
        .map(|t| t.name_any());
    (user.identity_lost() || reporter.is_some()).then_some(reporter)
}

/// Why adopting `id` is refused, if it is: another CommunicationUser (among the watched
/// namespaces) manages it and was created first, or the credentials are the operator-wide
/// default and the operator does not allow adoption under them (whoever can create a
/// CommunicationUser in an opted-in namespace could otherwise take over any identity of the
/// shared resource).
fn adoption_refused(
    ctx: &Context,
    user: &CommunicationUser,
    id: &str,
    creds: &Credentials,
) -> Option<(&'static str, String)> {
    let ns = user.namespace().unwrap_or_default();
    let mine = (
        user.metadata.creation_timestamp.clone(),
        ns.clone(),
        user.name_any(),
    );
    let holder = ctx
        .users
        .all_where(|o| {
            o.metadata.uid != user.metadata.uid
                && (o.identity_id() == Some(id)
                    || (o.spec.identity_id.as_deref() == Some(id)
                        && (
                            o.metadata.creation_timestamp.clone(),
                            o.metadata.namespace.clone().unwrap_or_default(),
                            o.name_any(),
                        ) < mine))
        })
        .into_iter()
        .next();
    if let Some(h) = holder {
        let msg = format!(
            "identity {id} is already managed by CommunicationUser {}/{}; one identity has one owner",
            h.namespace().unwrap_or_default(),
            h.name_any()
        );
        return Some((reasons::IDENTITY_IN_USE, msg));
    }
    if creds.operator_default && !ctx.config.guards.allow_default_credentials_adoption {
        let msg = format!("adopting identity {id} under credentials shared with other namespaces (the operator-wide default or a ClusterCommunicationService) is not allowed (the operator's --allow-default-credentials-adoption, chart value defaultCredentials.allowAdoption); use credentials of this namespace");
        return Some((reasons::ADOPTION_NOT_ALLOWED, msg));
    }
    None
}
