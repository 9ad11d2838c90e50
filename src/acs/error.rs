//! Typed ACS errors, classified transient or permanent.

/// An ACS call that failed.
#[derive(Debug, thiserror::Error)]
pub enum AcsError {
    #[error("acs request failed")]
    Placeholder,
}
