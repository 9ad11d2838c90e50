//! The emulator driven over real sockets (TLS and plain HTTP) with hand-signed requests: every
//! route's happy path and error shape, exact authentication failures, revocation ordering,
//! validation verdicts, key regeneration, persistence, rate limits and fault injection; and the
//! Entra ID stand-in (token endpoint, discovery, bearer tokens on the Identity API).

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod authentication;
mod entra_bearer;
mod entra_discovery;
mod entra_support;
mod entra_tokens;
mod identity_api;
mod oidc_issuer;
mod operations;
mod support;
mod tokens;
