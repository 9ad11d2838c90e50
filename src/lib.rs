//! acs-identity-operator: a Kubernetes operator that turns `CommunicationUser` and
//! `CommunicationToken` resources into Azure Communication Services identities and access
//! tokens, plus a faithful local emulator of the ACS Identity API for development and tests.

pub mod acs;
pub mod api;
pub mod config;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod emulator;
pub mod leader;
pub mod metrics;
pub mod rotation;
pub mod secret;
pub mod server;
pub mod stores;
pub mod telemetry;
