//! Request bodies: the size limit every route shares and the one way to read a body.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::response::{self, Resp};

/// Largest accepted request body; Identity bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The connection failed while it was read.
    Unreadable,
}

/// Reads a whole request body, at most [`MAX_BODY_BYTES`].
pub async fn read(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Unreadable),
    }
}

/// The answer to a body over the limit, shaped like the service's.
pub fn too_large() -> Resp {
    response::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        "The request body is too large.",
        None,
    )
}
