//! acs-identity-operator: a Kubernetes operator that turns `CommunicationUser` and
//! `CommunicationToken` resources into Azure Communication Services identities and access
//! tokens, plus a faithful local emulator of the ACS Identity API for development and tests.

pub mod acs;
pub mod api;
pub mod crd;
pub mod emulator;
pub mod telemetry;
