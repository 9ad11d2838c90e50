//! Wire types of the ACS Identity API, shared by the client and the emulator.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ACS token scope, with its exact ACS spelling: `chat`, `voip`, `chat.join`,
/// `chat.join.limited` or `voip.join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Scope {
    /// Chat: create, read and manage chat threads.
    #[serde(rename = "chat")]
    Chat,
    /// Voice and video calling.
    #[serde(rename = "voip")]
    Voip,
    /// Join existing chats only (no thread creation, update or deletion).
    #[serde(rename = "chat.join")]
    ChatJoin,
    /// As chat.join, and cannot add or remove participants.
    #[serde(rename = "chat.join.limited")]
    ChatJoinLimited,
    /// Join existing calls only (cannot start calls, except in Rooms it is invited to).
    #[serde(rename = "voip.join")]
    VoipJoin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Chat,
        Scope::Voip,
        Scope::ChatJoin,
        Scope::ChatJoinLimited,
        Scope::VoipJoin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Voip => "voip",
            Scope::ChatJoin => "chat.join",
            Scope::ChatJoinLimited => "chat.join.limited",
            Scope::VoipJoin => "voip.join",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An access token (a JWT). `Debug` and `Display` print `[redacted]`; [`TokenString::expose`]
/// is the single way to read it, so every use of the raw value is greppable.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenString(String);

impl TokenString {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenString([redacted])")
    }
}

impl fmt::Display for TokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `{"token": ..., "expiresOn": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessToken {
    pub token: TokenString,
    /// As the service writes it, e.g. `2022-11-16T09:48:02.7233445+00:00`.
    pub expires_on: String,
}

impl AccessToken {
    /// `expires_on` parsed; `None` if the service sent something unparsable.
    pub fn expires_at(&self) -> Option<jiff::Timestamp> {
        self.expires_on.parse().ok()
    }
}

/// `{"id": ..., "externalId"?: ..., "lastTokenIssuedAt"?: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_token_issued_at: Option<String>,
}

/// Response of `POST /identities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIdentityResponse {
    pub identity: Identity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<AccessToken>,
}

/// Body of `POST /identities`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIdentityRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_token_with_scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Body of `POST /identities/{id}/:issueAccessToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueTokenRequest {
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i64>,
}

/// `{"error": {...}}`, the `CommunicationErrorResponse` schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ErrorBody>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub innererror: Option<Box<ErrorBody>>,
}

/// Minimum and maximum of `expiresInMinutes`.
pub const MIN_EXPIRES_IN_MINUTES: i64 = 60;
pub const MAX_EXPIRES_IN_MINUTES: i64 = 1440;

/// The api-version of the GA surface the client uses by default.
pub const GA_API_VERSION: &str = "2023-10-01";
/// The preview api-version with `externalId` get-or-create and `GET /identities/{id}`.
pub const PREVIEW_API_VERSION: &str = "2025-04-01-preview";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_keep_their_exact_spelling() {
        for s in Scope::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("pstn"), None);
    }

    #[test]
    fn tokens_print_redacted() {
        let t = TokenString::new("eyJhbGciOi.eyJzZWNyZXQ.c2ln".into());
        assert_eq!(format!("{t}"), "[redacted]");
        assert!(!format!("{t:?}").contains("eyJ"));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"eyJhbGciOi.eyJzZWNyZXQ.c2ln\""
        );
    }
}
