//! ACS Identity data-plane client: connection strings, HMAC request signing, typed calls and
//! typed errors. `hmac` is pure and shared with the emulator, which verifies what it signs.

pub mod client;
pub mod connection;
pub mod error;
pub mod hmac;
pub mod models;

pub use client::{AcsClient, ApiMode, ClientOptions};
pub use connection::{AccessKey, ConnectionString, ConnectionStringError};
pub use error::AcsError;
pub use models::{AccessToken, Identity, Scope, TokenString};
