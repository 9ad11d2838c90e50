//! The CommunicationToken controller's wiring: its watches, what wakes a token (its user, its
//! credentials, its Secret) and its lanes.

use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use super::{error_policy, reconcile};
use crate::api::{self, CommunicationToken, CommunicationUser};
use crate::controller::lanes::{express, in_lane, Laned, Lanes};
use crate::controller::Context;

/// Builds the CommunicationToken controller for one watched scope.
pub fn controller(
    ctx: Arc<Context>,
    scope: Option<String>,
    tokens: impl Stream<Item = Arc<CommunicationToken>> + Send + 'static,
    users: impl Stream<Item = Arc<CommunicationUser>> + Send + 'static,
    creds: impl Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static,
    default_changed: impl Stream<Item = ObjectRef<CommunicationToken>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send {
    let reader: Store<CommunicationToken> = match ctx.tokens.store_for_scope(scope.as_deref()) {
        Some(s) => s,
        None => unreachable!("a store exists for every scope"),
    };
    let owned = owned_secrets(&ctx, scope.clone());
    let by_user = ctx.clone();
    let by_secret = ctx.clone();
    let lanes = Lanes::new(ctx.config.concurrency.into());
    let (offers, express) = express::express(lanes.clone(), ctx.clone(), reconcile, error_policy);
    let (user_offers, secret_offers) = (offers.clone(), offers.clone());
    // Only changes a reconcile must act on: its own status writes never wake it (see
    // `triggers`), so a failing object's back-off holds.
    let controller = Controller::for_shared_stream(
        crate::controller::triggers::meaningful_changes(
            tokens,
            {
                let live = reader.clone();
                move || live.state()
            },
            &ctx.change_filters,
            "token_changes",
        )
        .inspect(move |t| offers.offer(t.as_ref())),
        reader,
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
    .owns_stream(owned)
    // A user's epoch moving (or its identity appearing) wakes all of its tokens.
    .watches_shared_stream(users, move |u: Arc<CommunicationUser>| {
        // A user being set up (no identity, no verdict) gives its tokens nothing to do
        // but wait; its first status (an identity, or why not), or its deletion, wakes
        // them.
        if u.identity_id().is_none()
            && u.status.is_none()
            && u.metadata.deletion_timestamp.is_none()
        {
            return Vec::new();
        }
        let ns = u.namespace().unwrap_or_default();
        let name = u.name_any();
        by_user
            .tokens_of_user(&ns, &name, |_| true)
            .into_iter()
            .inspect(|t| user_offers.offer(t.as_ref()))
            .map(|t| ObjectRef::from_obj(t.as_ref()))
            .collect::<Vec<_>>()
    })
    // New or rotated credentials wake exactly the tokens whose user resolves to them (key
    // rotation), in every namespace for the operator-wide default; any other Secret of
    // the namespace wakes none.
    .watches_shared_stream(creds, move |s: Arc<PartialObjectMeta<Secret>>| {
        let ns = s.namespace().unwrap_or_default();
        let name = s.name_any();
        // The default Secret's users may be served by other controllers (one per watched
        // namespace): signal them all, users and tokens, through `default_changed`.
        if crate::controller::wakeups::is_default_secret(&by_secret, &ns, &name) {
            let _ = by_secret.default_changed.send(());
            return Vec::new();
        }
        let woken = tokens_of_users(
            &by_secret,
            crate::controller::wakeups::users_using_secret(&by_secret, &ns, &name),
        );
        woken.iter().for_each(|t| secret_offers.offer_ref(t));
        woken
    })
    // The unwatched default credentials changed (polled).
    .reconcile_on(default_changed)
    .graceful_shutdown_on(lanes.closing_on(shutdown))
    .run(
        move |t, ctx| in_lane(lanes.clone(), t, ctx, |t, ctx| Box::pin(reconcile(t, ctx))),
        error_policy,
        ctx,
    )
    .for_each(|r| {
        if let Err(e) = r {
            tracing::debug!(error = %e, "token reconcile trigger error");
        }
        futures::future::ready(())
    });
    // The express path ends with the controller (its offers live in the controller's streams).
    futures::future::join(controller, express).map(|_| ())
}

/// The token Secrets of `scope` (only ours, only their metadata): a deletion or an edit (a new
/// resourceVersion) wakes the owner, which then reads that one Secret. Every event also keeps
/// [`Context::own_writes`] in step with what the Secrets' watch shows.
fn owned_secrets(
    ctx: &Arc<Context>,
    scope: Option<String>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    let secrets_api: Api<PartialObjectMeta<Secret>> = match &scope {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    watcher(
        secrets_api,
        watcher::Config::default().labels(&format!(
            "{}={}",
            api::MANAGED_BY_LABEL,
            api::MANAGED_BY
        )),
    )
    .default_backoff()
    .inspect({
        let ctx = ctx.clone();
        let mut tracker = ctx.watches.track("Secret/tokens");
        let mut relist = crate::relist::Relist::default();
        let scope = scope.clone();
        move |item| {
            tracker.observe(item);
            let Ok(event) = item else { return };
            let note = |s: &PartialObjectMeta<Secret>, rv: Option<&str>| {
                ctx.own_writes.observed(
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default(),
                    rv,
                )
            };
            match event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                    note(s, s.metadata.resource_version.as_deref())
                }
                watcher::Event::Delete(s) => note(s, None),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            // Secrets deleted while the watch was down get no deletion event.
            if let Some(listed) = relist.on_event(event) {
                ctx.own_writes.retain_listed(scope.as_deref(), &listed);
                ctx.own_writes.mark_listed(scope.as_deref());
            }
        }
    })
    .touched_objects()
}

/// The tokens of these users.
pub fn tokens_of_users(
    ctx: &Context,
    users: Vec<ObjectRef<CommunicationUser>>,
) -> Vec<ObjectRef<CommunicationToken>> {
    users
        .into_iter()
        .flat_map(|u| {
            let ns = u.namespace.clone().unwrap_or_default();
            ctx.tokens_of_user(&ns, &u.name, |_| true)
                .into_iter()
                .map(|t| ObjectRef::from_obj(t.as_ref()))
        })
        .collect()
}

impl Laned for CommunicationToken {
    const FINALIZER: &'static str = crate::api::TOKEN_FINALIZER;

    fn has_status(&self, ctx: &Context) -> bool {
        self.status.is_some()
            || ctx
                .token_status
                .fresher(
                    &self.namespace().unwrap_or_default(),
                    &self.name_any(),
                    self.metadata.resource_version.as_deref(),
                )
                .is_some()
    }

    fn cached(ctx: &Context, ns: &str, name: &str) -> Option<Arc<Self>> {
        ctx.tokens.get(ns, name)
    }
}
