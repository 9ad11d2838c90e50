//! The emulator's own CA (kept in the state file so a restart keeps trust) and the server
//! certificate it signs at every start for `localhost`, `127.0.0.1` and any `--tls-san`.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

const CA_COMMON_NAME: &str = "acs-identity-operator emulator CA";

/// Why certificates could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to generate or load a key")]
    Key(#[source] rcgen::Error),
    #[error("failed to sign a certificate")]
    Sign(#[source] rcgen::Error),
    #[error("a subject alternative name is not a valid DNS name or IP address")]
    BadName(#[source] rcgen::Error),
    #[error("the stored CA certificate is not PEM")]
    CaPem,
    #[error("failed to build the TLS server configuration")]
    Rustls(#[source] rustls::Error),
}

/// The CA: its certificate (served to clients) and key (signs the server certificate).
#[derive(Clone)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "acs-identity-operator");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params
}

impl Ca {
    /// A fresh CA (ECDSA P-256).
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Key)?;
        let cert = ca_params().self_signed(&key).map_err(TlsError::Sign)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS server configuration with a new leaf for `sans`, chained to this CA.
    pub fn server_config(&self, sans: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(TlsError::Key)?;
        // rcgen needs the issuer as a `Certificate`; re-signing the same parameters with the
        // same key yields the same subject and key identifier, so the leaf chains to the
        // persisted CA certificate.
        let issuer = ca_params().self_signed(&ca_key).map_err(TlsError::Sign)?;
        let leaf_key = KeyPair::generate().map_err(TlsError::Key)?;
        let mut params = CertificateParams::new(sans.to_vec()).map_err(TlsError::BadName)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let leaf = params
            .signed_by(&leaf_key, &issuer, &ca_key)
            .map_err(TlsError::Sign)?;
        let ca_der = pem_to_der(&self.cert_pem).ok_or(TlsError::CaPem)?;
        let chain = vec![leaf.der().clone(), ca_der];
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(TlsError::Rustls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn pem_to_der(pem: &str) -> Option<rustls::pki_types::CertificateDer<'static>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut reader).next()?;
    first.ok()
}

/// `localhost`, `127.0.0.1`, a specific listen address, and the extra names, deduplicated.
pub fn subject_alt_names(extra: &[String], listen_ip: IpAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !listen_ip.is_unspecified() && !listen_ip.is_loopback() {
        names.push(listen_ip.to_string());
    }
    for n in extra {
        let n = n.trim();
        if !n.is_empty() && !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_signs_leaves_and_names_are_deduplicated() {
        let ca = Ca::generate().unwrap();
        let again = Ca {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        };
        let names = subject_alt_names(
            &["emu.test".into(), "LOCALHOST".into()],
            "0.0.0.0".parse().unwrap(),
        );
        assert_eq!(names, ["localhost", "127.0.0.1", "emu.test"]);
        assert!(again.server_config(&names).is_ok());
        assert!(again.server_config(&["b\u{e4}d.test".into()]).is_err());
    }
}
