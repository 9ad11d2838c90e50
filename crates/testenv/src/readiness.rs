//! Readiness probes (etcd `/health`, apiserver `/readyz` as admin, an object exists) and the
//! polling loop that runs one under a deadline while checking that the component is still alive,
//! so a crashed process fails fast with its log tail instead of timing out.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::Error;
use crate::process::log_tail;

/// How often a probe is repeated.
const POLL: Duration = Duration::from_millis(100);
/// The longest a single probe may take (a hung connection must not eat the whole deadline).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Repeats `probe` until it succeeds or `deadline` passes, failing early when `alive` fails.
/// `log` is the log whose tail goes into a timeout error.
pub async fn wait_until<F, Fut>(
    what: &str,
    deadline: Instant,
    total: Duration,
    log: &Path,
    alive: &mut dyn FnMut() -> Result<(), Error>,
    mut probe: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        alive()?;
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(PROBE_TIMEOUT);
        let last = match tokio::time::timeout(budget, probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => why,
            Err(_) => format!("probe took longer than {budget:?}"),
        };
        if Instant::now() + POLL >= deadline {
            alive()?;
            return Err(Error::NotReady {
                what: what.to_string(),
                timeout: total,
                last,
                log: log.to_path_buf(),
                tail: log_tail(log),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// etcd answers `GET /health` with `"health":"true"`. A hand-written HTTP/1.0 request keeps an
/// HTTP client dependency out for one plain-text probe.
pub async fn etcd_healthy(port: u16) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    if text.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!(
            "unhealthy: {}",
            text.lines().last().unwrap_or_default()
        ))
    }
}

/// `/readyz` answers 200 `ok` as admin (envtest polls anonymously and gets 403 until the RBAC
/// bootstrap roles exist; `system:masters` is always allowed).
pub async fn apiserver_ready(client: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(format!("/readyz: {body}")),
        Err(e) => Err(format!("/readyz: {e}")),
    }
}

/// The bootstrap controller has created namespace `name`.
pub async fn namespace_exists(client: &Client, name: &str) -> Result<(), String> {
    match Api::<Namespace>::all(client.clone()).get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("namespace {name} does not exist yet")),
        Err(e) => Err(format!("get namespace {name}: {e}")),
    }
}

/// The ServiceAccount controller has created ServiceAccount `name` in `namespace`.
pub async fn service_account_exists(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), String> {
    match Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "serviceaccount {namespace}/{name} does not exist yet"
        )),
        Err(e) => Err(format!("get serviceaccount {namespace}/{name}: {e}")),
    }
}

/// Name of the binding that serves the ServiceAccount issuer's discovery anonymously.
pub const ISSUER_DISCOVERY_BINDING: &str = "acs-testenv:service-account-issuer-discovery";

/// Lets anonymous clients read the ServiceAccount issuer's discovery document and keys
/// (`/.well-known/openid-configuration`, `/openid/v1/jwks`), as a cloud cluster's public OIDC
/// issuer serves them, so a federated-credential verifier (Entra, or the emulator standing in
/// for it) can check ServiceAccount tokens. Idempotent (server-side apply).
pub async fn serve_issuer_discovery_anonymously(client: &Client) -> Result<(), String> {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Patch, PatchParams};
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": ISSUER_DISCOVERY_BINDING},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:service-account-issuer-discovery"
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": "system:unauthenticated"
        }]
    });
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            ISSUER_DISCOVERY_BINDING,
            &PatchParams::apply("acs-testenv").force(),
            &Patch::Apply(&binding),
        )
        .await
        .map(drop)
        .map_err(|e| format!("apply ClusterRoleBinding {ISSUER_DISCOVERY_BINDING}: {e}"))
}
