//! Finding the control-plane binaries: per-binary `TEST_ASSET_*` overrides, then
//! `$KUBEBUILDER_ASSETS`, then the project's versioned cache, else building them into that cache
//! with `tools/build-bins.sh` (release downloads are unreachable, so the Go module proxy is the
//! only source). The lookup is pure over an environment function so its order is unit-tested.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

/// The main pinned Kubernetes version of kube-apiserver, kube-controller-manager and kubectl
/// (`crate::release` selects another with `ACS_K8S_VERSION`).
pub const K8S_VERSION: &str = crate::release::MAIN;
/// The pinned etcd version.
pub const ETCD_VERSION: &str = "v3.6.14";
/// The pinned helm version.
pub const HELM_VERSION: &str = "v3.21.4";
/// The Kubernetes minor the workspace's k8s-openapi feature (`v1_33`, the earliest k8s-openapi
/// 0.29 offers) targets; an older apiserver does not serve every field the types know (the
/// operator's compatibility tier runs on 1.32, which is expected to warn here).
const OPENAPI_MINOR: u32 = 33;

/// Overrides where `tools/build-bins.sh` is found (by default relative to this crate's source).
pub const BUILD_SCRIPT_ENV: &str = "ACS_TESTENV_BUILD_SCRIPT";

/// One of the binaries the harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    KubeApiserver,
    KubeControllerManager,
    Kubectl,
    Etcd,
    Helm,
}

impl Binary {
    /// Every binary, in the order they are resolved and listed.
    pub const ALL: [Binary; 5] = [
        Binary::KubeApiserver,
        Binary::KubeControllerManager,
        Binary::Kubectl,
        Binary::Etcd,
        Binary::Helm,
    ];

    /// The file name of the binary.
    pub fn name(self) -> &'static str {
        match self {
            Binary::KubeApiserver => "kube-apiserver",
            Binary::KubeControllerManager => "kube-controller-manager",
            Binary::Kubectl => "kubectl",
            Binary::Etcd => "etcd",
            Binary::Helm => "helm",
        }
    }

    /// The envtest-style override variable, e.g. `TEST_ASSET_KUBE_APISERVER`.
    pub fn asset_env_var(self) -> String {
        asset_env_var(self.name())
    }

    fn index(self) -> usize {
        match self {
            Binary::KubeApiserver => 0,
            Binary::KubeControllerManager => 1,
            Binary::Kubectl => 2,
            Binary::Etcd => 3,
            Binary::Helm => 4,
        }
    }
}

/// envtest's naming rule: `TEST_ASSET_` + the upper-cased name, each run of non-alphanumerics
/// turned into one `_` (controller-runtime `process/bin_path_finder.go`).
pub fn asset_env_var(name: &str) -> String {
    let mut out = String::from("TEST_ASSET_");
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// Where a resolved binary came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A `TEST_ASSET_*` variable (its name).
    TestAsset(String),
    /// `$KUBEBUILDER_ASSETS/<name>`.
    KubebuilderAssets,
    /// The project's versioned cache.
    Cache,
}

/// The directory `tools/build-bins.sh` builds Kubernetes `release` into, computed the same way
/// as the script:
/// `${ACS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-identity-operator}/k8s-<release>-…/bin`.
/// Empty variables count as unset, as with bash's `:-`.
pub fn cache_dir(env: &dyn Fn(&str) -> Option<OsString>, release: &str) -> Option<PathBuf> {
    let root = match non_empty(env, "ACS_OPERATOR_CACHE") {
        Some(root) => PathBuf::from(root),
        None => {
            let base = match non_empty(env, "XDG_CACHE_HOME") {
                Some(xdg) => PathBuf::from(xdg),
                None => PathBuf::from(non_empty(env, "HOME")?).join(".cache"),
            };
            base.join("acs-identity-operator")
        }
    };
    Some(
        root.join(format!(
            "k8s-{release}-etcd-{ETCD_VERSION}-helm-{HELM_VERSION}"
        ))
        .join("bin"),
    )
}

fn non_empty(env: &dyn Fn(&str) -> Option<OsString>, key: &str) -> Option<OsString> {
    env(key).filter(|v| !v.is_empty())
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Looks one binary up without building anything: `Ok(None)` means "build it".
///
/// An explicit `TEST_ASSET_*` that points nowhere is an error rather than a fall-through, so a
/// typo never silently tests a different binary.
pub fn lookup(
    binary: Binary,
    env: &dyn Fn(&str) -> Option<OsString>,
    cache: Option<&Path>,
) -> Result<Option<(PathBuf, Source)>, Error> {
    let var = binary.asset_env_var();
    if let Some(path) = non_empty(env, &var) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(Some((path, Source::TestAsset(var))));
        }
        return Err(Error::AssetOverrideMissing { var, path });
    }
    if let Some(dir) = non_empty(env, "KUBEBUILDER_ASSETS") {
        // envtest's assets never include kube-controller-manager or helm, so a miss here falls
        // through to the cache instead of failing.
        let path = PathBuf::from(dir).join(binary.name());
        if is_executable(&path) {
            return Ok(Some((path, Source::KubebuilderAssets)));
        }
    }
    if let Some(dir) = cache {
        let path = dir.join(binary.name());
        if is_executable(&path) {
            return Ok(Some((path, Source::Cache)));
        }
    }
    Ok(None)
}

/// The resolved path of every binary.
#[derive(Clone, Debug)]
pub struct Binaries {
    paths: [PathBuf; 5],
    sources: [Source; 5],
}

impl Binaries {
    /// Resolves every binary from the process environment, running `tools/build-bins.sh` once
    /// if any is missing. The cache searched and built is that of the release `ACS_K8S_VERSION`
    /// selects. Blocking: a first build takes minutes.
    pub fn resolve() -> Result<Binaries, Error> {
        let env = |k: &str| std::env::var_os(k);
        let release = crate::release::selected(&env)?;
        let cache = cache_dir(&env, release);
        if let Some(found) = Self::lookup_all(&env, cache.as_deref())? {
            return Ok(found);
        }
        let dir = run_build_script(release)?;
        // The script prints the directory it built into; prefer it over our own computation so a
        // disagreement between the two shows up as a clear "still missing" error.
        let built = Self::lookup_all(&env, Some(&dir))?;
        match built {
            Some(found) => Ok(found),
            None => {
                let missing = Binary::ALL
                    .into_iter()
                    .find(|b| !is_executable(&dir.join(b.name())))
                    .unwrap_or(Binary::KubeApiserver);
                Err(Error::StillMissing {
                    binary: missing.name(),
                    dir,
                })
            }
        }
    }

    fn lookup_all(
        env: &dyn Fn(&str) -> Option<OsString>,
        cache: Option<&Path>,
    ) -> Result<Option<Binaries>, Error> {
        let mut paths: Vec<PathBuf> = Vec::with_capacity(5);
        let mut sources: Vec<Source> = Vec::with_capacity(5);
        for binary in Binary::ALL {
            match lookup(binary, env, cache)? {
                Some((path, source)) => {
                    paths.push(path);
                    sources.push(source);
                }
                None => return Ok(None),
            }
        }
        match (paths.try_into(), sources.try_into()) {
            (Ok(paths), Ok(sources)) => Ok(Some(Binaries { paths, sources })),
            _ => Ok(None),
        }
    }

    /// The path of one binary.
    pub fn path(&self, binary: Binary) -> &Path {
        &self.paths[binary.index()]
    }

    /// Where one binary was found.
    pub fn source(&self, binary: Binary) -> &Source {
        &self.sources[binary.index()]
    }

    /// The directory holding kube-apiserver (all binaries share it unless overridden one by one).
    pub fn dir(&self) -> &Path {
        self.path(Binary::KubeApiserver)
            .parent()
            .unwrap_or_else(|| Path::new("."))
    }

    /// Runs `kube-apiserver --version` and returns its version string (e.g. `v1.37.2`), logging
    /// it and warning when the server is older than the Kubernetes version the types target.
    pub fn apiserver_version(&self) -> Result<String, Error> {
        let path = self.path(Binary::KubeApiserver);
        let out = Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Version {
                path: path.to_path_buf(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .split_whitespace()
            .find(|w| w.starts_with('v'))
            .unwrap_or("unknown")
            .to_string();
        tracing::info!(%version, path = %path.display(), "kube-apiserver --version");
        match minor_of(&version) {
            Some(minor) if minor < OPENAPI_MINOR => tracing::warn!(
                %version,
                "kube-apiserver is older than the Kubernetes 1.{OPENAPI_MINOR} API the crate is compiled for"
            ),
            Some(_) => {}
            None => tracing::warn!(%version, "cannot parse the kube-apiserver version"),
        }
        Ok(version)
    }
}

/// The minor number of a `v1.<minor>.<patch>` version.
fn minor_of(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// The build script: `$ACS_TESTENV_BUILD_SCRIPT`, else `tools/build-bins.sh` of the workspace
/// this crate was compiled from.
pub fn build_script() -> PathBuf {
    match std::env::var_os(BUILD_SCRIPT_ENV).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => crate::workspace_root().join("tools/build-bins.sh"),
    }
}

/// Runs the build script for `release` (its progress goes to our stderr) and returns the
/// directory it printed.
fn run_build_script(release: &str) -> Result<PathBuf, Error> {
    let script = build_script();
    tracing::info!(script = %script.display(), %release, "control-plane binaries missing; building them (first time: ~15-25 min)");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--kubernetes", release])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::RunBuildScript {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::BuildScriptFailed {
            script,
            status: out.status,
        });
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let dir = printed.lines().last().unwrap_or("").trim();
    if dir.is_empty() {
        let env = |k: &str| std::env::var_os(k);
        return cache_dir(&env, release).ok_or(Error::NoCacheDir);
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn fake_binary(dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn asset_variables_follow_envtest_naming() {
        assert_eq!(
            Binary::KubeApiserver.asset_env_var(),
            "TEST_ASSET_KUBE_APISERVER"
        );
        assert_eq!(
            Binary::KubeControllerManager.asset_env_var(),
            "TEST_ASSET_KUBE_CONTROLLER_MANAGER"
        );
        assert_eq!(Binary::Etcd.asset_env_var(), "TEST_ASSET_ETCD");
        assert_eq!(asset_env_var("my--odd.bin_2"), "TEST_ASSET_MY_ODD_BIN_2");
    }

    #[test]
    fn a_test_asset_variable_wins_over_kubebuilder_assets_and_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let own = fake_binary(&tmp.path().join("own"), "my-etcd");
        let assets = tmp.path().join("assets");
        fake_binary(&assets, "etcd");
        let cache = tmp.path().join("cache");
        fake_binary(&cache, "etcd");
        let env = env_of(&[("TEST_ASSET_ETCD", &own), ("KUBEBUILDER_ASSETS", &assets)]);
        let found = lookup(Binary::Etcd, &env, Some(&cache)).unwrap();
        assert_eq!(
            found,
            Some((own, Source::TestAsset("TEST_ASSET_ETCD".into())))
        );
    }

    #[test]
    fn kubebuilder_assets_win_over_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let assets = tmp.path().join("assets");
        let in_assets = fake_binary(&assets, "kube-apiserver");
        let cache = tmp.path().join("cache");
        fake_binary(&cache, "kube-apiserver");
        let env = env_of(&[("KUBEBUILDER_ASSETS", &assets)]);
        let found = lookup(Binary::KubeApiserver, &env, Some(&cache)).unwrap();
        assert_eq!(found, Some((in_assets, Source::KubebuilderAssets)));
    }

    #[test]
    fn a_binary_absent_from_kubebuilder_assets_falls_through_to_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let assets = tmp.path().join("assets");
        fake_binary(&assets, "kube-apiserver");
        let cache = tmp.path().join("cache");
        let in_cache = fake_binary(&cache, "helm");
        let env = env_of(&[("KUBEBUILDER_ASSETS", &assets)]);
        let found = lookup(Binary::Helm, &env, Some(&cache)).unwrap();
        assert_eq!(found, Some((in_cache, Source::Cache)));
    }

    #[test]
    fn a_binary_found_nowhere_asks_for_a_build() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_of(&[]);
        assert_eq!(
            lookup(Binary::Kubectl, &env, Some(tmp.path())).unwrap(),
            None
        );
    }

    #[test]
    fn a_test_asset_variable_pointing_nowhere_is_an_error_not_a_fallback() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        fake_binary(&cache, "etcd");
        let missing = tmp.path().join("nope");
        let env = env_of(&[("TEST_ASSET_ETCD", &missing)]);
        let err = lookup(Binary::Etcd, &env, Some(&cache)).unwrap_err();
        assert!(matches!(err, Error::AssetOverrideMissing { var, .. } if var == "TEST_ASSET_ETCD"));
    }

    #[test]
    fn a_non_executable_file_does_not_count_as_a_binary() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("kubectl"), "not executable").unwrap();
        let env = env_of(&[]);
        assert_eq!(
            lookup(Binary::Kubectl, &env, Some(tmp.path())).unwrap(),
            None
        );
    }

    #[test]
    fn the_cache_dir_matches_the_build_script_layout() {
        let suffix = "k8s-v1.37.2-etcd-v3.6.14-helm-v3.21.4/bin";
        let env = env_of(&[("HOME", Path::new("/home/u"))]);
        assert_eq!(
            cache_dir(&env, K8S_VERSION).unwrap(),
            Path::new("/home/u/.cache/acs-identity-operator").join(suffix)
        );
        let env = env_of(&[
            ("HOME", Path::new("/home/u")),
            ("XDG_CACHE_HOME", Path::new("/xdg")),
        ]);
        assert_eq!(
            cache_dir(&env, K8S_VERSION).unwrap(),
            Path::new("/xdg/acs-identity-operator").join(suffix)
        );
        let env = env_of(&[
            ("HOME", Path::new("/home/u")),
            ("XDG_CACHE_HOME", Path::new("/xdg")),
            ("ACS_OPERATOR_CACHE", Path::new("/c")),
        ]);
        assert_eq!(
            cache_dir(&env, K8S_VERSION).unwrap(),
            Path::new("/c").join(suffix)
        );
        assert_eq!(
            cache_dir(&env, crate::release::OLDEST).unwrap(),
            Path::new("/c").join("k8s-v1.32.13-etcd-v3.6.14-helm-v3.21.4/bin")
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let env = env_of(&[
            ("HOME", Path::new("/home/u")),
            ("ACS_OPERATOR_CACHE", Path::new("")),
            ("TEST_ASSET_KUBECTL", Path::new("")),
        ]);
        assert!(cache_dir(&env, K8S_VERSION)
            .unwrap()
            .starts_with("/home/u/.cache/acs-identity-operator"));
        let tmp = tempfile::tempdir().unwrap();
        let in_cache = fake_binary(tmp.path(), "kubectl");
        assert_eq!(
            lookup(Binary::Kubectl, &env, Some(tmp.path())).unwrap(),
            Some((in_cache, Source::Cache))
        );
    }

    #[test]
    fn the_cache_dir_agrees_with_the_build_script_for_every_release() {
        for release in crate::release::ALL {
            let out = Command::new("bash")
                .arg(build_script())
                .args(["--kubernetes", release, "--print-dir"])
                .env("ACS_OPERATOR_CACHE", "/tmp/acs-cache-probe")
                .env_remove(crate::release::VERSION_ENV)
                .output()
                .unwrap();
            assert!(out.status.success(), "{release}");
            let printed = String::from_utf8(out.stdout).unwrap();
            let env = env_of(&[("ACS_OPERATOR_CACHE", Path::new("/tmp/acs-cache-probe"))]);
            assert_eq!(Path::new(printed.trim()), cache_dir(&env, release).unwrap());
        }
    }

    #[test]
    fn minor_versions_parse_from_apiserver_versions() {
        assert_eq!(minor_of("v1.37.2"), Some(37));
        assert_eq!(minor_of("v0.0.0-master+$Format:%H$"), Some(0));
        assert_eq!(minor_of("unknown"), None);
    }
}
