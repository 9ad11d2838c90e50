//! Routing on the raw request-target. The signature is checked against the target exactly as
//! received (`%3A` from the sync SDK, literal `:` from aiohttp); only routing decodes it.

use serde::Serialize;

use super::api_version::{self, ApiVersion, Surface};
use super::limits::LimitClass;

/// An Identity API operation, named for the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Operation {
    CreateIdentity,
    IssueAccessToken,
    RevokeAccessTokens,
    DeleteIdentity,
    GetIdentity,
    ExchangeTeamsUserAccessToken,
    LegacyCreateIdentity,
    LegacyIssueToken,
    LegacyRevokeTokens,
    LegacyDeleteIdentity,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::CreateIdentity,
        Operation::IssueAccessToken,
        Operation::RevokeAccessTokens,
        Operation::DeleteIdentity,
        Operation::GetIdentity,
        Operation::ExchangeTeamsUserAccessToken,
        Operation::LegacyCreateIdentity,
        Operation::LegacyIssueToken,
        Operation::LegacyRevokeTokens,
        Operation::LegacyDeleteIdentity,
    ];

    /// The name used in stats and in the fault `operations` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateIdentity => "createIdentity",
            Operation::IssueAccessToken => "issueAccessToken",
            Operation::RevokeAccessTokens => "revokeAccessTokens",
            Operation::DeleteIdentity => "deleteIdentity",
            Operation::GetIdentity => "getIdentity",
            Operation::ExchangeTeamsUserAccessToken => "exchangeTeamsUserAccessToken",
            Operation::LegacyCreateIdentity => "legacyCreateIdentity",
            Operation::LegacyIssueToken => "legacyIssueToken",
            Operation::LegacyRevokeTokens => "legacyRevokeTokens",
            Operation::LegacyDeleteIdentity => "legacyDeleteIdentity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The rate-limit class, `None` for operations §10 does not limit.
    pub fn limit_class(self) -> Option<LimitClass> {
        match self {
            Operation::CreateIdentity | Operation::LegacyCreateIdentity => Some(LimitClass::Create),
            Operation::IssueAccessToken | Operation::LegacyIssueToken => Some(LimitClass::Issue),
            Operation::RevokeAccessTokens | Operation::LegacyRevokeTokens => {
                Some(LimitClass::Revoke)
            }
            Operation::DeleteIdentity | Operation::LegacyDeleteIdentity => Some(LimitClass::Delete),
            Operation::ExchangeTeamsUserAccessToken => Some(LimitClass::Exchange),
            Operation::GetIdentity => None,
        }
    }
}

/// A request matched to an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub op: Operation,
    /// The decoded identity id from the path, for per-identity operations.
    pub id: Option<String>,
    pub version: ApiVersion,
}

/// Why a request matched no operation; each maps to a documented 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// 404 `NotFound`.
    NotFound,
    /// 405 `MethodNotAllowed`, with the methods the path does allow.
    MethodNotAllowed(&'static str),
    /// 400 `MissingApiVersionParameter`.
    MissingApiVersion,
    /// 400 `UnsupportedApiVersion`: unknown, or the path does not exist in that version.
    UnsupportedApiVersion(String),
}

/// The shape of a path, before the api-version is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathKind {
    Identities,
    Identity(String),
    IssueToken(String),
    RevokeTokens(String),
    LegacyToken(String),
    TeamsExchange,
}

/// Splits a raw request-target into its raw path and raw query.
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// Matches method and raw request-target to an operation.
pub fn resolve(method: &str, target: &str) -> Result<Routed, RouteError> {
    let (raw_path, raw_query) = split_target(target);
    let path = percent_decode(raw_path).ok_or(RouteError::NotFound)?;
    let kind = classify(&path).ok_or(RouteError::NotFound)?;
    let allowed = match &kind {
        PathKind::Identities
        | PathKind::IssueToken(_)
        | PathKind::RevokeTokens(_)
        | PathKind::LegacyToken(_)
        | PathKind::TeamsExchange => "POST",
        PathKind::Identity(_) => "GET, PATCH, DELETE",
    };
    if !allowed.split(", ").any(|m| m == method) {
        return Err(RouteError::MethodNotAllowed(allowed));
    }
    let version_name =
        query_param(raw_query, "api-version").ok_or(RouteError::MissingApiVersion)?;
    if version_name.is_empty() {
        return Err(RouteError::MissingApiVersion);
    }
    let version = api_version::lookup(&version_name)
        .ok_or_else(|| RouteError::UnsupportedApiVersion(version_name.clone()))?;
    let unsupported = || RouteError::UnsupportedApiVersion(version_name.clone());
    let legacy = version.surface == Surface::Legacy;
    let (op, id) = match (kind, method) {
        (PathKind::Identities, _) if legacy => (Operation::LegacyCreateIdentity, None),
        (PathKind::Identities, _) => (Operation::CreateIdentity, None),
        (PathKind::Identity(id), "DELETE") if legacy => (Operation::LegacyDeleteIdentity, Some(id)),
        (PathKind::Identity(id), "DELETE") => (Operation::DeleteIdentity, Some(id)),
        (PathKind::Identity(id), "PATCH") if legacy => (Operation::LegacyRevokeTokens, Some(id)),
        (PathKind::Identity(id), "GET") if version.surface == Surface::Preview => {
            (Operation::GetIdentity, Some(id))
        }
        (PathKind::Identity(_), _) => return Err(unsupported()),
        (PathKind::IssueToken(id), _) if !legacy => (Operation::IssueAccessToken, Some(id)),
        (PathKind::RevokeTokens(id), _) if !legacy => (Operation::RevokeAccessTokens, Some(id)),
        (PathKind::LegacyToken(id), _) if legacy => (Operation::LegacyIssueToken, Some(id)),
        (PathKind::TeamsExchange, _) if version.teams_exchange => {
            (Operation::ExchangeTeamsUserAccessToken, None)
        }
        _ => return Err(unsupported()),
    };
    Ok(Routed { op, id, version })
}

fn classify(path: &str) -> Option<PathKind> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["identities"] => Some(PathKind::Identities),
        ["identities", id] if !id.is_empty() => Some(PathKind::Identity((*id).to_string())),
        ["identities", id, ":issueAccessToken"] if !id.is_empty() => {
            Some(PathKind::IssueToken((*id).to_string()))
        }
        ["identities", id, ":revokeAccessTokens"] if !id.is_empty() => {
            Some(PathKind::RevokeTokens((*id).to_string()))
        }
        ["identities", id, "token"] if !id.is_empty() => {
            Some(PathKind::LegacyToken((*id).to_string()))
        }
        ["teamsUser", ":exchangeAccessToken"] => Some(PathKind::TeamsExchange),
        _ => None,
    }
}

/// The first value of `name` in a raw query string, percent-decoded (`+` is a space).
pub fn query_param(raw_query: &str, name: &str) -> Option<String> {
    raw_query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "))?;
        (k == name).then(|| percent_decode(&v.replace('+', " ")))?
    })
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "8:acs:2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72-5a3a0d000081";

    #[test]
    fn encoded_and_literal_colons_route_to_the_same_identity() {
        let enc = ID.replace(':', "%3A");
        for target in [
            format!("/identities/{enc}/:issueAccessToken?api-version=2023-10-01"),
            format!("/identities/{ID}/:issueAccessToken?api-version=2023-10-01"),
        ] {
            let r = resolve("POST", &target).unwrap();
            assert_eq!(r.op, Operation::IssueAccessToken);
            assert_eq!(r.id.as_deref(), Some(ID));
        }
    }

    #[test]
    fn every_surface_routes() {
        let cases = [
            (
                "POST",
                "/identities?api-version=2023-10-01",
                Operation::CreateIdentity,
            ),
            (
                "POST",
                "/identities?api-version=2020-07-20-preview2",
                Operation::LegacyCreateIdentity,
            ),
            (
                "DELETE",
                "/identities/x?api-version=2021-03-07",
                Operation::DeleteIdentity,
            ),
            (
                "GET",
                "/identities/x?api-version=2025-04-01-preview",
                Operation::GetIdentity,
            ),
            (
                "PATCH",
                "/identities/x?api-version=2020-07-20-preview2",
                Operation::LegacyRevokeTokens,
            ),
            (
                "POST",
                "/identities/x/token?api-version=2020-07-20-preview2",
                Operation::LegacyIssueToken,
            ),
            (
                "POST",
                "/identities/x/:revokeAccessTokens?api-version=2026-09-23",
                Operation::RevokeAccessTokens,
            ),
            (
                "POST",
                "/teamsUser/:exchangeAccessToken?api-version=2022-06-01",
                Operation::ExchangeTeamsUserAccessToken,
            ),
        ];
        for (m, t, op) in cases {
            assert_eq!(resolve(m, t).unwrap().op, op, "{m} {t}");
        }
    }

    #[test]
    fn bad_routes_and_versions_are_told_apart() {
        assert_eq!(
            resolve("POST", "/nope?api-version=2023-10-01"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            resolve("GET", "/identities?api-version=2023-10-01"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            resolve("POST", "/identities"),
            Err(RouteError::MissingApiVersion)
        );
        assert_eq!(
            resolve("POST", "/identities?api-version=1999-01-01"),
            Err(RouteError::UnsupportedApiVersion("1999-01-01".into()))
        );
        assert!(matches!(
            resolve("GET", "/identities/x?api-version=2023-10-01"),
            Err(RouteError::UnsupportedApiVersion(_))
        ));
        assert!(matches!(
            resolve(
                "POST",
                "/teamsUser/:exchangeAccessToken?api-version=2021-03-07"
            ),
            Err(RouteError::UnsupportedApiVersion(_))
        ));
        assert!(matches!(
            resolve("POST", "/identities/x/token?api-version=2023-10-01"),
            Err(RouteError::UnsupportedApiVersion(_))
        ));
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%3Ab").as_deref(), Some("a:b"));
        assert_eq!(percent_decode("a%3"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(
            query_param("x=1&api-version=2023-10-01", "api-version").as_deref(),
            Some("2023-10-01")
        );
    }
}
