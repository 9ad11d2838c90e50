//! What both reconcilers wrap around their work: the object's finalizer, the reconcile's
//! timing, and the first step of their error policies (a finalizer step that met a lagging
//! copy of the object is no failure; any other error is counted).

use std::future::Future;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event};
use kube::{Resource, ResourceExt};

use super::{finalizer_lagged, Context};

/// A reconciler's error, as the shared wrapper needs it.
pub trait ReconcileError: std::error::Error + Send + Sync + Sized + 'static {
    /// The object has no namespace or name.
    fn unnamed() -> Self;
    fn finalizer(e: FinalizerError<Self>) -> Self;
    fn as_finalizer(&self) -> Option<&FinalizerError<Self>>;
    /// Bounded label for metrics.
    fn category(&self) -> &'static str;
}

/// Implements [`ReconcileError`] for a reconciler's `Error` with `Unnamed` and
/// `Finalizer(Box<finalizer::Error<Error>>)` variants and a `category` method.
macro_rules! reconcile_error {
    ($error:ident) => {
        impl $crate::controller::finalized::ReconcileError for $error {
            fn unnamed() -> Self {
                $error::Unnamed
            }
            fn finalizer(e: kube::runtime::finalizer::Error<Self>) -> Self {
                $error::Finalizer(Box::new(e))
            }
            fn as_finalizer(&self) -> Option<&kube::runtime::finalizer::Error<Self>> {
                match self {
                    $error::Finalizer(e) => Some(e),
                    _ => None,
                }
            }
            fn category(&self) -> &'static str {
                $error::category(self)
            }
        }
    };
}
pub(crate) use reconcile_error;

/// One reconcile of `obj` under the finalizer `name`: `apply` while it lives, `cleanup` once
/// it is being deleted; timed and counted as `controller`'s.
pub async fn reconcile<K, E, A, AF, C, CF>(
    ctx: &Context,
    controller: &'static str,
    name: &str,
    obj: Arc<K>,
    (apply, cleanup): (A, C),
) -> Result<Action, E>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    E: ReconcileError,
    A: FnOnce(Arc<K>) -> AF,
    AF: Future<Output = Result<Action, E>>,
    C: FnOnce(Arc<K>) -> CF,
    CF: Future<Output = Result<Action, E>>,
{
    let timer = ctx.metrics.reconcile(controller);
    let ns = obj.namespace().ok_or_else(E::unnamed)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, name, obj, |event| async move {
        match event {
            Event::Apply(o) => apply(o).await,
            Event::Cleanup(o) => cleanup(o).await,
        }
    })
    .await
    .map_err(E::finalizer);
    timer.finish(if result.is_ok() { "ok" } else { "error" });
    result
}

/// The first step of an error policy: `Some` when the error is no failure (a finalizer step
/// that met a lagging copy: wait for the next change), else the error is counted and `None`.
pub fn not_a_failure<K, E>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    err: &E,
) -> Option<Action>
where
    K: Resource<DynamicType = ()>,
    E: ReconcileError,
{
    if err
        .as_finalizer()
        .is_some_and(|e| finalizer_lagged(ctx, obj, e))
    {
        return Some(Action::await_change());
    }
    ctx.metrics.reconcile_error(controller, err.category());
    None
}
