//! The control plane's PKI, generated in-process: one ECDSA P-256 CA that signs both the
//! apiserver's serving certificate (SANs 127.0.0.1 and localhost, because rustls checks IP SANs
//! when the URL is an IP) and the admin client certificate (CN=admin, O=system:masters), plus the
//! ServiceAccount token signing key pair. One CA for serving and clients keeps it simple.
//! A control plane with a node also gets the kubelet's client and serving certificates and the
//! apiserver's client certificate for the kubelet (logs, exec), signed by the same CA.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use crate::error::Error;

/// Paths of the generated PEM files.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (trust anchor for clients and for client certificates).
    pub ca_cert: PathBuf,
    /// The apiserver serving certificate.
    pub serving_cert: PathBuf,
    /// The apiserver serving key.
    pub serving_key: PathBuf,
    /// The admin client certificate (`system:masters`).
    pub admin_cert: PathBuf,
    /// The admin client key.
    pub admin_key: PathBuf,
    /// The ServiceAccount token signing key (private, PKCS#8).
    pub sa_key: PathBuf,
    /// The ServiceAccount token verification key (public).
    pub sa_pub: PathBuf,
    /// The node's certificates, when the control plane serves a node.
    pub node: Option<NodePki>,
}

/// Certificates of a node: the kubelet's client certificate (`system:node:<name>` in
/// `system:nodes`, which the Node authorizer and NodeRestriction recognise), its serving
/// certificate (IP SANs of the node's addresses), and the apiserver's client certificate for
/// calling the kubelet.
#[derive(Clone, Debug)]
pub struct NodePki {
    /// The kubelet's client certificate.
    pub kubelet_client_cert: PathBuf,
    /// The kubelet's client key.
    pub kubelet_client_key: PathBuf,
    /// The kubelet's serving certificate.
    pub kubelet_serving_cert: PathBuf,
    /// The kubelet's serving key.
    pub kubelet_serving_key: PathBuf,
    /// The apiserver's client certificate towards the kubelet (`system:masters`).
    pub apiserver_kubelet_client_cert: PathBuf,
    /// The apiserver's client key towards the kubelet.
    pub apiserver_kubelet_client_key: PathBuf,
}

/// What the PKI is generated for.
#[derive(Clone, Debug, Default)]
pub struct PkiSpec<'a> {
    /// IP addresses the apiserver serves on besides 127.0.0.1.
    pub extra_ips: &'a [IpAddr],
    /// The node's name and the addresses its kubelet serves on, when there is a node.
    pub node: Option<(&'a str, &'a [IpAddr])>,
}

fn sign(
    what: &'static str,
    params: CertificateParams,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> Result<(rcgen::Certificate, KeyPair), Error> {
    let key = key_pair(what)?;
    let cert = params
        .signed_by(&key, ca, ca_key)
        .map_err(|source| Error::Certificate { what, source })?;
    Ok((cert, key))
}

fn client_params(common_name: &str, organization: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(common_name, Some(organization));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

fn key_pair(what: &'static str) -> Result<KeyPair, Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::Certificate { what, source })
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes a file readable only by us (keys) or by anyone (certificates).
fn write(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
}

impl Pki {
    /// Generates every certificate and key into `dir` (which must exist), for a control plane
    /// on 127.0.0.1 without a node.
    pub fn generate(dir: &Path) -> Result<Pki, Error> {
        Self::generate_for(dir, &PkiSpec::default())
    }

    /// Generates every certificate and key into `dir` (which must exist).
    pub fn generate_for(dir: &Path, spec: &PkiSpec<'_>) -> Result<Pki, Error> {
        let ca_key = key_pair("the CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("acs-testenv-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params
            .self_signed(&ca_key)
            .map_err(|source| Error::Certificate {
                what: "the CA certificate",
                source,
            })?;

        let serving_key = key_pair("the serving key")?;
        let mut serving = CertificateParams::default();
        serving.distinguished_name = name("localhost", None);
        let dns = |n: &str| {
            n.to_string()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|source| Error::Certificate {
                    what: "the serving certificate",
                    source,
                })
        };
        serving.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            dns("localhost")?,
        ];
        serving
            .subject_alt_names
            .extend(spec.extra_ips.iter().map(|ip| SanType::IpAddress(*ip)));
        if spec.node.is_some() {
            // What pods use for the API: the `kubernetes` Service's name and ClusterIP (the first
            // address of --service-cluster-ip-range).
            serving.subject_alt_names.extend([
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
                dns("kubernetes.default.svc")?,
            ]);
        }
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving
            .signed_by(&serving_key, &ca, &ca_key)
            .map_err(|source| Error::Certificate {
                what: "the serving certificate",
                source,
            })?;

        let admin_key = key_pair("the admin key")?;
        let mut admin = CertificateParams::default();
        // The apiserver maps CN to the user name and each O to a group.
        admin.distinguished_name = name("admin", Some("system:masters"));
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin
            .signed_by(&admin_key, &ca, &ca_key)
            .map_err(|source| Error::Certificate {
                what: "the admin client certificate",
                source,
            })?;

        let sa = key_pair("the ServiceAccount signing key")?;

        let node = match spec.node {
            None => None,
            Some((node_name, ips)) => Some(node_certs(dir, node_name, ips, &ca, &ca_key)?),
        };

        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            node,
        };
        write(&pki.ca_cert, &ca.pem(), false)?;
        write(&pki.serving_cert, &serving_cert.pem(), false)?;
        write(&pki.serving_key, &serving_key.serialize_pem(), true)?;
        write(&pki.admin_cert, &admin_cert.pem(), false)?;
        write(&pki.admin_key, &admin_key.serialize_pem(), true)?;
        write(&pki.sa_key, &sa.serialize_pem(), true)?;
        write(&pki.sa_pub, &sa.public_key_pem(), false)?;
        Ok(pki)
    }
}

fn node_certs(
    dir: &Path,
    node_name: &str,
    ips: &[IpAddr],
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> Result<NodePki, Error> {
    let node = NodePki {
        kubelet_client_cert: dir.join("kubelet-client.crt"),
        kubelet_client_key: dir.join("kubelet-client.key"),
        kubelet_serving_cert: dir.join("kubelet-serving.crt"),
        kubelet_serving_key: dir.join("kubelet-serving.key"),
        apiserver_kubelet_client_cert: dir.join("apiserver-kubelet-client.crt"),
        apiserver_kubelet_client_key: dir.join("apiserver-kubelet-client.key"),
    };
    let (cert, key) = sign(
        "the kubelet client certificate",
        client_params(&format!("system:node:{node_name}"), "system:nodes"),
        ca,
        ca_key,
    )?;
    write(&node.kubelet_client_cert, &cert.pem(), false)?;
    write(&node.kubelet_client_key, &key.serialize_pem(), true)?;

    let mut serving = CertificateParams::default();
    serving.distinguished_name = name(node_name, None);
    serving.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert, key) = sign("the kubelet serving certificate", serving, ca, ca_key)?;
    write(&node.kubelet_serving_cert, &cert.pem(), false)?;
    write(&node.kubelet_serving_key, &key.serialize_pem(), true)?;

    let (cert, key) = sign(
        "the apiserver's kubelet client certificate",
        client_params("kube-apiserver-kubelet-client", "system:masters"),
        ca,
        ca_key,
    )?;
    write(&node.apiserver_kubelet_client_cert, &cert.pem(), false)?;
    write(
        &node.apiserver_kubelet_client_key,
        &key.serialize_pem(),
        true,
    )?;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pki_has_every_file_and_private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path()).unwrap();
        for cert in [&pki.ca_cert, &pki.serving_cert, &pki.admin_cert] {
            let text = std::fs::read_to_string(cert).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{cert:?}");
        }
        for key in [&pki.serving_key, &pki.admin_key, &pki.sa_key] {
            let text = std::fs::read_to_string(key).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{key:?}");
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{key:?} is readable by others");
        }
        let public = std::fs::read_to_string(&pki.sa_pub).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(pki.node.is_none());
    }

    #[test]
    fn a_node_pki_adds_the_kubelet_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let bridge = [IpAddr::V4(Ipv4Addr::new(10, 244, 77, 1))];
        let spec = PkiSpec {
            extra_ips: &bridge,
            node: Some(("127.0.0.1", &ips)),
        };
        let pki = Pki::generate_for(tmp.path(), &spec).unwrap();
        let node = pki.node.expect("node certificates");
        for cert in [
            &node.kubelet_client_cert,
            &node.kubelet_serving_cert,
            &node.apiserver_kubelet_client_cert,
        ] {
            let text = std::fs::read_to_string(cert).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{cert:?}");
        }
    }
}
