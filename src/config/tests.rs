use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut v = vec!["x"];
    v.extend_from_slice(args);
    Config::from_args(Cli::parse_from(v).run)
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn defaults_are_sane() {
    let c = parse(&[]).unwrap();
    assert!(c.watch_namespaces.is_empty());
    assert!(c.watches_namespace("anything"));
    assert_eq!(c.api_mode, ApiMode::Ga);
    assert!(c.leader_election.is_none());
    assert!(c.default_credentials.is_none());
    assert!(!c.allow_insecure_http, "plain http must be opt-in");
}

#[test]
fn plain_http_is_allowed_only_by_the_explicit_flag() {
    assert!(
        parse(&["--allow-insecure-http"])
            .unwrap()
            .allow_insecure_http
    );
    assert!(
        parse(&["--allow-insecure-http", "true"])
            .unwrap()
            .allow_insecure_http
    );
    assert!(
        !parse(&["--allow-insecure-http", "false"])
            .unwrap()
            .allow_insecure_http
    );
}

#[test]
fn watched_namespaces_and_default_credentials_parse() {
    let c = parse(&[
        "--watch-namespaces",
        "a, b",
        "--default-credentials-secret",
        "acs-system/acs",
        "--default-credentials-key",
        "primaryConnectionString",
        "--acs-api-mode",
        "preview",
    ])
    .unwrap();
    assert_eq!(c.watch_namespaces, ["a", "b"]);
    assert!(c.watches_namespace("b") && !c.watches_namespace("c"));
    let d = c.default_credentials.unwrap();
    assert_eq!(
        (d.namespace.as_str(), d.name.as_str()),
        ("acs-system", "acs")
    );
    assert_eq!(d.key, "primaryConnectionString");
    assert_eq!(c.api_mode, ApiMode::Preview);
}

#[test]
fn bad_flag_combinations_are_rejected() {
    assert!(matches!(
        parse(&["--default-credentials-secret", "nope"]),
        Err(ConfigError::DefaultCredentialsFormat)
    ));
    assert!(matches!(
        parse(&["--concurrency", "0"]),
        Err(ConfigError::Concurrency)
    ));
    assert!(matches!(
        parse(&[
            "--leader-election",
            "true",
            "--leader-election-renew-deadline",
            "20s"
        ]),
        Err(ConfigError::LeaderTimings)
    ));
}
