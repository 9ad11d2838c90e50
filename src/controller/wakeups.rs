//! Relations between watches, shared by the controllers: which users a credentials Secret or
//! a signal (the unwatched default credentials changed) concerns, and the keys and references
//! of the service kinds.

use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;

use kube::runtime::reflector::ObjectRef;

use super::Context;
use crate::api::{
    self, ClusterCommunicationService, CommunicationService, CommunicationUser, ServiceKey,
    ServiceKind,
};

/// A stream of the signals sent on `rx` (a lagging receiver still yields once).
pub fn signals(
    rx: tokio::sync::broadcast::Receiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// Wake-ups of one controller's objects when the unwatched default credentials change, or a
/// namespace's opt-in to a default flips: the users resolving to them (or, through `map`,
/// their tokens), within `scope`.
pub(super) fn default_wakeups<K, F>(
    ctx: &Arc<Context>,
    scope: &Option<String>,
    rx: tokio::sync::broadcast::Receiver<()>,
    map: F,
) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
    F: Fn(
            &Context,
            Vec<kube::runtime::reflector::ObjectRef<CommunicationUser>>,
        ) -> Vec<kube::runtime::reflector::ObjectRef<K>>
        + Send
        + Sync
        + 'static,
{
    let ctx = ctx.clone();
    let scope = scope.clone();
    signals(rx).flat_map(move |()| {
        // Either default: the connection string's, or the operator's own workload identity's
        // (`--default-credentials-endpoint`), whose opt-in the namespaces' label watch follows.
        let any_default = ctx.config.default_credentials.is_some()
            || ctx.config.default_workload_identity.is_some();
        let refs = if any_default {
            map(&ctx, users_on_default(&ctx))
        } else {
            Vec::new()
        };
        let scope = scope.clone();
        futures::stream::iter(
            refs.into_iter()
                .filter(move |r| scope.is_none() || r.namespace == scope),
        )
    })
}

pub(super) fn namespaced_service_key(s: &CommunicationService) -> Option<ServiceKey> {
    Some(ServiceKey {
        kind: ServiceKind::CommunicationService,
        namespace: s.metadata.namespace.clone(),
        name: s.metadata.name.clone()?,
    })
}

pub(super) fn cluster_service_key(s: &ClusterCommunicationService) -> Option<ServiceKey> {
    Some(ServiceKey {
        kind: ServiceKind::ClusterCommunicationService,
        namespace: None,
        name: s.metadata.name.clone()?,
    })
}

pub(super) fn namespaced_service_ref(
    k: &ServiceKey,
) -> Option<kube::runtime::reflector::ObjectRef<CommunicationService>> {
    match (k.kind, &k.namespace) {
        (ServiceKind::CommunicationService, Some(ns)) => {
            Some(kube::runtime::reflector::ObjectRef::new(&k.name).within(ns))
        }
        _ => None,
    }
}

pub(super) fn cluster_service_ref(
    k: &ServiceKey,
) -> Option<kube::runtime::reflector::ObjectRef<ClusterCommunicationService>> {
    (k.kind == ServiceKind::ClusterCommunicationService)
        .then(|| kube::runtime::reflector::ObjectRef::new(&k.name))
}

/// True when Secret `ns/name` is the operator-wide default credentials.
pub fn is_default_secret(ctx: &Context, ns: &str, name: &str) -> bool {
    ctx.config
        .default_credentials
        .as_ref()
        .is_some_and(|d| d.namespace == ns && d.name == name)
}

/// The users of namespace `ns` whose credentials resolve to its Secret `name`: those naming
/// it, and those using the namespace's `acs-credentials`. The operator-wide default Secret
/// is routed by [`users_on_default`] instead (its users live in other namespaces, which
/// other controllers may serve).
pub fn users_using_secret(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<CommunicationUser>> {
    ctx.users
        .in_namespace_where(ns, |u| match &u.spec.credentials {
            _ if u.spec.service_ref.is_some() => false,
            Some(c) => c.secret_name.as_deref() == Some(name),
            None => name == api::DEFAULT_CREDENTIALS_SECRET,
        })
        .iter()
        .map(|u| ObjectRef::from_obj(u.as_ref()))
        .collect()
}

/// The users that resolve to the operator-wide default credentials: no reference and no
/// `acs-credentials` of their own namespace.
pub fn users_on_default(ctx: &Context) -> Vec<ObjectRef<CommunicationUser>> {
    ctx.users
        .all_where(|u| {
            let uns = u.metadata.namespace.as_deref().unwrap_or_default();
            u.spec.credentials.is_none()
                && u.spec.service_ref.is_none()
                && ctx
                    .credentials
                    .secret_meta(uns, api::DEFAULT_CREDENTIALS_SECRET)
                    .is_none()
        })
        .iter()
        .map(|u| ObjectRef::from_obj(u.as_ref()))
        .collect()
}
