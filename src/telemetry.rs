//! Logging setup: text or JSON, filtered by level or `RUST_LOG`.

use tracing_subscriber::{fmt, EnvFilter};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set.
pub fn init(level: &str, format: LogFormat) {
    let directives = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| level.to_string());
    let filter = EnvFilter::try_new(with_client_directives(&directives))
        .unwrap_or_else(|_| EnvFilter::new(level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The ACS client is a crate of its own (`acs_client`), once the operator's `acs` module: a
/// directive for the operator's target (`acs_identity_operator=debug`) or that module
/// (`acs_identity_operator::acs::client=trace`) covers the client as it always did, unless the
/// filter names `acs_client` itself.
fn with_client_directives(filter: &str) -> String {
    if filter.contains("acs_client") {
        return filter.to_string();
    }
    // Directives for the whole operator first, its `acs` module's after: of two directives for
    // one target the later wins, and the module's was the more specific one.
    let (mut whole, mut module) = (Vec::new(), Vec::new());
    for d in filter.split(',') {
        let Some(rest) = d.trim().strip_prefix("acs_identity_operator") else {
            continue;
        };
        let (rest, into) = match rest.strip_prefix("::acs") {
            Some(rest) => (rest, &mut module),
            // Another module of the operator.
            None if rest.starts_with(':') => continue,
            None => (rest, &mut whole),
        };
        if rest.is_empty() || rest.starts_with(['=', '[', ':']) {
            into.push(format!("acs_client{rest}"));
        }
    }
    let mirrored: Vec<String> = whole.into_iter().chain(module).collect();
    if mirrored.is_empty() {
        filter.to_string()
    } else {
        format!("{filter},{}", mirrored.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::with_client_directives as f;

    #[test]
    fn a_directive_for_the_operator_covers_its_acs_client_crate() {
        assert_eq!(f("info"), "info");
        assert_eq!(
            f("info,acs_identity_operator=trace"),
            "info,acs_identity_operator=trace,acs_client=trace"
        );
        assert_eq!(
            f("acs_identity_operator::acs::client=debug"),
            "acs_identity_operator::acs::client=debug,acs_client::client=debug"
        );
        assert_eq!(
            f("acs_identity_operator"),
            "acs_identity_operator,acs_client"
        );
        // Other modules of the operator are not the client; a filter naming the client wins.
        assert_eq!(
            f("acs_identity_operator::controller=debug"),
            "acs_identity_operator::controller=debug"
        );
        assert_eq!(
            f("acs_identity_operator::acsx=debug"),
            "acs_identity_operator::acsx=debug"
        );
        // The module's level wins over the whole operator's, as it did.
        assert_eq!(
            f("acs_identity_operator::acs=warn,acs_identity_operator=debug"),
            "acs_identity_operator::acs=warn,acs_identity_operator=debug,acs_client=debug,acs_client=warn"
        );
        assert_eq!(
            f("acs_identity_operator=trace,acs_client=info"),
            "acs_identity_operator=trace,acs_client=info"
        );
    }
}
