//! A tiny HTTPS OpenID issuer, as a Kubernetes apiserver serves its ServiceAccount issuer:
//! `/.well-known/openid-configuration` and a JWKS with an ES256 key (the test control plane's
//! kind) and an RS256 key (AKS's kind), under a CA of its own that the emulator must be told to
//! trust. It signs assertions shaped like projected ServiceAccount tokens.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;

pub const EC_KID: &str = "ec-key-1";
pub const RSA_KID: &str = "rsa-key-1";
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A running issuer.
pub struct Issuer {
    /// `https://127.0.0.1:PORT`, the `iss` of its tokens.
    pub url: String,
    /// The CA that signs its TLS certificate.
    pub ca_pem: String,
    ec: EncodingKey,
    rsa: EncodingKey,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ec_key() -> (EncodingKey, Value) {
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    let jwk = json!({
        "use": "sig", "kty": "EC", "kid": EC_KID, "crv": "P-256", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    (EncodingKey::from_ec_der(&key.serialize_der()), jwk)
}

fn rsa_key() -> (EncodingKey, Value) {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let jwk = json!({
        "use": "sig", "kty": "RSA", "kid": RSA_KID, "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    });
    let der = key.to_pkcs1_der().unwrap();
    (EncodingKey::from_rsa_der(der.as_bytes()), jwk)
}

/// A different ES256 key, for assertions whose signature the issuer's key does not verify.
pub fn foreign_ec_key() -> EncodingKey {
    ec_key().0
}

fn tls(ca_key: &KeyPair) -> (String, Arc<rustls::ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(config))
}

impl Issuer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (ec, ec_jwk) = ec_key();
        let (rsa, rsa_jwk) = rsa_key();
        let (ca_pem, tls) = tls(&KeyPair::generate().unwrap());
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        })
        .to_string();
        let jwks = json!({ "keys": [ec_jwk, rsa_jwk] }).to_string();
        let acceptor = TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (discovery, jwks) = (discovery.clone(), jwks.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => Some(discovery.clone()),
                            "/openid/v1/jwks" => Some(jwks.clone()),
                            _ => None,
                        };
                        async move {
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(
                                body.clone().unwrap_or_default(),
                            )));
                            if body.is_none() {
                                *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            url,
            ca_pem,
            ec,
            rsa,
            task,
        }
    }

    /// Claims of a projected ServiceAccount token for `namespace/name`, valid for an hour.
    pub fn claims(&self, namespace: &str, name: &str) -> Value {
        let now = jiff::Timestamp::now().as_second();
        json!({
            "aud": [EXCHANGE_AUDIENCE],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}},
        })
    }

    /// Signs `claims` with the issuer's ES256 key.
    pub fn sign_es256(&self, claims: &Value) -> String {
        sign(&self.ec, Algorithm::ES256, EC_KID, claims)
    }

    /// Signs `claims` with the issuer's RS256 key.
    pub fn sign_rs256(&self, claims: &Value) -> String {
        sign(&self.rsa, Algorithm::RS256, RSA_KID, claims)
    }
}

/// Signs `claims` with any key, under a chosen `kid`.
pub fn sign(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}
