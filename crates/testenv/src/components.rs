//! The files and ports of one control plane (its `Layout`) and the exact command lines of etcd,
//! kube-apiserver and kube-controller-manager built from it. Pure, so the flags are unit-tested;
//! restarts rebuild the same command lines, keeping ports, certificates and data.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::certs::Pki;

/// The audit policy: every request at `Metadata` (who, verb, resource, name, response code),
/// which is what the chart tests compare with the RBAC the operator was granted. The
/// `RequestReceived` stage is omitted so each request is logged once.
pub const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - RequestReceived
rules:
  - level: Metadata
";

/// Admission plugins enabled on top of kube-apiserver's defaults, which already include
/// everything else a production cluster runs (NamespaceLifecycle, ServiceAccount, PodSecurity,
/// ResourceQuota, the webhook and admission-policy plugins, ...).
pub const EXTRA_ADMISSION_PLUGINS: &str = "NodeRestriction,OwnerReferencesPermissionEnforcement";

/// The controllers kube-controller-manager runs: garbage collection (ownerReferences), namespace
/// deletion, default ServiceAccounts and their token Secrets, and ClusterRole aggregation (the
/// chart's roles for people join the built-in view/edit/admin). Pods never run (no kubelet), so
/// workload controllers would only add noise.
pub const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller";

/// The controllers added when a node runs pods: the `kube-root-ca.crt` ConfigMap every projected
/// ServiceAccount token volume needs, the workload controllers (Deployments, StatefulSets,
/// DaemonSets), and node lifecycle, which lifts the not-ready taint the kubelet registers with.
pub const NODE_CONTROLLERS: &str = "root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,node-lifecycle-controller";

/// Component names, used for log files and messages.
pub const ETCD: &str = "etcd";
/// kube-apiserver's component name.
pub const APISERVER: &str = "kube-apiserver";
/// kube-controller-manager's component name.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// Everything on disk and every port of one control plane.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The work directory holding everything below.
    pub work_dir: PathBuf,
    /// Certificates and keys.
    pub pki: Pki,
    /// etcd's data directory (kept across etcd restarts).
    pub etcd_data: PathBuf,
    /// etcd's client port.
    pub etcd_port: u16,
    /// etcd's peer port (never dialled by a single member, but it must be free).
    pub etcd_peer_port: u16,
    /// kube-apiserver's secure port.
    pub apiserver_port: u16,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The audit policy file.
    pub audit_policy: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// The address kube-apiserver binds to and advertises.
    pub bind_address: IpAddr,
    /// The node's name and kubelet kubeconfig, when a node is served.
    pub node: Option<NodeLayout>,
}

/// What a node's kubelet needs from the control plane.
#[derive(Clone, Debug)]
pub struct NodeLayout {
    /// The node's name (its kubelet's `--hostname-override`).
    pub name: String,
    /// The kubelet's kubeconfig (its client certificate).
    pub kubelet_kubeconfig: PathBuf,
}

impl Layout {
    /// The layout of a control plane in `work_dir` using the given ports.
    pub fn new(
        work_dir: &Path,
        pki: Pki,
        etcd_port: u16,
        etcd_peer_port: u16,
        apiserver_port: u16,
    ) -> Layout {
        Layout {
            work_dir: work_dir.to_path_buf(),
            pki,
            etcd_data: work_dir.join("etcd"),
            etcd_port,
            etcd_peer_port,
            apiserver_port,
            kubeconfig: work_dir.join("admin.kubeconfig"),
            audit_policy: work_dir.join("audit-policy.yaml"),
            audit_log: work_dir.join("audit.log"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node: None,
        }
    }

    /// `https://<bind address>:<port>`.
    pub fn api_url(&self) -> String {
        match self.bind_address {
            IpAddr::V6(ip) => format!("https://[{ip}]:{}", self.apiserver_port),
            IpAddr::V4(ip) => format!("https://{ip}:{}", self.apiserver_port),
        }
    }

    /// `http://127.0.0.1:<port>` of etcd's client endpoint.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// The log file of a component (appended to across restarts).
    pub fn log(&self, component: &str) -> PathBuf {
        self.work_dir.join(format!("{component}.log"))
    }
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// etcd's flags (envtest's set): loopback only, fresh data dir, no fsync (tests only).
pub fn etcd_args(l: &Layout) -> Vec<String> {
    vec![
        flag("data-dir", l.etcd_data.display()),
        flag("listen-client-urls", l.etcd_url()),
        flag("advertise-client-urls", l.etcd_url()),
        flag(
            "listen-peer-urls",
            format!("http://127.0.0.1:{}", l.etcd_peer_port),
        ),
        flag(
            "initial-advertise-peer-urls",
            format!("http://127.0.0.1:{}", l.etcd_peer_port),
        ),
        flag(
            "initial-cluster",
            format!("default=http://127.0.0.1:{}", l.etcd_peer_port),
        ),
        flag("unsafe-no-fsync", true),
        flag("log-level", "warn"),
    ]
}

/// kube-apiserver's flags: TLS with our certificates, RBAC, the extra admission plugins, the
/// audit log, and the ServiceAccount issuer and keys (needed for TokenRequest).
pub fn apiserver_args(l: &Layout, extra: &[String]) -> Vec<String> {
    let pki = &l.pki;
    let mut args = vec![
        flag("etcd-servers", l.etcd_url()),
        flag("bind-address", l.bind_address),
        flag("secure-port", l.apiserver_port),
        // Without an explicit cert dir kube-apiserver would write into /var/run/kubernetes.
        flag("cert-dir", l.work_dir.join("pki").display()),
        flag("tls-cert-file", pki.serving_cert.display()),
        flag("tls-private-key-file", pki.serving_key.display()),
        flag("client-ca-file", pki.ca_cert.display()),
        flag(
            "authorization-mode",
            if l.node.is_some() {
                "Node,RBAC"
            } else {
                "RBAC"
            },
        ),
        flag("enable-admission-plugins", EXTRA_ADMISSION_PLUGINS),
        flag("service-account-issuer", format!("{}/", l.api_url())),
        // The discovery document's key-set URL defaults to the auto-detected external address,
        // which a loopback-bound apiserver does not listen on: name the URL that serves it.
        flag(
            "service-account-jwks-uri",
            format!("{}/openid/v1/jwks", l.api_url()),
        ),
        flag("service-account-key-file", pki.sa_pub.display()),
        flag("service-account-signing-key-file", pki.sa_key.display()),
        flag("service-cluster-ip-range", "10.0.0.0/24"),
        flag("allow-privileged", true),
        flag("audit-policy-file", l.audit_policy.display()),
        flag("audit-log-path", l.audit_log.display()),
        // Write each event before answering, so a test reading the log right after a request
        // finds it (this is the log backend's default; stated because tests rely on it).
        flag("audit-log-mode", "blocking"),
        // On SIGTERM, end open watches after 2 s. Without it the HTTP server waits its full 60 s
        // shutdown timeout for every client holding a watch (kube-controller-manager, the
        // operator under test), which made each stop or restart take a minute (measured).
        flag("shutdown-watch-termination-grace-period", "2s"),
    ];
    // The address the `kubernetes` Service's endpoints name, for pods. kube-apiserver refuses a
    // loopback one, and picks the host's own address when the flag is absent.
    if !l.bind_address.is_loopback() {
        args.push(flag("advertise-address", l.bind_address));
    }
    if let Some(node) = &pki.node {
        // logs and exec go to the kubelet by its InternalIP, with a certificate it trusts.
        args.extend([
            flag(
                "kubelet-client-certificate",
                node.apiserver_kubelet_client_cert.display(),
            ),
            flag(
                "kubelet-client-key",
                node.apiserver_kubelet_client_key.display(),
            ),
            flag("kubelet-certificate-authority", pki.ca_cert.display()),
            flag("kubelet-preferred-address-types", "InternalIP"),
        ]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// kube-controller-manager's flags: only the controllers in [`CONTROLLERS`], no serving port
/// (avoids clashes on 10257 between parallel runs), no leader election, admin credentials.
pub fn controller_manager_args(l: &Layout) -> Vec<String> {
    let controllers = match l.node {
        Some(_) => format!("{CONTROLLERS},{NODE_CONTROLLERS}"),
        None => CONTROLLERS.to_string(),
    };
    vec![
        flag("kubeconfig", l.kubeconfig.display()),
        flag("controllers", controllers),
        flag("secure-port", 0),
        flag("leader-elect", false),
        flag("use-service-account-credentials", false),
        // The token controller signs legacy token Secrets with the apiserver's SA key and puts
        // the CA in them; without these flags it is silently disabled.
        flag("service-account-private-key-file", l.pki.sa_key.display()),
        flag("root-ca-file", l.pki.ca_cert.display()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let dir = Path::new("/w");
        let p = |n: &str| dir.join("pki").join(n);
        let pki = Pki {
            ca_cert: p("ca.crt"),
            serving_cert: p("apiserver.crt"),
            serving_key: p("apiserver.key"),
            admin_cert: p("admin.crt"),
            admin_key: p("admin.key"),
            sa_key: p("sa.key"),
            sa_pub: p("sa.pub"),
            node: None,
        };
        Layout::new(dir, pki, 2379, 2380, 6443)
    }

    #[test]
    fn the_apiserver_runs_rbac_the_production_admission_plugins_and_an_audit_log() {
        let args = apiserver_args(&layout(), &["--v=2".into()]);
        for want in [
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
            "--audit-log-path=/w/audit.log",
            "--audit-policy-file=/w/audit-policy.yaml",
            "--secure-port=6443",
            "--bind-address=127.0.0.1",
            "--etcd-servers=http://127.0.0.1:2379",
            "--service-account-issuer=https://127.0.0.1:6443/",
            "--service-account-jwks-uri=https://127.0.0.1:6443/openid/v1/jwks",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--client-ca-file=/w/pki/ca.crt",
            "--shutdown-watch-termination-grace-period=2s",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--disable-admission-plugins")),
            "no default admission plugin may be disabled"
        );
        // kube-apiserver exits at start-up on a loopback advertise address.
        assert!(!args.iter().any(|a| a.starts_with("--advertise-address")));
        assert_eq!(args.last().map(String::as_str), Some("--v=2"));
    }

    #[test]
    fn etcd_listens_on_loopback_without_fsync() {
        let args = etcd_args(&layout());
        assert!(args.contains(&"--listen-client-urls=http://127.0.0.1:2379".to_string()));
        assert!(args.contains(&"--listen-peer-urls=http://127.0.0.1:2380".to_string()));
        assert!(args.contains(&"--unsafe-no-fsync=true".to_string()));
        assert!(args.contains(&"--data-dir=/w/etcd".to_string()));
    }

    #[test]
    fn a_control_plane_with_a_node_authorizes_nodes_calls_its_kubelet_and_runs_workloads() {
        let mut l = layout();
        assert!(!controller_manager_args(&l)
            .iter()
            .any(|a| a.contains("deployment-controller")));
        l.bind_address = IpAddr::V4(Ipv4Addr::new(10, 244, 77, 1));
        l.pki.node = Some(crate::certs::NodePki {
            kubelet_client_cert: "/w/pki/kc.crt".into(),
            kubelet_client_key: "/w/pki/kc.key".into(),
            kubelet_serving_cert: "/w/pki/ks.crt".into(),
            kubelet_serving_key: "/w/pki/ks.key".into(),
            apiserver_kubelet_client_cert: "/w/pki/akc.crt".into(),
            apiserver_kubelet_client_key: "/w/pki/akc.key".into(),
        });
        l.node = Some(NodeLayout {
            name: "127.0.0.1".into(),
            kubelet_kubeconfig: "/w/kubelet.kubeconfig".into(),
        });
        let args = apiserver_args(&l, &[]);
        for want in [
            "--authorization-mode=Node,RBAC",
            "--bind-address=10.244.77.1",
            "--advertise-address=10.244.77.1",
            "--service-account-issuer=https://10.244.77.1:6443/",
            "--kubelet-client-certificate=/w/pki/akc.crt",
            "--kubelet-preferred-address-types=InternalIP",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        let kcm = controller_manager_args(&l);
        assert!(kcm.contains(&format!("--controllers={CONTROLLERS},{NODE_CONTROLLERS}")));
    }

    #[test]
    fn the_controller_manager_runs_gc_namespace_and_serviceaccount_controllers_without_a_port() {
        let args = controller_manager_args(&layout());
        assert!(args.contains(&format!("--controllers={CONTROLLERS}")));
        assert!(CONTROLLERS.contains("garbage-collector-controller"));
        assert!(CONTROLLERS.contains("namespace-controller"));
        assert!(CONTROLLERS.contains("clusterrole-aggregation-controller"));
        assert!(args.contains(&"--secure-port=0".to_string()));
        assert!(args.contains(&"--leader-elect=false".to_string()));
        assert!(args.contains(&"--kubeconfig=/w/admin.kubeconfig".to_string()));
    }

    #[test]
    fn the_audit_policy_logs_every_request_at_metadata() {
        let policy: serde_yaml::Value = serde_yaml::from_str(AUDIT_POLICY).unwrap();
        assert_eq!(policy["kind"], "Policy");
        assert_eq!(policy["rules"][0]["level"], "Metadata");
    }
}
