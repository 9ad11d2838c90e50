use super::*;

fn client(endpoint: &str) -> AcsClient {
    let conn = ConnectionString::parse(&format!(
        "endpoint={endpoint};accesskey=c2VjcmV0c2VjcmV0c2VjcmV0"
    ))
    .unwrap();
    AcsClient::new(conn, ClientOptions::default()).unwrap()
}

#[test]
fn the_signed_host_keeps_a_non_default_port_only() {
    assert_eq!(
        client("https://127.0.0.1:8443/").resource_host(),
        "127.0.0.1:8443"
    );
    assert_eq!(
        client("https://res.communication.azure.com/").resource_host(),
        "res.communication.azure.com"
    );
    assert_eq!(
        client("https://Res.Example.com:443").resource_host(),
        "res.example.com"
    );
    assert_eq!(client("http://127.0.0.1:80").resource_host(), "127.0.0.1");
    assert_eq!(client("http://[::1]:8080").resource_host(), "[::1]:8080");
    assert_eq!(
        client("https://127.0.0.1:8443/").endpoint(),
        "https://127.0.0.1:8443"
    );
}

#[test]
fn the_request_target_keeps_percent_encoding_and_colons() {
    let url =
        Url::parse("https://h/identities/8%3Aacs%3Ax_y/:issueAccessToken?api-version=2023-10-01")
            .unwrap();
    assert_eq!(
        request_target(&url),
        "/identities/8%3Aacs%3Ax_y/:issueAccessToken?api-version=2023-10-01"
    );
}

#[test]
fn a_pem_without_certificates_is_rejected() {
    let conn = ConnectionString::parse("endpoint=https://h/;accesskey=c2VjcmV0").unwrap();
    let options = ClientOptions {
        ca_pem: Some(b"not a pem".to_vec()),
        ..ClientOptions::default()
    };
    let err = AcsClient::new(conn, options).unwrap_err();
    assert!(
        matches!(err, AcsError::InvalidCaCertificate { .. }),
        "{err:?}"
    );
    assert_eq!(err.category(), "config");
}

/// Counts attempts (the observer hears every attempt that reached the network stage).
#[derive(Default)]
struct Attempts(std::sync::atomic::AtomicUsize);

impl RequestObserver for Attempts {
    fn observe(&self, _: &'static str, _: &str, _: std::time::Duration) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Refuse;

impl MutationGate for Refuse {
    fn admit(&self, _: &'static str) -> bool {
        false
    }
}

/// A client of `endpoint` (nothing listens on port 1) that never retries.
fn unreachable(
    endpoint: &str,
    mut options: ClientOptions,
) -> (AcsClient, std::sync::Arc<Attempts>) {
    let attempts = std::sync::Arc::new(Attempts::default());
    options.observer = Some(attempts.clone());
    options.max_retries = 0;
    let conn = ConnectionString::parse(&format!("endpoint={endpoint};accesskey=c2VjcmV0")).unwrap();
    (AcsClient::new(conn, options).unwrap(), attempts)
}

fn attempts(a: &Attempts) -> usize {
    a.0.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn a_closed_mutation_gate_stops_every_mutation_before_the_wire_but_not_reads() {
    let options = ClientOptions {
        api_mode: ApiMode::Preview,
        mutation_gate: Some(std::sync::Arc::new(Refuse)),
        ..ClientOptions::default()
    };
    let (c, seen) = unreachable("https://127.0.0.1:1", options);
    let results = [
        c.create_identity(CreateIdentity::default()).await.err(),
        c.issue_token("8:acs:r_u", &[Scope::Chat], None).await.err(),
        c.revoke_tokens("8:acs:r_u").await.err(),
        c.delete_identity("8:acs:r_u").await.err(),
    ];
    for err in results {
        let err = err.expect("refused");
        assert!(matches!(err, AcsError::Fenced { .. }), "{err:?}");
        assert_eq!(err.category(), "fenced");
        assert!(!err.is_transient());
    }
    assert_eq!(attempts(&seen), 0, "a fenced mutation was attempted");
    // A read is not a mutation: it is attempted (and fails to connect).
    let err = c.get_identity("8:acs:r_u").await.unwrap_err();
    assert_eq!(err.category(), "network", "{err:?}");
    assert_eq!(attempts(&seen), 1);
}

#[tokio::test]
async fn plain_http_is_refused_unless_explicitly_allowed() {
    let (c, seen) = unreachable("http://127.0.0.1:1", ClientOptions::default());
    let err = c
        .issue_token("8:acs:r_u", &[Scope::Chat], None)
        .await
        .unwrap_err();
    assert!(matches!(err, AcsError::InsecureHttp), "{err:?}");
    assert_eq!(err.category(), "insecure_http");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("--allow-insecure-http"), "{err}");
    assert_eq!(attempts(&seen), 0, "an http request was attempted");

    let allowed = ClientOptions {
        allow_insecure_http: true,
        ..ClientOptions::default()
    };
    let (c, seen) = unreachable("http://127.0.0.1:1", allowed);
    let err = c
        .issue_token("8:acs:r_u", &[Scope::Chat], None)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "network", "{err:?}");
    assert_eq!(attempts(&seen), 1);
    // https is never affected by the flag.
    let (c, seen) = unreachable("https://127.0.0.1:1", ClientOptions::default());
    assert!(c.revoke_tokens("8:acs:r_u").await.is_err());
    assert_eq!(attempts(&seen), 1);
}

#[test]
fn debug_output_never_shows_the_key() {
    let c = client("https://h/");
    let text = format!("{c:?}");
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains("c2VjcmV0"), "{text}");
}
