//! Typed calls to the ACS Identity API: each attempt waits for the shared rate limiter, is
//! signed over the exact bytes it sends, and is retried per [`crate::retry`].
//!
//! CONTRACT (shared with the operator and tests; keep these names):
//! - `ClientOptions { api_mode: ApiMode, ca_pem: Option<Vec<u8>>, request_timeout, max_retries,
//!   ... }` with `Default`.
//! - `AcsClient::new(ConnectionString, ClientOptions) -> Result<AcsClient, AcsError>`.
//! - `create_identity(CreateIdentity { external_id: Option<String>, token: Option<(Vec<Scope>,
//!   Option<u32>)> }) -> Result<CreatedIdentity, AcsError>` (`created: bool` is false when a
//!   preview get-or-create found an existing identity),
//!   `issue_token(id, &[Scope], Option<u32>) -> Result<AccessToken, AcsError>`,
//!   `revoke_tokens(id)`, `delete_identity(id)`, `get_identity(id) -> Result<Identity, AcsError>`.
//! - `AcsClient::endpoint()`, `AcsClient::resource_host()`.

use std::fmt;
use std::time::{Instant, SystemTime};

use http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use reqwest::Url;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use std::sync::Arc;

use crate::bearer::BearerSource;
use crate::connection::ConnectionString;
use crate::error::{AcsError, DecodeError, ErrorChain};
use crate::models::{AccessToken, CreateIdentityResponse, Identity, Scope};
pub use crate::options::{ApiMode, ClientOptions, MutationGate, RequestObserver};
pub use crate::request::CreateIdentity;
use crate::request::{self, Prepared};
use crate::retry::{self, RetryPolicy};

const USER_AGENT: &str = concat!("acs-identity-operator/", env!("CARGO_PKG_VERSION"));

/// Responses larger than this are cut off: ACS bodies are a few hundred bytes, and an
/// unbounded read would let a broken proxy exhaust memory.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The result of `create_identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedIdentity {
    pub identity: Identity,
    pub access_token: Option<AccessToken>,
    /// False only when a preview get-or-create answered 200 for an existing identity.
    pub created: bool,
}

/// ACS Identity client. Cheap to clone; clones share connections, limiter and observer.
#[derive(Clone)]
pub struct AcsClient {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    auth: Auth,
    options: ClientOptions,
    policy: RetryPolicy,
    /// The endpoint is `http://`.
    plain_http: bool,
}

mod auth;
use auth::{Auth, Authorization};

impl fmt::Debug for AcsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcsClient")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field("options", &self.options)
            .finish()
    }
}

/// A response with a success status and its (bounded) body.
struct Success {
    status: u16,
    body: Vec<u8>,
}

impl AcsClient {
    /// Builds a client. The endpoint's scheme is used as written, but an `http://` endpoint
    /// (an emulator started with `--http`) gets every call refused with
    /// [`AcsError::InsecureHttp`] unless `options.allow_insecure_http` is set. The refusal is
    /// per call rather than here, so it reaches the resource's condition like any failed call.
    pub fn new(conn: ConnectionString, options: ClientOptions) -> Result<Self, AcsError> {
        Self::build(&conn.endpoint, Auth::Key(conn.access_key), options)
    }

    /// A client authorized with Microsoft Entra ID bearer tokens from `source` instead of an
    /// access key. `endpoint` is the resource's `https://<resource>.communication.azure.com`.
    pub fn with_bearer(
        endpoint: &str,
        source: Arc<dyn BearerSource>,
        options: ClientOptions,
    ) -> Result<Self, AcsError> {
        Self::build(endpoint, Auth::Bearer(source), options)
    }

    fn build(endpoint: &str, auth: Auth, options: ClientOptions) -> Result<Self, AcsError> {
        let base = Url::parse(endpoint).map_err(|e| AcsError::BuildRequest {
            source: Box::new(e),
        })?;
        let host = wire_host(&base).ok_or_else(|| AcsError::BuildRequest {
            source: "endpoint has no host".into(),
        })?;
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // The signature covers the Host header, which HTTP/2 replaces by `:authority`;
            // HTTP/1.1 is also what the official SDKs speak.
            .http1_only()
            // Every retry decision is ours (see `retry.rs`); a redirect would need a new
            // signature anyway.
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .tls_built_in_root_certs(options.trust_web_roots);
        if let Some(pem) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AcsError::InvalidCaCertificate { source: Some(e) })?;
            if certs.is_empty() {
                return Err(AcsError::InvalidCaCertificate { source: None });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|source| AcsError::BuildClient { source })?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            host,
            auth,
            policy: options.retry_policy(),
            plain_http: base.scheme() == "http",
            options,
        })
    }

    /// The same client (connections, budget, gate and observer shared) without retries of its
    /// own: for a caller that already backs off between attempts (an object that is failing),
    /// so that one attempt costs exactly one request.
    pub fn without_retries(&self) -> AcsClient {
        let mut c = self.clone();
        c.policy.max_retries = 0;
        c
    }

    /// The endpoint without a trailing `/`, e.g. `https://res.communication.azure.com`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The host the requests carry and sign (host plus a non-default port).
    pub fn resource_host(&self) -> &str {
        &self.host
    }

    pub fn api_mode(&self) -> ApiMode {
        self.options.api_mode
    }

    /// Creates an identity, optionally with a token. With `external_id` (preview only) this is
    /// get-or-create: `created` is false when the identity already existed.
    pub async fn create_identity(&self, req: CreateIdentity) -> Result<CreatedIdentity, AcsError> {
        let prepared = request::create(self.options.api_mode, &req)?;
        let ok = self.send(&prepared).await?;
        let body: CreateIdentityResponse = decode(&ok)?;
        Ok(CreatedIdentity {
            identity: body.identity,
            access_token: body.access_token,
            created: ok.status != 200,
        })
    }

    /// Issues a token. `expires_in_minutes` is sent as given (the service accepts 60–1440 and
    /// answers 400 otherwise); `None` means the service default of 24 h.
    pub async fn issue_token(
        &self,
        id: &str,
        scopes: &[Scope],
        expires_in_minutes: Option<u32>,
    ) -> Result<AccessToken, AcsError> {
        let prepared = request::issue_token(self.options.api_mode, id, scopes, expires_in_minutes)?;
        decode(&self.send(&prepared).await?)
    }

    /// Revokes every token of the identity issued so far.
    pub async fn revoke_tokens(&self, id: &str) -> Result<(), AcsError> {
        self.send(&request::revoke_tokens(self.options.api_mode, id))
            .await
            .map(drop)
    }

    /// Deletes the identity and revokes its tokens.
    pub async fn delete_identity(&self, id: &str) -> Result<(), AcsError> {
        self.send(&request::delete_identity(self.options.api_mode, id))
            .await
            .map(drop)
    }

    /// Reads an identity; preview only (the GA surface has no such route).
    pub async fn get_identity(&self, id: &str) -> Result<Identity, AcsError> {
        let prepared = request::get_identity(self.options.api_mode, id)?;
        decode(&self.send(&prepared).await?)
    }

    /// Proves the credentials with one read that changes nothing: `GET` of an identity that
    /// does not exist, on the preview surface whatever the client's mode (the GA surface has
    /// no read). An authenticated caller gets 404 (or 400, or `IdentityNotOwned`); bad
    /// credentials get 401 `Denied` or 403 first. `Ok` when the credentials were accepted.
    pub async fn probe(&self) -> Result<(), AcsError> {
        let prepared = request::get_identity(ApiMode::Preview, PROBE_IDENTITY)?;
        match self.send(&prepared).await {
            Ok(_) => Ok(()),
            Err(e) if accepted_credentials(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends with retries. One client request id covers all attempts so they correlate in
    /// service logs; each attempt is signed afresh because `x-ms-date` must be current.
    async fn send(&self, prepared: &Prepared) -> Result<Success, AcsError> {
        if self.plain_http && !self.options.allow_insecure_http {
            return Err(AcsError::InsecureHttp);
        }
        let url =
            Url::parse(&format!("{}{}", self.endpoint, prepared.path_and_query)).map_err(|e| {
                AcsError::BuildRequest {
                    source: Box::new(e),
                }
            })?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::debug_span!(
            "acs_request",
            operation = prepared.operation,
            client_request_id = %request_id,
        );
        async {
            let mut attempt: u32 = 0;
            loop {
                attempt += 1;
                if let Some(limiter) = &self.options.rate_limiter {
                    limiter.acquire().await;
                }
                // Checked per attempt and after the limiter's wait, as late as possible: a
                // retry or a long queue must not carry an old permission past its end.
                if let Some(gate) = &self.options.mutation_gate {
                    if prepared.method != http::Method::GET && !gate.admit(prepared.operation) {
                        tracing::debug!(attempt, "acs mutation fenced");
                        return Err(AcsError::Fenced {
                            operation: prepared.operation,
                        });
                    }
                }
                tracing::trace!(attempt, "sending acs request");
                // A bearer token is had before the clock starts: its exchange is not an ACS
                // request, and a failure to get one was never sent to ACS (nor observed).
                let auth = match self.authorization(prepared, &url).await {
                    Ok(auth) => auth,
                    Err(err) => {
                        if !self
                            .policy
                            .should_retry(attempt, &err, prepared.idempotency)
                        {
                            tracing::debug!(attempt, error = %err, "no entra token for the acs request");
                            return Err(err);
                        }
                        let delay = self.policy.delay(attempt, &err, rand::random::<f64>());
                        tracing::debug!(attempt, error = %err, delay_ms = delay.as_millis() as u64, "no entra token for the acs request, retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                };
                let bearer = auth.bearer.clone();
                let started = Instant::now();
                let result = self.attempt(prepared, &url, &request_id, auth).await;
                let elapsed = started.elapsed();
                if let (Some(token), Auth::Bearer(source), Err(e)) = (&bearer, &self.auth, &result) {
                    if e.status() == Some(401) {
                        source.rejected(token);
                    }
                }
                let elapsed_ms = elapsed.as_millis() as u64;
                let outcome = match &result {
                    Ok(ok) => ok.status.to_string(),
                    Err(e) => e
                        .status()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.category().to_string()),
                };
                if let Some(observer) = &self.options.observer {
                    observer.observe(prepared.operation, &outcome, elapsed);
                }
                let err = match result {
                    Ok(ok) => {
                        tracing::debug!(
                            attempt,
                            status = ok.status,
                            elapsed_ms,
                            "acs request succeeded"
                        );
                        return Ok(ok);
                    }
                    Err(err) => err,
                };
                if !self
                    .policy
                    .should_retry(attempt, &err, prepared.idempotency)
                {
                    tracing::debug!(
                        attempt,
                        outcome = %outcome,
                        category = err.category(),
                        elapsed_ms,
                        error = %ErrorChain(&err),
                        "acs request failed",
                    );
                    return Err(err);
                }
                let delay = self.policy.delay(attempt, &err, rand::random::<f64>());
                tracing::debug!(
                    attempt,
                    outcome = %outcome,
                    category = err.category(),
                    elapsed_ms,
                    delay_ms = delay.as_millis() as u64,
                    error = %ErrorChain(&err),
                    "acs request failed, retrying",
                );
                tokio::time::sleep(delay).await;
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(
        &self,
        prepared: &Prepared,
        url: &Url,
        request_id: &str,
        auth: Authorization,
    ) -> Result<Success, AcsError> {
        let mut builder = self
            .http
            .request(prepared.method.clone(), url.clone())
            // Set explicitly so the Host sent is, by construction, the Host signed.
            .header(HOST, header_value(&self.host)?)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header("x-ms-client-request-id", header_value(request_id)?)
            .header(
                "x-ms-return-client-request-id",
                HeaderValue::from_static("true"),
            )
            .timeout(self.options.request_timeout)
            .body(prepared.body.clone());
        for (name, value) in auth.headers {
            builder = builder.header(name, value);
        }
        if prepared.method != http::Method::GET {
            // hyper omits `Content-Length: 0`, but the SDK sends it on empty POST and DELETE
            // bodies, and some HTTP stacks answer a bodiless POST without it with 411.
            builder = builder.header(CONTENT_LENGTH, prepared.body.len());
        }
        if prepared.json {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let response = builder.send().await.map_err(AcsError::from_reqwest)?;
        let status = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers(), SystemTime::now());
        let body = read_body(response).await?;
        if (200..300).contains(&status) {
            Ok(Success { status, body })
        } else {
            Err(AcsError::from_response(status, retry_after, &body))
        }
    }
}

fn decode<T: DeserializeOwned>(ok: &Success) -> Result<T, AcsError> {
    serde_json::from_slice(&ok.body).map_err(|e| AcsError::Decode {
        status: ok.status,
        source: DecodeError::from(&e),
    })
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, AcsError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(AcsError::from_reqwest)? {
        let room = MAX_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_BODY_BYTES {
            break;
        }
    }
    Ok(body)
}

fn header_value(s: &str) -> Result<HeaderValue, AcsError> {
    HeaderValue::from_str(s).map_err(|e| AcsError::BuildRequest {
        source: Box::new(e),
    })
}

/// `host[:port]` as reqwest sends it: the `url` crate drops a default port (`:443` for https).
fn wire_host(url: &Url) -> Option<String> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The request-target on the wire: path and query exactly as the parsed URL holds them.
fn request_target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// The identity a probe reads: well formed, and never issued by any resource.
const PROBE_IDENTITY: &str =
    "8:acs:00000000-0000-0000-0000-000000000000_00000000-0000-0000-0000-000000000000";

/// Whether a failed probe still shows the credentials were accepted (the service looked at
/// the identity, which it does only for an authenticated caller).
fn accepted_credentials(e: &AcsError) -> bool {
    matches!(
        (e.status(), e.code()),
        (Some(404), Some("IdentityNotFound")) | (Some(401), Some("IdentityNotOwned"))
    )
}

#[cfg(test)]
mod tests;
