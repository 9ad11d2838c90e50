//! The operator's own HTTP endpoint: `/metrics` for Prometheus, `/healthz` for liveness and
//! `/readyz` for readiness (false until the controllers' caches have synced, and while a watch
//! fails).
//!
//! Plain hyper over HTTP/1.1 is enough here: three fixed routes, scraped by Prometheus and probed
//! by the kubelet, both of which speak HTTP/1.1.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::{Metrics, CONTENT_TYPE};

/// How long open connections get to finish their current request once shutdown begins. Probes
/// and scrapes are tiny, so this only bounds a stuck client.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the operator is ready to serve; shared between the controllers (which set it once
/// their caches have synced), their watches (one failing or ended makes the operator not
/// ready: its caches are stale) and `/readyz`. Starts not ready.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<ReadinessInner>);

#[derive(Default, Debug)]
struct ReadinessInner {
    synced: AtomicBool,
    watches: Mutex<Vec<Arc<WatchState>>>,
}

/// How long after its last error a watch counts as recovered even without an event: a watch
/// that restarts from a known resourceVersion delivers nothing until something changes, and a
/// watch still failing errs again within its back-off's longest step (30 s).
pub const QUIET_RECOVERY: Duration = Duration::from_secs(60);

/// What `/readyz` knows of one watch.
#[derive(Default, Debug)]
pub struct WatchState {
    last_error: Mutex<Option<Instant>>,
    ended: AtomicBool,
}

impl WatchState {
    /// The watch failed at `at`.
    pub fn failed(&self, at: Instant) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    /// The watch delivered an event; returns whether it was failing.
    pub fn delivered(&self) -> bool {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
    }

    /// The watch's task ended.
    pub fn ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    fn failing(&self, now: Instant) -> bool {
        self.ended.load(Ordering::SeqCst)
            || self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|at| now.saturating_duration_since(at) < QUIET_RECOVERY)
    }
}

impl Readiness {
    /// Marks the caches synced (or the operator stopping).
    pub fn set_ready(&self, ready: bool) {
        self.0.synced.store(ready, Ordering::SeqCst);
    }

    /// A new watch to follow.
    pub fn watch(&self) -> Arc<WatchState> {
        let w = Arc::new(WatchState::default());
        self.0
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(w.clone());
        w
    }

    /// Watches failing now (an error within [`QUIET_RECOVERY`] and no event since) or ended.
    pub fn failing_watches(&self, now: Instant) -> usize {
        self.0
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|w| w.failing(now))
            .count()
    }

    /// Whether the operator is ready: caches synced and every watch healthy.
    pub fn is_ready(&self) -> bool {
        self.0.synced.load(Ordering::SeqCst) && self.failing_watches(Instant::now()) == 0
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the bound address plus the serving
/// future. The future accepts connections until `shutdown` completes, then lets open
/// connections finish their current request (at most [`DRAIN_TIMEOUT`]) and ends.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>> + Send)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serve = serve(listener, metrics, readiness, shutdown);
    Ok((local, serve))
}

async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    // Accept errors (a reset connection, too many open files) concern one
                    // connection or are temporary; the endpoint must stay up for probes.
                    Err(error) => {
                        tracing::warn!(%error, "failed to accept a connection");
                        continue;
                    }
                };
                let metrics = metrics.clone();
                let readiness = readiness.clone();
                let stop = stop_rx.clone();
                connections.spawn(serve_connection(stream, metrics, readiness, stop));
            }
            // Reap finished connections so the set does not grow with every scrape.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Receivers only wake on a change, and every connection holds one; a send error means no
    // connection is left to tell.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("closing connections that did not finish in time");
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = route(&request, &metrics, &readiness);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The guard `wait_for` returns is not Send; drop it before awaiting the connection.
        _ = async { stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
            // Finish the request in progress, then close instead of keeping the connection alive.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "metrics connection ended with an error");
    }
}

/// Answers one request. Pure apart from reading the metrics and the readiness flag.
fn route(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    route_parts(request.method(), request.uri(), metrics, readiness)
}

/// `/metrics?objects=false` leaves out the per-object series.
fn with_objects(query: Option<&str>) -> bool {
    !query.is_some_and(|q| q.split('&').any(|kv| kv == "objects=false"))
}

fn route_parts(
    method: &Method,
    uri: &hyper::Uri,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let path = uri.path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            // Computed at scrape time, so the gauge cannot lag a watch's recovery.
            metrics
                .runtime
                .set_watches_failing(readiness.failing_watches(Instant::now()));
            let mut response = Response::new(Full::new(Bytes::from(
                metrics.encode_with(with_objects(uri.query())),
            )));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            response
        }
        "/readyz" if !readiness.is_ready() => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        _ => text(StatusCode::OK, "ok"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    struct Running {
        base: String,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
        client: reqwest::Client,
    }

    async fn start(metrics: Arc<Metrics>, readiness: Readiness) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (addr, serving) = bind("127.0.0.1:0".parse().unwrap(), metrics, readiness, shutdown)
            .await
            .unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Running {
            base: format!("http://{addr}"),
            stop,
            task: tokio::spawn(serving),
            client,
        }
    }

    async fn get(r: &Running, path: &str) -> (u16, String, String) {
        let response = r
            .client
            .get(format!("{}{path}", r.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, response.text().await.unwrap())
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_openmetrics_text() {
        let metrics = Arc::new(Metrics::new());
        metrics.identity_created();
        let r = start(metrics, Readiness::default()).await;
        let (status, content_type, body) = get(&r, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(
            body.contains("acs_identity_operator_identities_created_total 1"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (status, _, lean) = get(&r, "/metrics?objects=false").await;
        assert_eq!(status, 200);
        assert!(lean.contains("identities_created_total 1"), "{lean}");
        assert!(!with_objects(Some("a=b&objects=false")));
        assert!(with_objects(Some("objects=true")) && with_objects(None));
    }

    #[tokio::test]
    async fn healthz_is_ok_and_unknown_paths_are_not_found() {
        let r = start(Arc::new(Metrics::new()), Readiness::default()).await;
        let (status, _, body) = get(&r, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, _, _) = get(&r, "/").await;
        assert_eq!(status, 404);
        let (status, _, _) = get(&r, "/metrics/extra").await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn readyz_follows_the_readiness_flag() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready());
        let r = start(Arc::new(Metrics::new()), readiness.clone()).await;
        let (status, _, body) = get(&r, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready"));
        readiness.set_ready(true);
        let (status, _, body) = get(&r, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        readiness.set_ready(false);
        let (status, _, _) = get(&r, "/readyz").await;
        assert_eq!(status, 503);
    }

    #[tokio::test]
    async fn writes_to_known_paths_are_not_allowed() {
        let r = start(Arc::new(Metrics::new()), Readiness::default()).await;
        let response = r
            .client
            .post(format!("{}/metrics", r.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn shutdown_ends_the_serving_future_even_with_an_open_connection() {
        let r = start(Arc::new(Metrics::new()), Readiness::default()).await;
        // A keep-alive connection stays open in the client's pool after this request.
        let (status, _, _) = get(&r, "/healthz").await;
        assert_eq!(status, 200);
        assert!(!r.task.is_finished());
        r.stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), r.task)
            .await
            .expect("server did not stop after shutdown")
            .unwrap();
        assert!(result.is_ok());
        // The listener is closed: a new connection is refused.
        let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
        assert!(fresh
            .get(format!("{}/healthz", r.base))
            .send()
            .await
            .is_err());
    }
}
