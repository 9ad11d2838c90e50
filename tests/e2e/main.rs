//! End-to-end tests on a real control plane (etcd, kube-apiserver, kube-controller-manager from
//! `acs-testenv`). All modules live in this one test binary so that `cargo test` starts one
//! control plane per run and every test shares it, each in its own namespace.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acs_endpoints;
mod admission;
mod backoff;
mod chart;
mod deletion_refused;
mod drift;
mod entra;
mod fencing;
mod harness;
mod kubectl_acs;
mod lanes;
mod leader;
mod operator_runtime;
mod ownership;
mod requests;
mod revocation_fence;
mod rollout;
mod rollout_argo;
mod rollout_late;
mod service_labels;
mod services;
mod sibling_batch;
mod smoke;
mod support;
mod tenant_isolation;
mod token_lifecycle;
mod upgrade;
mod user_lifecycle;
