//! The node tier: the operator's own image installed by its Helm chart on a real node (kubelet,
//! containerd, runc), and pods that read the tokens it writes. It needs the node that
//! `scripts/node.sh up` starts and describes in `target/node/env`; `scripts/test.sh` starts it,
//! runs this binary and stops it. Without that environment every test fails (never skips).
//!
//! The tests share the node and one cluster-wide release, so they take turns
//! (`cluster::exclusive`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_tier;
