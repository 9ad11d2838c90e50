//! The emulator driven over real sockets (TLS and plain HTTP) with hand-signed requests: every
//! route's happy path and error shape, exact authentication failures, revocation ordering,
//! validation verdicts, key regeneration, persistence, rate limits and fault injection.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod authentication;
mod identity_api;
mod operations;
mod support;
mod tokens;
