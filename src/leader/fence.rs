//! The write fence on the operator's Kubernetes client: a tower layer that answers every
//! request other than a read (GET, HEAD) with a local error, without sending it, while the
//! [`LeaderGate`] says leadership is not valid. The election's own Lease is exempt: renewing,
//! taking over and releasing it are how leadership is won and kept, and each of those writes
//! carries the `resourceVersion` it read, so a stale one fails at the apiserver anyway.

use std::future::Future;
use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};
use futures::TryFutureExt;
use http::{Method, Request};
use tower::{BoxError, Layer, Service};

use super::LeaderGate;

/// The error a fenced request fails with (inside `kube::Error::Service`). It names no object.
#[derive(Debug, thiserror::Error)]
#[error("write refused without sending it: this replica's leadership is not valid")]
pub struct NotLeader;

/// Wraps a client's service in [`Fence`].
#[derive(Clone, Debug)]
pub struct FenceLayer {
    gate: LeaderGate,
    /// `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases`: the collection (create) and,
    /// followed by `/<name>`, the Lease itself.
    leases: String,
    lease_name: String,
}

impl FenceLayer {
    /// Fences writes on `gate`, except those to the Lease `namespace/lease_name`.
    pub fn new(gate: LeaderGate, namespace: &str, lease_name: &str) -> Self {
        Self {
            gate,
            leases: format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"),
            lease_name: lease_name.to_string(),
        }
    }

    /// Whether `path` is the election's Lease or its collection.
    fn is_lease(&self, path: &str) -> bool {
        match path.strip_prefix(self.leases.as_str()) {
            Some("") => true,
            Some(rest) => rest.strip_prefix('/') == Some(self.lease_name.as_str()),
            None => false,
        }
    }

    /// Whether a request may go out now.
    fn admits(&self, method: &Method, path: &str) -> bool {
        matches!(*method, Method::GET | Method::HEAD)
            || self.is_lease(path)
            || self.gate.admit("kubernetes")
    }
}

impl<S> Layer<S> for FenceLayer {
    type Service = Fence<S>;

    fn layer(&self, inner: S) -> Fence<S> {
        Fence {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fence<S> {
    inner: S,
    layer: FenceLayer,
}

type Refused<T> = Ready<Result<T, BoxError>>;
type Passed<F, E> = futures::future::MapErr<F, fn(E) -> BoxError>;

impl<S, B> Service<Request<B>> for Fence<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Future<Output = Result<S::Response, S::Error>>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<Refused<S::Response>, Passed<S::Future, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.layer.admits(req.method(), req.uri().path()) {
            let into: fn(S::Error) -> BoxError = Into::into;
            Either::Right(self.inner.call(req).map_err(into))
        } else {
            Either::Left(ready(Err(Box::new(NotLeader))))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    /// The wire: counts the requests that reach it.
    #[derive(Clone, Default)]
    struct Wire(Arc<AtomicUsize>);

    impl Service<Request<()>> for Wire {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = Ready<Result<(), std::convert::Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            ready(Ok(()))
        }
    }

    fn counting() -> (Arc<AtomicUsize>, Wire) {
        let wire = Wire::default();
        (wire.0.clone(), wire)
    }

    async fn send<S>(svc: &mut S, method: Method, uri: &str) -> Result<(), BoxError>
    where
        S: Service<Request<()>, Response = (), Error = BoxError>,
    {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        svc.ready().await?.call(req).await
    }

    #[tokio::test(start_paused = true)]
    async fn without_valid_leadership_only_reads_and_the_lease_go_out() {
        let gate = LeaderGate::closed();
        let (sent, inner) = counting();
        let mut svc = FenceLayer::new(gate.clone(), "ops", "acs").layer(inner);
        let writes = [
            (Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events"),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/secrets/s?fieldManager=x",
            ),
            (
                Method::PUT,
                "/apis/communication.acs.dev/v1alpha1/namespaces/a/communicationusers/u",
            ),
            (Method::DELETE, "/api/v1/namespaces/a/secrets/s"),
            // Another Lease, or ours in another namespace, is an ordinary write.
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/other",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/acs",
            ),
        ];
        for (m, u) in writes.clone() {
            let err = send(&mut svc, m.clone(), u).await.unwrap_err();
            assert!(err.is::<NotLeader>(), "{m} {u}: {err}");
        }
        assert_eq!(
            sent.load(Ordering::SeqCst),
            0,
            "a fenced write reached the wire"
        );
        assert!(*gate.refusals().borrow());

        for (m, u) in [
            (Method::GET, "/api/v1/namespaces/a/secrets/s"),
            (Method::GET, "/api/v1/secrets?watch=true"),
            (Method::PUT, &format!("{LEASES}/acs")[..]),
            (Method::POST, LEASES),
        ] {
            send(&mut svc, m.clone(), u).await.unwrap();
        }
        assert_eq!(sent.load(Ordering::SeqCst), 4);

        // While leadership is valid, writes pass; past the deadline they are fenced again.
        gate.renewed(tokio::time::Instant::now(), Duration::from_secs(2));
        for (m, u) in writes.clone() {
            send(&mut svc, m, u).await.unwrap();
        }
        assert_eq!(sent.load(Ordering::SeqCst), 4 + writes.len());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            send(&mut svc, Method::PATCH, "/api/v1/namespaces/a/secrets/s")
                .await
                .is_err()
        );
        assert_eq!(sent.load(Ordering::SeqCst), 4 + writes.len());
    }

    #[tokio::test]
    async fn an_open_gate_fences_nothing() {
        let (sent, inner) = counting();
        let mut svc = FenceLayer::new(LeaderGate::always_open(), "ops", "acs").layer(inner);
        send(&mut svc, Method::DELETE, "/api/v1/namespaces/a/secrets/s")
            .await
            .unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }
}
