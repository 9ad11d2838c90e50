//! The summary gauges of both kinds (tokens and users: ready, not ready, expiring; the
//! queue depths), recomputed from the caches (no API calls).

use std::sync::Arc;
use std::time::Duration;

use crate::api::condition::types;
use crate::api::ConditionExt;
use crate::controller::{token, user, Context};
use kube::ResourceExt;

/// Refreshes the token summary gauges from the cache every few seconds (no API calls).
pub async fn summarize_forever(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now = ctx.now();
        let mut s = crate::metrics::TokenSummary {
            ready: 0,
            not_ready: 0,
            suspended: 0,
            revoked: 0,
            min_remaining_validity_seconds: None,
            next_expiry_unix: None,
            next_renewal_unix: None,
            min_pod_validity_seconds: None,
        };
        // Objects waiting for a reconcile: never reconciled, a spec not yet observed, or a
        // token past its renewal time (kube-runtime does not expose its scheduler queue).
        let mut pending_tokens = 0;
        for t in ctx.tokens.all() {
            if t.spec.suspend {
                s.suspended += 1;
            }
            let Some(st) = t.status.as_ref() else {
                s.not_ready += 1;
                pending_tokens += 1;
                continue;
            };
            let due = st.renewal_time.as_ref().is_some_and(|r| r.0 <= now);
            if due || st.observed_generation != t.metadata.generation {
                pending_tokens += 1;
            }
            // Issued before the user's current epoch: ACS refuses it.
            let user_epoch = t.namespace().and_then(|ns| {
                ctx.users
                    .get(&ns, &t.spec.user_ref.name)
                    .map(|u| u.revocation_epoch())
            });
            if let (Some(issued), Some(current)) = (st.revocation_epoch, user_epoch) {
                if issued < current {
                    s.revoked += 1;
                }
            }
            if st.conditions.is_true(types::READY) {
                s.ready += 1;
            } else if !t.spec.suspend {
                s.not_ready += 1;
            }
            if let Some(e) = &st.expires_on {
                let rem = e.0.duration_since(now).as_secs_f64();
                s.min_remaining_validity_seconds = Some(
                    s.min_remaining_validity_seconds
                        .map_or(rem, |m: f64| m.min(rem)),
                );
                let x = e.0.as_second() as f64;
                s.next_expiry_unix = Some(s.next_expiry_unix.map_or(x, |m: f64| m.min(x)));
            }
            if let Some(v) = st.pod_validity_at_worst_seconds {
                let v = v as f64;
                s.min_pod_validity_seconds =
                    Some(s.min_pod_validity_seconds.map_or(v, |m: f64| m.min(v)));
            }
            if let Some(r) = &st.renewal_time {
                let x = r.0.as_second() as f64;
                s.next_renewal_unix = Some(s.next_renewal_unix.map_or(x, |m: f64| m.min(x)));
            }
        }
        ctx.metrics.set_token_summary(&s);
        ctx.metrics
            .set_queue_depth(token::CONTROLLER, pending_tokens);
        let users = ctx.users.all();
        let pending_users = users
            .iter()
            .filter(|u| {
                u.status
                    .as_ref()
                    .is_none_or(|s| s.observed_generation != u.metadata.generation)
            })
            .count() as i64;
        ctx.metrics.set_queue_depth(user::CONTROLLER, pending_users);
        let ready = users
            .iter()
            .filter(|u| {
                u.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.is_true(types::READY))
            })
            .count() as i64;
        ctx.metrics.set_users(ready, users.len() as i64 - ready);
    }
}
