//! Reports the size of every in-memory table of the process (`tracked_entries{table}`), and
//! prunes what no deletion path reaches for sure: the controllers' change filters (deletions
//! never reach them), failures of objects gone from the caches, recent identities the caches
//! show or no longer have, guard
//! entries past every window. The benchmark's churn phase reads these to prove that deleting
//! objects returns every per-object table to where it was.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use kube::Resource;

use crate::api::{CommunicationToken, CommunicationUser};

/// How often the tables are pruned and reported.
const PERIOD: Duration = Duration::from_secs(5);

/// Prunes and reports every [`PERIOD`], on every replica (a standby's tables count too).
pub async fn report_forever(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        report(&ctx);
    }
}

/// Whether the object a failure key (`Kind/namespace/name`) names is still cached.
fn cached(ctx: &Context, key: &str) -> bool {
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(ns), Some(name)) if kind == CommunicationUser::kind(&()) => {
            ctx.users.get(ns, name).is_some()
        }
        (Some(kind), Some(ns), Some(name)) if kind == CommunicationToken::kind(&()) => {
            ctx.tokens.get(ns, name).is_some()
        }
        _ => true,
    }
}

/// The most entries the token tables held since memory was last given back.
static HIGH_WATER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Entries the token tables must have lost (and at least half of them) for their room to be
/// given back.
const LARGE_SHRINK: usize = 1000;

/// After many objects went: the maps give back their room and the allocator its free pages.
fn release_after_large_shrink(ctx: &Context) {
    use std::sync::atomic::Ordering;
    let now = ctx.token_index.len() + ctx.own_writes.len().0 + ctx.token_status.len();
    let high = HIGH_WATER.fetch_max(now, Ordering::Relaxed).max(now);
    if high >= now + LARGE_SHRINK && now <= high / 2 {
        HIGH_WATER.store(now, Ordering::Relaxed);
        ctx.token_index.shrink();
        ctx.own_writes.shrink();
        ctx.token_status.shrink();
        crate::alloc::release_free_memory_soon();
    }
}

/// A user's new identity is remembered until the cache shows an identity for it (the rule a
/// reconcile forgets it by, applied to every user: one that is not reconciled again would
/// otherwise keep its entry, 1 KB, for good) or no longer has the user.
fn prune_recent_identities(ctx: &Context) {
    if !ctx.recent_identities.is_empty() {
        ctx.recent_identities.retain(|ns, name| {
            ctx.users
                .get(ns, name)
                .is_some_and(|u| u.identity_id().is_none())
        });
    }
}

/// Measures (and prunes what only a pass can prune) every table.
pub fn report(ctx: &Context) {
    let m = &ctx.metrics.runtime;
    ctx.failures.retain(|k| cached(ctx, k));
    prune_recent_identities(ctx);
    let restarts = if ctx.metrics.objects.restart_entries() == 0 {
        0
    } else {
        let uids: HashSet<String> = ctx
            .tokens
            .state()
            .iter()
            .filter_map(|t| t.metadata.uid.clone())
            .collect();
        ctx.metrics
            .objects
            .retain_restarts(|uid| uids.contains(uid))
    };
    m.set_tracked("token_restart_counts", restarts);
    for (table, n) in ctx.change_filters.prune() {
        m.set_tracked(table, n);
    }
    m.set_tracked("token_index", ctx.token_index.len());
    m.set_tracked("token_status_memo", ctx.token_status.len());
    let (seen, wrote) = ctx.own_writes.len();
    m.set_tracked("secret_versions", seen);
    m.set_tracked("secret_writes", wrote);
    m.set_tracked("failures", ctx.failures.len());
    let g = &ctx.config.guards;
    ctx.unscheduled.prune(
        g.unscheduled_window.max(g.revocation_window),
        std::time::Instant::now(),
    );
    m.set_tracked("guard", ctx.unscheduled.len());
    m.set_tracked("recent_identities", ctx.recent_identities.len());
    let (endpoints, clients) = ctx.acs.sizes();
    m.set_tracked("acs_endpoints", endpoints);
    m.set_tracked("acs_clients", clients);
    m.set_tracked(
        "entra_principals",
        ctx.credentials.entra_tokens().map_or(0, |t| t.len()),
    );
    let (secrets, namespaces, accounts) = ctx.credentials.sizes();
    m.set_tracked("credential_secrets", secrets);
    m.set_tracked("opted_in_namespaces", namespaces);
    m.set_tracked("service_accounts", accounts);
    if ctx.recorder.renew_if_idle(super::events::IDLE_RENEWAL) {
        crate::alloc::release_free_memory_soon();
    }
    m.set_tracked("events", ctx.recorder.cached());
    release_after_large_shrink(ctx);
    if let Some(heap) = crate::alloc::heap_bytes() {
        m.set_heap(heap);
    }
    m.tables_reported(jiff::Timestamp::now());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CommunicationUserStatus;
    use crate::controller::fixtures::user;

    #[tokio::test]
    async fn a_new_identity_is_forgotten_once_the_cache_shows_one_or_loses_the_user() {
        let mut shown = user("ns", "shown");
        shown.status = Some(CommunicationUserStatus {
            identity_id: Some("8:acs:r_shown".into()),
            ..Default::default()
        });
        let (ctx, _api) = Context::test_with_users(vec![shown, user("ns", "pending")]);
        for name in ["shown", "pending", "gone"] {
            ctx.recent_identities.wrote(
                "ns",
                name,
                Some("5"),
                (format!("uid-{name}"), CommunicationUserStatus::default()),
            );
        }
        prune_recent_identities(&ctx);
        assert!(ctx.recent_identities.contains("ns", "pending"));
        assert_eq!(ctx.recent_identities.len(), 1);
    }
}
