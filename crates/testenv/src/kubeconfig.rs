//! Kubeconfig files for the control plane: the admin one (client certificate in
//! `system:masters`) and impersonating ones (admin credentials acting as another user, e.g. the
//! chart's ServiceAccount, so RBAC decides exactly as for that user), and loading them into a
//! `kube::Config`.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::certs::Pki;
use crate::error::Error;

/// Who a kubeconfig acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity<'a> {
    /// The admin certificate itself.
    Admin,
    /// The admin certificate impersonating `user` (with extra `groups`, if any).
    Impersonating {
        user: &'a str,
        groups: &'a [&'a str],
    },
    /// The node's kubelet client certificate (a control plane with a node only).
    Kubelet,
}

/// The namespace a ServiceAccount user name (`system:serviceaccount:<ns>:<name>`) lives in.
pub fn service_account_namespace(user: &str) -> Option<&str> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty()).then_some(namespace)
}

/// Renders a kubeconfig with one cluster, user and context (`admin` or `impersonated`). For a
/// ServiceAccount user the context's namespace is the ServiceAccount's.
pub fn render(
    api_url: &str,
    pki: &Pki,
    identity: &Identity<'_>,
) -> Result<String, serde_yaml::Error> {
    let mut user = json!({
        "client-certificate": pki.admin_cert,
        "client-key": pki.admin_key,
    });
    let mut context = json!({ "cluster": "local", "user": "user" });
    let context_name = match identity {
        Identity::Admin => "admin",
        Identity::Kubelet => {
            let node = pki.node.as_ref().ok_or_else(|| {
                <serde_yaml::Error as serde::de::Error>::custom("no node certificates")
            })?;
            user = json!({
                "client-certificate": node.kubelet_client_cert,
                "client-key": node.kubelet_client_key,
            });
            "kubelet"
        }
        Identity::Impersonating { user: who, groups } => {
            user["as"] = json!(who);
            if !groups.is_empty() {
                user["as-groups"] = json!(groups);
            }
            if let Some(ns) = service_account_namespace(who) {
                context["namespace"] = json!(ns);
            }
            "impersonated"
        }
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "local",
            "cluster": { "server": api_url, "certificate-authority": pki.ca_cert },
        }],
        "users": [{ "name": "user", "user": user }],
        "contexts": [{ "name": context_name, "context": context }],
        "current-context": context_name,
    });
    serde_yaml::to_string(&doc)
}

/// Writes a kubeconfig file for `identity` (mode 0600: it names the admin key).
pub fn write(path: &Path, api_url: &str, pki: &Pki, identity: &Identity<'_>) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let text = render(api_url, pki, identity).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(source),
    })?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Loads a kubeconfig file's current context into a `kube::Config`.
pub async fn load(path: &Path) -> Result<kube::Config, Error> {
    let err = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pki() -> Pki {
        let p = |n: &str| PathBuf::from("/pki").join(n);
        Pki {
            ca_cert: p("ca.crt"),
            serving_cert: p("apiserver.crt"),
            serving_key: p("apiserver.key"),
            admin_cert: p("admin.crt"),
            admin_key: p("admin.key"),
            sa_key: p("sa.key"),
            sa_pub: p("sa.pub"),
            node: None,
        }
    }

    #[test]
    fn the_kubelet_kubeconfig_uses_the_node_certificate() {
        let mut pki = pki();
        assert!(render("https://10.244.77.1:6443", &pki, &Identity::Kubelet).is_err());
        pki.node = Some(crate::certs::NodePki {
            kubelet_client_cert: PathBuf::from("/pki/kubelet-client.crt"),
            kubelet_client_key: PathBuf::from("/pki/kubelet-client.key"),
            kubelet_serving_cert: PathBuf::from("/pki/kubelet-serving.crt"),
            kubelet_serving_key: PathBuf::from("/pki/kubelet-serving.key"),
            apiserver_kubelet_client_cert: PathBuf::from("/pki/a.crt"),
            apiserver_kubelet_client_key: PathBuf::from("/pki/a.key"),
        });
        let text = render("https://10.244.77.1:6443", &pki, &Identity::Kubelet).unwrap();
        assert!(text.contains("/pki/kubelet-client.crt"), "{text}");
        assert!(!text.contains("admin"), "{text}");
        assert!(text.contains("https://10.244.77.1:6443"), "{text}");
    }

    #[test]
    fn service_account_user_names_yield_their_namespace() {
        assert_eq!(
            service_account_namespace("system:serviceaccount:acs-system:op"),
            Some("acs-system")
        );
        assert_eq!(service_account_namespace("jane"), None);
        assert_eq!(service_account_namespace("system:serviceaccount::op"), None);
    }

    #[test]
    fn an_impersonating_kubeconfig_names_the_user_groups_and_namespace() {
        let text = render(
            "https://127.0.0.1:6443",
            &pki(),
            &Identity::Impersonating {
                user: "system:serviceaccount:acs-system:op",
                groups: &["g1"],
            },
        )
        .unwrap();
        let kc = Kubeconfig::from_yaml(&text).unwrap();
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.impersonate.as_deref(),
            Some("system:serviceaccount:acs-system:op")
        );
        assert_eq!(user.impersonate_groups, Some(vec!["g1".to_string()]));
        assert_eq!(kc.current_context.as_deref(), Some("impersonated"));
        let ctx = kc.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some("acs-system"));
    }

    #[test]
    fn the_admin_kubeconfig_uses_the_client_certificate_without_impersonation() {
        let text = render("https://127.0.0.1:6443", &pki(), &Identity::Admin).unwrap();
        let kc = Kubeconfig::from_yaml(&text).unwrap();
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate.as_deref(), Some("/pki/admin.crt"));
        assert_eq!(user.impersonate, None);
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/pki/ca.crt")
        );
    }
}
