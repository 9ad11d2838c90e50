//! The Kubernetes versions the operator supports, and the start-up check that refuses an API
//! server older than the minimum (`controller::run` passes the `/version` call in, so nothing
//! here holds a client).
//!
//! Why 1.32: nothing the operator uses is newer. The CRDs' CEL rules with `messageExpression`
//! and transition rules (`oldSelf`) are GA since 1.29, server-side apply and `events.k8s.io/v1`
//! long before; 1.32 is the oldest release still under AKS LTS. The project's compatibility tier
//! runs the CRDs, every admission case, the user/token lifecycle and the chart on 1.32.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::version::Info;
use tracing::{info, warn};

/// The oldest Kubernetes release the operator supports.
pub const MINIMUM: KubeVersion = KubeVersion {
    major: 1,
    minor: 32,
};
/// The newest Kubernetes release the operator is tested on.
pub const NEWEST_TESTED: KubeVersion = KubeVersion {
    major: 1,
    minor: 37,
};

/// A Kubernetes `major.minor` release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl KubeVersion {
    /// Parses the `major` and `minor` fields of `/version`. Managed offerings append a suffix
    /// (GKE and EKS report minor `"32+"`), so only the leading digits count, as in kubectl.
    pub fn parse(major: &str, minor: &str) -> Option<Self> {
        Some(Self {
            major: leading_number(major)?,
            minor: leading_number(minor)?,
        })
    }

    /// Parses a `gitVersion` such as `v1.32.13` or `v1.32.13-eks-4f2b1c`.
    pub fn from_git_version(git_version: &str) -> Option<Self> {
        let mut parts = git_version
            .strip_prefix('v')
            .unwrap_or(git_version)
            .split('.');
        Self::parse(parts.next()?, parts.next()?)
    }

    /// The server's version from `/version`: `major`/`minor`, else `gitVersion` (some
    /// distributions leave the former empty).
    pub fn of(info: &Info) -> Option<Self> {
        Self::parse(&info.major, &info.minor).or_else(|| Self::from_git_version(&info.git_version))
    }
}

fn leading_number(s: &str) -> Option<u32> {
    let digits = s.trim().split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// The verdict on a server's version.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least [`MINIMUM`].
    Supported(KubeVersion),
    /// The version could not be read; the operator runs and logs a warning rather than refusing
    /// a server it cannot judge.
    Unknown,
}

/// The API server is older than [`MINIMUM`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the Kubernetes API server is version {found} ({git_version}), older than the minimum supported {MINIMUM}; \
     upgrade the cluster to {MINIMUM} or newer"
)]
pub struct TooOld {
    pub found: KubeVersion,
    pub git_version: String,
}

/// Judges a server's `/version`.
pub fn check(info: &Info) -> Result<Verdict, TooOld> {
    match KubeVersion::of(info) {
        Some(found) if found < MINIMUM => Err(TooOld {
            found,
            git_version: info.git_version.clone(),
        }),
        Some(found) => Ok(Verdict::Supported(found)),
        None => Ok(Verdict::Unknown),
    }
}

/// Calls `fetch` (the `/version` request) until the API server answers, retrying transport
/// errors with back-off (an apiserver outage at start-up is waited out, not a crash), then
/// refuses a server older than [`MINIMUM`]. A server that answers `/version` with an error, or
/// with a version that cannot be parsed, cannot be judged and only gets a warning.
pub async fn wait_and_check<F, Fut>(mut fetch: F) -> Result<(), TooOld>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Info, kube::Error>>,
{
    let mut delay = Duration::from_millis(500);
    let info = loop {
        match fetch().await {
            Ok(info) => break info,
            Err(kube::Error::Api(status)) => {
                warn!(code = status.code, minimum = %MINIMUM, "the Kubernetes API server refused /version; cannot check it is supported");
                return Ok(());
            }
            Err(error) => {
                warn!(%error, retry_in = ?delay, "cannot read the Kubernetes API server version");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    match check(&info)? {
        Verdict::Supported(v) => {
            info!(version = %info.git_version, supported = %v, "Kubernetes API server")
        }
        Verdict::Unknown => warn!(
            version = %info.git_version,
            minimum = %MINIMUM,
            "cannot parse the Kubernetes API server version; continuing"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn info(major: &str, minor: &str, git: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            git_version: git.into(),
            ..Default::default()
        }
    }

    fn v(major: u32, minor: u32) -> KubeVersion {
        KubeVersion { major, minor }
    }

    #[test]
    fn major_and_minor_parse_with_a_vendor_suffix() {
        assert_eq!(KubeVersion::parse("1", "32"), Some(v(1, 32)));
        assert_eq!(KubeVersion::parse("1", "32+"), Some(v(1, 32)));
        assert_eq!(KubeVersion::parse("1+", "37-gke.100"), Some(v(1, 37)));
        assert_eq!(KubeVersion::parse("1", ""), None);
        assert_eq!(KubeVersion::parse("", "32"), None);
        assert_eq!(KubeVersion::parse("one", "32"), None);
    }

    #[test]
    fn git_version_is_the_fallback_when_major_and_minor_are_empty() {
        assert_eq!(
            KubeVersion::of(&info("", "", "v1.33.2-eks-4f2b1c")),
            Some(v(1, 33))
        );
        assert_eq!(KubeVersion::of(&info("1", "36", "garbage")), Some(v(1, 36)));
        assert_eq!(KubeVersion::of(&info("", "", "devel")), None);
    }

    #[test]
    fn versions_compare_by_major_then_minor_numerically() {
        assert!(v(1, 9) < v(1, 32));
        assert!(v(1, 31) < MINIMUM);
        assert!(v(2, 0) > NEWEST_TESTED);
        assert!(MINIMUM < NEWEST_TESTED);
    }

    #[test]
    fn the_minimum_and_newer_are_supported() {
        assert_eq!(
            check(&info("1", "32", "v1.32.13")),
            Ok(Verdict::Supported(v(1, 32)))
        );
        assert_eq!(
            check(&info("1", "37+", "v1.37.2")),
            Ok(Verdict::Supported(v(1, 37)))
        );
        assert_eq!(
            check(&info("1", "40", "v1.40.0")),
            Ok(Verdict::Supported(v(1, 40)))
        );
    }

    #[test]
    fn an_older_server_is_refused_naming_the_found_and_the_minimum_version() {
        let err = check(&info("1", "31+", "v1.31.9-gke.1")).unwrap_err();
        assert_eq!(err.found, v(1, 31));
        let text = err.to_string();
        assert!(text.contains("1.31 (v1.31.9-gke.1)"), "{text}");
        assert!(text.contains("minimum supported 1.32"), "{text}");
    }

    #[test]
    fn an_unreadable_version_is_not_refused() {
        assert_eq!(check(&info("", "", "")), Ok(Verdict::Unknown));
    }

    fn transport_error() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::other("connection refused")))
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_is_retried_until_it_answers_then_judged() {
        let calls = AtomicUsize::new(0);
        let result = wait_and_check(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(transport_error())
                } else {
                    Ok(info("1", "31", "v1.31.4"))
                }
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(result.unwrap_err().found, v(1, 31));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_version_request_is_not_a_refusal_of_the_server() {
        let result = wait_and_check(|| async {
            Err(kube::Error::Api(
                kube::core::Status::failure("forbidden", "Forbidden")
                    .with_code(403)
                    .boxed(),
            ))
        })
        .await;
        assert_eq!(result, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_supported_server_passes_at_once() {
        let result = wait_and_check(|| async { Ok(info("1", "32", "v1.32.13")) }).await;
        assert_eq!(result, Ok(()));
    }
}
