//! The operator image that the node tests run is not built from the Dockerfile (no Docker engine,
//! and base images cannot be pulled on the test machines): `tools/node/images.sh` assembles an
//! equivalent image from the binary under test. These tests prove that its runtime contract is
//! the Dockerfile's, so the two cannot drift apart:
//! - the Dockerfile's runtime stage is parsed here, by code of its own (not the script's parser),
//!   and the operator image's OCI config must equal what `docker build` would give: user,
//!   entrypoint, cmd, exposed ports, labels, env, working directory;
//! - its layer holds the binary at the Dockerfile's COPY destination, the shared libraries it
//!   loads and the CA roots, and its user is numeric (runAsNonRoot can verify only that);
//! - a changed Dockerfile gives a changed image, so the comparison is not vacuous.
//!
//! Missing tools (umoci, skopeo, gcc, ...) fail the tests: they are never skipped.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dockerfile;
mod oci;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

use dockerfile::*;
use oci::*;

const BINARY: &str = env!("CARGO_BIN_EXE_acs-identity-operator");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The runtime stage's base, and what its own config contributes (distroless `static.bzl`: the
/// nonroot variant's env, user and working directory). `images.sh` models only this base.
const BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";
const BASE_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
];
const BASE_USER: &str = "65532";
const BASE_WORKDIR: &str = "/home/nonroot";

const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

#[test]
fn the_parser_reads_a_dockerfile_that_differs_from_the_repository_one() {
    let sample = r#"# syntax=docker/dockerfile:1
ARG VERSION=1
FROM rust:1-bookworm AS builder
USER 0
RUN cargo build
CMD ["never"]

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.example.title="the \"sample\"" \
      # comments inside a continuation are dropped
      org.example.empty="" other='single quoted'
COPY --from=builder /out/tool /opt/
WORKDIR app
ENV MODE=test PATH=/opt
EXPOSE 9090/UDP 8443
user 1000:1000
ENTRYPOINT ["/opt/tool", "--flag=a b"]
CMD ["serve", "--port", "8443"]
"#;
    let stage = parse_runtime_stage(sample);
    assert_eq!(
        stage,
        RuntimeStage {
            base: BASE.into(),
            user: Some("1000:1000".into()),
            entrypoint: Some(vec!["/opt/tool".into(), "--flag=a b".into()]),
            cmd: Some(vec!["serve".into(), "--port".into(), "8443".into()]),
            exposed_ports: ["9090/udp".to_string(), "8443/tcp".to_string()].into(),
            labels: [
                ("org.example.title", "the \"sample\""),
                ("org.example.empty", ""),
                ("other", "single quoted"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            env: vec![
                ("MODE".into(), "test".into()),
                ("PATH".into(), "/opt".into())
            ],
            workdir: Some("/home/nonroot/app".into()),
            copies: vec![(vec!["/out/tool".into()], "/opt/tool".into())],
            others: vec![],
        }
    );
    let expected = expected_config(&stage);
    assert_eq!(
        expected.env,
        [
            "PATH=/opt",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "MODE=test"
        ]
    );
    // The comparison with the repository's Dockerfile is not vacuous: the sample differs.
    assert_ne!(
        expected,
        expected_config(&parse_runtime_stage(&dockerfile()))
    );

    // The shell form is what Docker runs through /bin/sh (which the image does not have).
    let shell = parse_runtime_stage("FROM scratch\nENTRYPOINT exec tool\nRUN x");
    assert_eq!(
        shell.entrypoint,
        Some(vec!["/bin/sh".into(), "-c".into(), "exec tool".into()])
    );
    assert_eq!(shell.others, ["line 3: RUN x"]);
}

#[test]
fn the_repository_dockerfile_runs_the_copied_binary_as_numeric_nonroot() {
    let stage = parse_runtime_stage(&dockerfile());
    assert!(
        stage.others.is_empty(),
        "the runtime stage has instructions tools/node/images.sh cannot reproduce: {:?}",
        stage.others
    );
    let config = expected_config(&stage);
    assert_eq!(
        config.entrypoint.first().map(String::as_str),
        Some(stage.binary_dest()),
        "the ENTRYPOINT should run the binary the stage copies"
    );
    assert_numeric_nonroot(&config.user);
}

/// runAsNonRoot can verify only a numeric user; distroless' nonroot is 65532.
fn assert_numeric_nonroot(user: &str) {
    let ids: Vec<u32> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("user {user:?} is not numeric"))
        })
        .collect();
    assert_eq!(ids[0], 65532, "user {user:?}");
    assert!(ids.len() <= 2, "user {user:?}");
}

#[test]
fn the_operator_image_follows_the_dockerfile() {
    let stage = parse_runtime_stage(&dockerfile());
    let dest = stage.binary_dest().trim_start_matches('/').to_string();
    let out = tempfile::tempdir().unwrap();
    let refs = build_images(out.path(), BINARY, None);
    assert_eq!(
        refs,
        [
            ("pause", "localhost/acs-pause:node"),
            ("app", "localhost/acs-app:node"),
            ("operator", "localhost/acs-identity-operator:dev"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    );
    let layout = out.path().join("oci");

    // The config is the Dockerfile's.
    let (config, layers) = image(&layout, "operator");
    assert_eq!(config_of(&config), expected_config(&stage));
    assert_eq!(config["architecture"], host_arch());
    assert_eq!(config["os"], "linux");
    assert_numeric_nonroot(config["config"]["User"].as_str().unwrap());

    // The layer holds the binary where the Dockerfile copies it, what it loads, the CA roots,
    // and the nonroot user.
    let contents = paths(&layers);
    for path in [
        dest.as_str(),
        CA_BUNDLE,
        "etc/passwd",
        "etc/group",
        "tmp",
        "home/nonroot",
    ] {
        assert!(contents.contains(path), "{path} not in the operator image");
    }
    for lib in shared_libraries(BINARY) {
        let lib = lib.trim_start_matches('/');
        assert!(
            contents.contains(lib),
            "{lib} (from ldd) not in the operator image"
        );
    }
    let passwd = String::from_utf8(file(&layers, "etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let ca = file(&layers, CA_BUNDLE);
    assert!(
        String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"),
        "{CA_BUNDLE} holds no certificate"
    );

    // The binary in the image is the one under test, stripped of debug sections, and still runs.
    let copied = file(&layers, &dest);
    let input = std::fs::metadata(BINARY).unwrap().len();
    assert!(copied.len() as u64 <= input);
    let extracted = out.path().join("extracted-operator");
    std::fs::write(&extracted, &copied).unwrap();
    std::fs::set_permissions(&extracted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let help = Command::new(&extracted).arg("--help").output().unwrap();
    assert!(
        help.status.success(),
        "the image's binary does not run: {}",
        String::from_utf8_lossy(&help.stderr)
    );

    // The app image has the shell and the tools test pods use; the pause image its binary.
    let (app, app_layers) = image(&layout, "app");
    assert_eq!(strings(&app["config"]["Entrypoint"]), ["/bin/sh"]);
    let app_paths = paths(&app_layers);
    for tool in ["sh", "cat", "cut", "sleep", "date", "busybox"] {
        assert!(
            app_paths.contains(&format!("bin/{tool}")),
            "bin/{tool} not in the app image"
        );
    }
    let (pause, pause_layers) = image(&layout, "pause");
    assert_eq!(strings(&pause["config"]["Entrypoint"]), ["/pause"]);
    assert!(paths(&pause_layers).contains("pause"));

    // The tarballs for `ctr images import`, each named by its reference.
    for (name, reference) in &refs {
        let archive = out.path().join(format!("{name}.tar"));
        assert!(archive.is_file(), "{} missing", archive.display());
        let manifest: Value =
            serde_json::from_slice(&tar("-xOf", &archive, &["manifest.json"])).unwrap();
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!([reference]),
            "{}",
            archive.display()
        );
    }

    // A re-run replaces the outputs with identical images (fixed times, sorted layers) and
    // leaves no staging directory behind.
    let index = std::fs::read(layout.join("index.json")).unwrap();
    build_images(out.path(), BINARY, None);
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_changed_dockerfile_changes_the_image() {
    let original = dockerfile();
    let mut replaced = (0, 0);
    let changed: String = original
        .lines()
        .map(|line| {
            if line.starts_with("USER ") {
                replaced.0 += 1;
                "USER 1000:1000".to_string()
            } else if line.starts_with("CMD ") {
                replaced.1 += 1;
                r#"CMD ["crd", "--output-dir", "/tmp"]"#.to_string()
            } else {
                line.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_eq!(
        replaced,
        (1, 1),
        "the Dockerfile should have one USER and one CMD"
    );

    let dir = tempfile::tempdir().unwrap();
    let changed_path = dir.path().join("Dockerfile");
    std::fs::write(&changed_path, &changed).unwrap();
    let out = dir.path().join("out");
    build_images(&out, BINARY, Some(&changed_path));
    let (config, _) = image(&out.join("oci"), "operator");
    let actual = config_of(&config);

    assert_eq!(actual, expected_config(&parse_runtime_stage(&changed)));
    assert_eq!(actual.user, "1000:1000");
    assert_eq!(actual.cmd, ["crd", "--output-dir", "/tmp"]);
    assert_ne!(actual, expected_config(&parse_runtime_stage(&original)));
}
