//! acs-identity-operator: a Kubernetes operator that turns `CommunicationUser` and
//! `CommunicationToken` resources into Azure Communication Services identities and access
//! tokens. The local emulator of the ACS Identity API is a crate of its own (`crates/emulator`,
//! `acs-emulator`) that builds on this library's `acs` module.

/// The ACS Identity client is its own crate (crates/acs-client), shared with the emulator and
/// the bench; the operator names it `acs`.
pub use acs_client as acs;
pub mod alloc;
pub mod api;
pub mod config;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod endpoint_allow;
pub mod entra;
pub mod kube_version;
pub mod leader;
pub mod metrics;
pub mod ns_map;
pub mod relist;
pub mod rotation;
pub mod sealing;
pub mod secret;
pub mod server;
pub mod stores;
pub mod telemetry;
pub mod token_index;
