//! Which Kubernetes release the control plane runs: the main one (the whole suite), or the
//! oldest supported one (the compatibility tier), chosen by `ACS_K8S_VERSION`. Each release has
//! its own pinned Go module dir under `tools/` and its own versioned cache directory; this list
//! must agree with `tools/build-bins.sh`, which a unit test checks.

use std::ffi::OsString;

use crate::error::Error;

/// Selects the Kubernetes release (`1.37`, `1.32`, or the full `v1.32.13`); unset means the
/// main release.
pub const VERSION_ENV: &str = "ACS_K8S_VERSION";

/// The release the whole suite, the demo and the benchmark run on.
pub const MAIN: &str = "v1.37.2";
/// The oldest supported release: the compatibility tier runs on it.
pub const OLDEST: &str = "v1.32.13";
/// Every release the harness can build and run.
pub const ALL: [&str; 2] = [MAIN, OLDEST];

/// The release named by `ACS_K8S_VERSION` in `env` (empty counts as unset).
pub fn selected(env: &dyn Fn(&str) -> Option<OsString>) -> Result<&'static str, Error> {
    let Some(raw) = env(VERSION_ENV).filter(|v| !v.is_empty()) else {
        return Ok(MAIN);
    };
    let wanted = raw.to_string_lossy();
    let bare = wanted.trim().trim_start_matches('v');
    // A major alone (`1`) names no release; `1.32` matches `1.32.13` but `1.3` matches nothing.
    let matches = |full: &str| {
        let full = full.trim_start_matches('v');
        full == bare
            || full
                .strip_prefix(bare)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    ALL.into_iter()
        .find(|full| bare.contains('.') && matches(full))
        .ok_or_else(|| Error::UnknownK8sVersion {
            value: wanted.into_owned(),
            known: ALL.join(", "),
        })
}

/// The release selected by the process environment.
pub fn selected_from_env() -> Result<&'static str, Error> {
    selected(&|k| std::env::var_os(k))
}

/// The `minor` of a `v1.<minor>.<patch>` release, as `/version` reports it.
pub fn minor(release: &str) -> &str {
    release.split('.').nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: Option<&str>) -> impl Fn(&str) -> Option<OsString> {
        let value = value.map(OsString::from);
        move |k| (k == VERSION_ENV).then(|| value.clone()).flatten()
    }

    #[test]
    fn unset_or_empty_selects_the_main_release() {
        assert_eq!(selected(&env(None)).unwrap(), MAIN);
        assert_eq!(selected(&env(Some(""))).unwrap(), MAIN);
    }

    #[test]
    fn a_minor_or_a_full_version_selects_its_release() {
        for v in ["1.32", "v1.32", "1.32.13", "v1.32.13", " 1.32 "] {
            assert_eq!(selected(&env(Some(v))).unwrap(), OLDEST, "{v}");
        }
        assert_eq!(selected(&env(Some("1.37"))).unwrap(), MAIN);
    }

    #[test]
    fn an_unknown_or_partial_version_is_an_error_naming_the_known_ones() {
        for v in ["1.31", "1.3", "1", "1.32.12", "latest"] {
            let err = selected(&env(Some(v))).unwrap_err();
            assert!(err.to_string().contains("v1.37.2, v1.32.13"), "{v}: {err}");
        }
    }

    #[test]
    fn minors_are_what_version_reports() {
        assert_eq!(minor(MAIN), "37");
        assert_eq!(minor(OLDEST), "32");
    }
}
