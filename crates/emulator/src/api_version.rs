//! The api-versions the emulator serves and what each one offers (§1 of the reference).

/// Which generation of the Identity surface an api-version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `2020-07-20-preview2`, the old `azure-communication-administration` SDK.
    Legacy,
    /// The GA surface (`/identities`, `:issueAccessToken`, `:revokeAccessTokens`).
    Ga,
    /// GA plus `externalId` get-or-create and `GET /identities/{id}`.
    Preview,
}

/// One supported api-version and its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    pub name: &'static str,
    pub surface: Surface,
    /// `expiresInMinutes` exists (2022-10-01 on).
    pub custom_expiry: bool,
    /// The scope enum includes `chat.join`, `chat.join.limited`, `voip.join` (2023-10-01 on).
    pub join_scopes: bool,
    /// `POST /teamsUser/:exchangeAccessToken` exists (2022-06-01 on).
    pub teams_exchange: bool,
}

const fn v(
    name: &'static str,
    surface: Surface,
    custom_expiry: bool,
    join_scopes: bool,
    teams_exchange: bool,
) -> ApiVersion {
    ApiVersion {
        name,
        surface,
        custom_expiry,
        join_scopes,
        teams_exchange,
    }
}

/// Every api-version served, oldest first (the order of `api-supported-versions`).
pub const SUPPORTED: &[ApiVersion] = &[
    v("2020-07-20-preview2", Surface::Legacy, false, false, false),
    v("2021-03-07", Surface::Ga, false, false, false),
    v("2021-11-01", Surface::Ga, false, false, false),
    v("2022-06-01", Surface::Ga, false, false, true),
    v("2022-10-01", Surface::Ga, true, false, true),
    v("2023-08-01", Surface::Ga, true, false, true),
    v("2023-10-01", Surface::Ga, true, true, true),
    v("2025-03-02-preview", Surface::Preview, true, true, true),
    v("2025-04-01-preview", Surface::Preview, true, true, true),
    v("2025-06-30", Surface::Ga, true, true, true),
    v("2026-07-22", Surface::Ga, true, true, true),
    v("2026-09-23", Surface::Ga, true, true, true),
];

/// The `api-supported-versions` response header value.
pub fn supported_header() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Looks an api-version up (case-insensitively, as Azure front ends do).
pub fn lookup(name: &str) -> Option<ApiVersion> {
    SUPPORTED
        .iter()
        .find(|v| v.name.eq_ignore_ascii_case(name))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_of_the_issue_is_served_with_its_features() {
        assert_eq!(
            lookup("2020-07-20-preview2").unwrap().surface,
            Surface::Legacy
        );
        assert!(!lookup("2021-03-07").unwrap().custom_expiry);
        assert!(lookup("2022-10-01").unwrap().custom_expiry);
        assert!(!lookup("2022-10-01").unwrap().join_scopes);
        assert!(lookup("2023-10-01").unwrap().join_scopes);
        assert_eq!(
            lookup("2025-04-01-PREVIEW").unwrap().surface,
            Surface::Preview
        );
        assert!(lookup("2026-09-23").is_some());
        assert!(lookup("2024-01-01").is_none());
        assert!(supported_header().starts_with("2020-07-20-preview2, 2021-03-07"));
    }
}
