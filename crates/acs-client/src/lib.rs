//! ACS Identity data-plane client: connection strings, HMAC request signing, typed calls and
//! typed errors. `hmac` is pure and shared with the emulator, which verifies what it signs.

pub mod bearer;
pub mod client;
pub mod connection;
pub mod error;
pub mod hmac;
pub mod models;
pub mod options;
pub mod ratelimit;
pub mod request;
pub mod retry;

pub use bearer::{BearerSource, BearerToken, CredentialFailure};
pub use client::{AcsClient, ApiMode, ClientOptions, CreateIdentity, CreatedIdentity};
pub use connection::{AccessKey, ConnectionString, ConnectionStringError};
pub use error::{error_chain, AcsError, ErrorChain};
pub use models::{AccessToken, Identity, Scope, TokenString};
pub use options::{MutationGate, RequestObserver};
pub use ratelimit::{RateLimitError, RateLimiter};
pub use retry::{Idempotency, RetryPolicy};
