//! Typed calls to the ACS Identity API.
//!
//! CONTRACT (shared with the operator and tests; keep these names):
//! - `ClientOptions { api_mode: ApiMode, ca_pem: Option<Vec<u8>>, request_timeout, max_retries,
//!   ... }` with `Default`.
//! - `AcsClient::new(ConnectionString, ClientOptions) -> Result<AcsClient, AcsError>`.
//! - `create_identity(CreateIdentity { external_id: Option<String>, token: Option<(Vec<Scope>,
//!   Option<u32>)> }) -> Result<CreatedIdentity, AcsError>` (`created: bool` is false when a
//!   preview get-or-create found an existing identity),
//!   `issue_token(id, &[Scope], Option<u32>) -> Result<AccessToken, AcsError>`,
//!   `revoke_tokens(id)`, `delete_identity(id)`, `get_identity(id) -> Result<Identity, AcsError>`.
//! - `AcsClient::endpoint()`, `AcsClient::resource_host()`.

/// Which api-version surface the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiMode {
    #[default]
    Ga,
    Preview,
}

/// Options for [`AcsClient`].
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {}

/// ACS Identity client.
#[derive(Debug, Clone)]
pub struct AcsClient {}
