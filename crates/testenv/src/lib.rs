//! acs-testenv: a real local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager on 127.0.0.1, with TLS, RBAC, production admission plugins and an audit
//! log) for the operator's tests, the demo and the benchmark. Binaries are pinned and come from
//! `TEST_ASSET_*`, `KUBEBUILDER_ASSETS`, or the project's cache, built from the Go module proxy
//! when missing.
//!
//! Environment variables:
//!
//! | variable | effect |
//! |---|---|
//! | `TEST_ASSET_KUBE_APISERVER`, `TEST_ASSET_ETCD`, … | use this file for one binary (envtest naming) |
//! | `KUBEBUILDER_ASSETS` | directory searched before the project cache |
//! | `ACS_K8S_VERSION` | Kubernetes release: `1.37` (default, `v1.37.2`) or `1.32` (`v1.32.13`, the oldest supported); selects the cache dir and what is built |
//! | `ACS_OPERATOR_CACHE` | cache root (default `${XDG_CACHE_HOME:-~/.cache}/acs-identity-operator`) |
//! | `ACS_TESTENV_BUILD_SCRIPT` | build script to run when binaries are missing (default `tools/build-bins.sh`) |
//! | `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT` / `..._STOP_TIMEOUT` | Go durations; defaults 60s / 20s |
//! | `ACS_TESTENV_KEEP_WORK_DIR=1` | keep logs, audit log and certificates after stopping |
//! | `ACS_TESTENV_APISERVER_ARGS` | extra kube-apiserver flags, whitespace-separated |
//! | `ACS_TESTENV_BIND_ADDRESS` | address kube-apiserver binds to and advertises (default 127.0.0.1) |
//! | `ACS_TESTENV_NODE_NAME` | serve a node of this name: Node authorization, kubelet certificates and kubeconfig, workload controllers (`scripts/node.sh` starts the kubelet) |
//! | `ACS_TESTENV_CRDS_DIR` | CRDs installed into the shared control plane (default the workspace's `crds/`) |
//!
//! ```no_run
//! # async fn demo() -> Result<(), acs_testenv::Error> {
//! let cp = acs_testenv::shared()?;            // one per test process
//! let ns = acs_testenv::TestNamespace::create(cp, "my-test").await?;
//! let client = cp.client()?;
//! # let _ = (ns, client); Ok(()) }
//! ```

pub mod bins;
pub mod certs;
pub mod components;
pub mod control_plane;
pub mod crds;
pub mod error;
pub mod kubeconfig;
pub mod namespace;
pub mod options;
pub mod process;
pub mod readiness;
pub mod release;
pub mod shared;
mod spawn;
pub mod workdir;

use std::path::{Path, PathBuf};

pub use bins::{Binaries, Binary};
pub use control_plane::ControlPlane;
pub use error::{report, Error};
pub use namespace::TestNamespace;
pub use options::Options;
pub use shared::shared;

/// The workspace this crate was compiled from (its `tools/` and `crds/` are found from here).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}
