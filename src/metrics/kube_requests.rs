//! Counting of the requests the operator sends to the Kubernetes API server, by verb: a tower
//! layer on the kube client, so every request is seen (reconciles, watches, events, leases)
//! and the cost per object can be measured (see docs/benchmarks.md).

use std::sync::Arc;

use http::{Method, Request, Uri};
use tower::util::MapRequestLayer;

use super::Metrics;

/// The Kubernetes verb of a request, from its method and path. The set of values is fixed
/// (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `other`), so the label stays
/// bounded whatever the path holds.
pub fn verb_of(method: &Method, uri: &Uri) -> &'static str {
    match *method {
        Method::GET => {
            let watching = uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            if watching {
                "watch"
            } else if is_collection(uri.path()) {
                "list"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// True when `path` names a collection (`.../secrets`) rather than one object
/// (`.../secrets/name`, `.../secrets/name/status`).
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The resource part starts after `/api/v1` or `/apis/<group>/<version>`.
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest else {
        return false;
    };
    // `namespaces/<ns>/<plural>...` is namespaced; `namespaces` or `namespaces/<name>` alone
    // is the Namespace kind itself.
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        rest = &rest[2..];
    }
    rest.len() == 1
}

/// A layer that counts each request in `metrics` before passing it on unchanged.
pub fn layer<B>(
    metrics: Arc<Metrics>,
) -> MapRequestLayer<impl FnMut(Request<B>) -> Request<B> + Clone> {
    MapRequestLayer::new(move |req: Request<B>| {
        metrics.kube_request(verb_of(req.method(), req.uri()));
        req
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb(method: Method, uri: &str) -> &'static str {
        verb_of(&method, &uri.parse::<Uri>().unwrap())
    }

    #[test]
    fn reads_are_told_apart_by_path_and_watch_parameter() {
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/a/secrets/s"), "get");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/a/secrets"), "list");
        assert_eq!(verb(Method::GET, "/api/v1/secrets?labelSelector=x"), "list");
        assert_eq!(
            verb(Method::GET, "/api/v1/secrets?watch=true&resourceVersion=5"),
            "watch"
        );
        assert_eq!(
            verb(
                Method::GET,
                "/apis/communication.acs.dev/v1alpha1/namespaces/a/communicationtokens"
            ),
            "list"
        );
        assert_eq!(
            verb(
                Method::GET,
                "/apis/communication.acs.dev/v1alpha1/namespaces/a/communicationtokens/t/status"
            ),
            "get"
        );
        assert_eq!(verb(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/a"), "get");
        assert_eq!(verb(Method::GET, "/version"), "get");
    }

    #[test]
    fn writes_map_to_their_verbs() {
        assert_eq!(
            verb(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events"),
            "create"
        );
        assert_eq!(
            verb(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l"
            ),
            "update"
        );
        assert_eq!(
            verb(Method::PATCH, "/api/v1/namespaces/a/secrets/s"),
            "patch"
        );
        assert_eq!(
            verb(Method::DELETE, "/api/v1/namespaces/a/secrets/s"),
            "delete"
        );
        assert_eq!(verb(Method::OPTIONS, "/api/v1"), "other");
    }

    #[test]
    fn the_layer_counts_each_request_by_verb() {
        use tower::{Layer, Service, ServiceExt};
        let metrics = Arc::new(Metrics::new());
        let svc =
            tower::service_fn(|_req: Request<()>| async { Ok::<_, std::convert::Infallible>(()) });
        let mut svc = layer::<()>(metrics.clone()).layer(svc);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for (m, u) in [
                (Method::PATCH, "/api/v1/namespaces/a/secrets/s"),
                (Method::PATCH, "/api/v1/namespaces/a/secrets/t"),
                (Method::GET, "/api/v1/namespaces/a/secrets/s"),
            ] {
                let req = Request::builder().method(m).uri(u).body(()).unwrap();
                svc.ready().await.unwrap().call(req).await.unwrap();
            }
        });
        let text = metrics.encode();
        assert!(
            text.contains("acs_identity_operator_kube_requests_total{verb=\"patch\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("acs_identity_operator_kube_requests_total{verb=\"get\"} 1"),
            "{text}"
        );
    }
}
