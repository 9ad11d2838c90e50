//! The HTTP/1.1 server: accept loop (plain or TLS), one hyper connection per socket, graceful
//! stop, and the per-request pipeline of the Identity API (faults, body, authentication by HMAC
//! or Entra bearer token, routing errors, rate limits, dispatch, common response headers).
//! Admin and Entra stand-in requests branch off before that pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::api_version;
use super::auth::{self, Caller, Presented};
use super::body::{self, BodyError};
use super::context::Shared;
use super::entra;
use super::faults::Injected;
use super::handlers;
use super::legacy;
use super::limits::retry_after_seconds;
use super::response::{self, ApiError, Resp};
use super::routes::{self, Operation, RouteError, Routed};

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may run on after a stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct Dropped;

/// Controls the background accept loop.
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Asks the server to stop without waiting.
    pub fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops accepting and waits (bounded) for open connections to finish.
    pub async fn stop(self) {
        self.signal_stop();
        let _ = self.task.await;
    }
}

/// Starts serving `listener` in the background.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
) -> ServerHandle {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        tls.map(TlsAcceptor::from),
        shared,
        stop_rx,
    ));
    ServerHandle { stop, task }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(connection(stream, peer, tls.clone(), shared.clone(), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
}

/// Resolves once a stop was signalled (or the handle is gone). The borrow guard of `wait_for`
/// is dropped here, so it never lives across an await of the caller.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_io(TokioIo::new(tls_stream), peer, shared, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        }
        None => serve_io(TokioIo::new(stream), peer, shared, stop).await,
    }
}

async fn serve_io<I>(io: I, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(shared.clone(), peer, req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Dropped> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
    let (raw_path, _) = routes::split_target(&target);
    if raw_path == "/_emulator" || raw_path.starts_with("/_emulator/") {
        return Ok(super::admin::handle(&shared, peer, req).await);
    }
    if let Some(path) = entra::classify(raw_path) {
        let (_, raw_query) = routes::split_target(&target);
        let (parts, body) = req.into_parts();
        let body = match body::read(body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return Ok(body::too_large()),
            Err(BodyError::Unreadable) => return Err(Dropped),
        };
        return Ok(entra::handle(
            &shared,
            path,
            &parts.method,
            raw_query,
            &parts.headers,
            &body,
        )
        .await);
    }
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let routed = routes::resolve(&method, &target);
    let op = routed.as_ref().ok().map(|r| r.op);
    let about = routed.as_ref().ok().and_then(|r| r.id.clone());
    let op_name = op.map_or("unrouted", Operation::as_str);
    let request_id = req.headers().get("x-ms-client-request-id").cloned();
    let plan = shared.faults.plan(op, about.as_deref());
    if !plan.latency.is_zero() {
        shared.stats.record_injected("latency");
        tokio::time::sleep(plan.latency).await;
    }
    let resp = match plan.before {
        Some(Injected::Drop) => {
            shared.stats.record_injected("drop");
            shared.stats.record_dropped();
            return Err(Dropped);
        }
        Some(Injected::Status(code)) => {
            shared.stats.record_injected(match code {
                429 => "429",
                500 => "500",
                _ => "503",
            });
            injected(code, plan.retry_after_seconds)
        }
        None => {
            let (parts, body) = req.into_parts();
            let body = match body::read(body).await {
                Ok(body) => body,
                Err(BodyError::TooLarge) => {
                    let r = body::too_large();
                    shared.stats.record(op_name, r.status().as_u16());
                    return Ok(finish(r, request_id));
                }
                Err(BodyError::Unreadable) => return Err(Dropped),
            };
            let req = auth::Request {
                method: &method,
                target: &target,
                headers: &parts.headers,
                body: &body,
            };
            respond(&shared, &req, routed, &body)
        }
    };
    let status = resp.status().as_u16();
    shared.stats.record(op_name, status);
    tracing::debug!(
        op = op_name,
        status,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    if plan.drop_after {
        shared.stats.record_injected("dropAfter");
        shared.stats.record_dropped();
        return Err(Dropped);
    }
    Ok(finish(resp, request_id))
}

/// Authenticates and authorizes first (as the gateway does), then reports routing errors, then
/// rate limits.
fn respond(
    shared: &Shared,
    req: &auth::Request<'_>,
    routed: Result<Routed, RouteError>,
    body: &Bytes,
) -> Resp {
    let caller = match authenticate(shared, req) {
        Ok(caller) => caller,
        Err(None) => return response::denied(),
        Err(Some(refusal)) => return refusal.into_response(),
    };
    let routed = match routed {
        Ok(r) => r,
        Err(e) => return route_error(e, routes::split_target(req.target).0),
    };
    if let Some(class) = routed.op.limit_class() {
        if let Err(wait) = shared.limiter.admit(class, Instant::now()) {
            shared.stats.record_throttled();
            return response::throttled(retry_after_seconds(wait));
        }
    }
    dispatch(shared, &routed, caller, body)
}

/// HMAC with an access key, or an Entra bearer token whose principal holds a data-plane role;
/// never both at once. `Err(None)` is a failed HMAC or mixed request (401 `Denied`),
/// `Err(Some(_))` the bearer gate's refusal (401, or 403 for a principal without a role).
fn authenticate(
    shared: &Shared,
    req: &auth::Request<'_>,
) -> Result<Caller, Option<entra::bearer::Refusal>> {
    match auth::presented(req.headers) {
        Presented::Mixed => {
            shared.stats.record_entra_bearer("unauthenticated");
            tracing::debug!("request denied: it presents both HMAC and bearer credentials");
            Err(None)
        }
        Presented::Bearer(token) => entra::bearer::check(shared, token)
            .map(|()| Caller::Entra)
            .map_err(Some),
        Presented::Hmac => {
            let keys = shared.lock_store().signing_keys();
            auth::authenticate(req, &keys, SystemTime::now(), shared.clock_skew)
                .map(Caller::Key)
                .map_err(|reason| {
                    tracing::debug!(%reason, "request denied");
                    None
                })
        }
    }
}

fn route_error(e: RouteError, raw_path: &str) -> Resp {
    match e {
        RouteError::NotFound => response::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested resource was not found.",
            None,
        ),
        RouteError::MethodNotAllowed(allow) => {
            let mut r = response::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested method is not allowed for this resource.",
                None,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        RouteError::MissingApiVersion => response::error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
            None,
        ),
        RouteError::UnsupportedApiVersion(v) => response::error(
            StatusCode::BAD_REQUEST,
            "UnsupportedApiVersion",
            &format!(
                "The HTTP resource that matches the request URI '{raw_path}' does not support the API version '{v}'."
            ),
            None,
        ),
    }
}

fn injected(code: u16, retry_after: u64) -> Resp {
    match code {
        429 => response::throttled(retry_after),
        503 => response::retry_after(
            response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable (injected by the emulator).",
                None,
            ),
            retry_after,
        ),
        _ => response::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "An internal error occurred (injected by the emulator).",
            None,
        ),
    }
}

/// Adds the headers the service sends on every Identity response.
fn finish(mut r: Resp, request_id: Option<HeaderValue>) -> Resp {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&api_version::supported_header()) {
        h.insert("api-supported-versions", v);
    }
    let mut cv = [0u8; 16];
    rand::rng().fill_bytes(&mut cv);
    if let Ok(v) = HeaderValue::from_str(&format!("{}.0", STANDARD_NO_PAD.encode(cv))) {
        h.insert("ms-cv", v);
    }
    if let Some(id) = request_id {
        h.insert("x-ms-client-request-id", id);
    }
    r
}

/// Runs one authenticated, routed, admitted request.
fn dispatch(shared: &Shared, routed: &Routed, slot: Caller, body: &[u8]) -> Resp {
    let id = routed.id.as_deref().unwrap_or_default();
    let v = routed.version;
    let result = match routed.op {
        Operation::CreateIdentity => handlers::create(shared, v, slot, body),
        Operation::IssueAccessToken => handlers::issue(shared, v, id, slot, body),
        Operation::RevokeAccessTokens => handlers::revoke(shared, id),
        Operation::DeleteIdentity | Operation::LegacyDeleteIdentity => handlers::delete(shared, id),
        Operation::GetIdentity => handlers::get(shared, id),
        Operation::ExchangeTeamsUserAccessToken => handlers::exchange(body),
        Operation::LegacyCreateIdentity => legacy::create(shared),
        Operation::LegacyIssueToken => legacy::issue(shared, id, slot, body),
        Operation::LegacyRevokeTokens => legacy::revoke(shared, id, body),
    };
    result.unwrap_or_else(ApiError::into_response)
}
