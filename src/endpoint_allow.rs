//! Which hosts may receive ACS requests. Credentials name their endpoint (a connection string's
//! `endpoint=`, `spec.credentials.endpoint`), and the operator sends that endpoint an Entra
//! bearer token or HMAC-signed requests whose answers hold identities and tokens; so an
//! endpoint must match this list, set by the administrator (`--allowed-endpoint-hosts`), or the
//! credentials are refused before any request. By default the ACS domains of the public cloud
//! and of Azure Government.

/// The default list: the public cloud's and Azure Government's ACS domains.
pub const DEFAULT: &str = "*.communication.azure.com,*.communication.azure.us";

/// One entry: `*.example.com` (any subdomain) or an exact host (`acs.example.internal`,
/// `127.0.0.1`, `[::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Subdomain(String),
    Exact(String),
}

/// The hosts ACS requests may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<Pattern>);

impl AllowedHosts {
    /// Parses a comma-separated list; an empty entry or a bare `*` is refused.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let e = raw.to_ascii_lowercase();
            let p = match e.strip_prefix("*.") {
                Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                    Pattern::Subdomain(rest.to_string())
                }
                None if !e.contains('*') && !e.contains('/') => Pattern::Exact(e),
                _ => {
                    return Err(format!(
                        "invalid allowed endpoint host {raw:?}: use *.domain or an exact host"
                    ))
                }
            };
            out.push(p);
        }
        if out.is_empty() {
            return Err("the allowed endpoint hosts list is empty".to_string());
        }
        Ok(Self(out))
    }

    /// Whether requests to `endpoint` (`https://host[:port][/...]`) are allowed.
    pub fn permits(&self, endpoint: &str) -> bool {
        let host = host_only(endpoint);
        self.0.iter().any(|p| match p {
            Pattern::Exact(h) => *h == host,
            Pattern::Subdomain(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        })
    }

    /// The list as configured, for messages.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Pattern::Subdomain(d) => format!("*.{d}"),
                Pattern::Exact(h) => h.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for AllowedHosts {
    fn default() -> Self {
        match Self::parse(DEFAULT) {
            Ok(a) => a,
            Err(_) => Self(Vec::new()),
        }
    }
}

/// The host of an endpoint, lower-cased, without scheme, port, path or a trailing dot.
pub fn host_only(endpoint: &str) -> String {
    let hp = crate::acs::connection::host_of(endpoint.trim());
    let host = if let Some(v6) = hp.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => format!("[{h}]"),
            None => hp.to_string(),
        }
    } else {
        hp.rsplit_once(':').map_or(hp, |(h, _)| h).to_string()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_acs_domains_only() {
        let a = AllowedHosts::default();
        for ok in [
            "https://res.communication.azure.com",
            "https://res.unitedstates.communication.azure.com/",
            "https://RES.Communication.Azure.com:443/identities",
            "https://res.communication.azure.us",
        ] {
            assert!(a.permits(ok), "{ok}");
        }
        for bad in [
            "https://communication.azure.com",
            "https://evil.example.com",
            "https://res.communication.azure.com.evil.example",
            "https://evilcommunication.azure.com",
            "https://127.0.0.1:8443",
            "https://res.communication.azure.com@evil.example",
        ] {
            assert!(!a.permits(bad), "{bad}");
        }
    }

    #[test]
    fn exact_hosts_and_ipv6_are_matched_without_the_port() {
        let a = AllowedHosts::parse("127.0.0.1, [::1], *.example.internal").unwrap();
        assert!(a.permits("https://127.0.0.1:44321"));
        assert!(a.permits("https://[::1]:8443/"));
        assert!(a.permits("https://acs.example.internal"));
        assert!(!a.permits("https://127.0.0.2:44321"));
        assert!(!a.permits("https://example.internal"));
        assert_eq!(a.describe(), "127.0.0.1, [::1], *.example.internal");
    }

    #[test]
    fn wildcards_elsewhere_and_empty_lists_are_refused() {
        for bad in ["*", "*.", "a.*.com", "", " , ", "https://x/y"] {
            assert!(AllowedHosts::parse(bad).is_err(), "{bad:?}");
        }
    }
}
