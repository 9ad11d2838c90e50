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

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

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

// ------------------------------------------------------------------------------------------------
// The Dockerfile's runtime stage
// ------------------------------------------------------------------------------------------------

/// What the last stage of a Dockerfile sets, as far as the image config and the binary go.
#[derive(Debug, Default, PartialEq)]
struct RuntimeStage {
    base: String,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    exposed_ports: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    /// Absolute, relative WORKDIRs resolved against the previous one (or the base's).
    workdir: Option<String>,
    /// Absolute destination of each COPY: (sources, destination).
    copies: Vec<(Vec<String>, String)>,
    /// Instructions the image config and the comparison do not cover (RUN, ADD, VOLUME, ...).
    others: Vec<String>,
}

impl RuntimeStage {
    /// Where the binary lands: the one COPY of the stage.
    fn binary_dest(&self) -> &str {
        assert_eq!(
            self.copies.len(),
            1,
            "the runtime stage should COPY exactly the binary: {:?}",
            self.copies
        );
        &self.copies[0].1
    }
}

/// Joins continuation lines and drops comments and blank lines: one (line number, text) per
/// instruction.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let blank_or_comment = line.trim().is_empty() || line.trim_start().starts_with('#');
        if blank_or_comment {
            // Inside a continuation these are dropped too, as Docker does.
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            acc.push_str(body);
            current = Some((start, acc));
        } else {
            acc.push_str(line);
            out.push((start, acc.trim().to_string()));
        }
    }
    assert!(
        current.is_none(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

/// Splits instruction arguments into words: whitespace separates, quotes group and are removed;
/// outside quotes a backslash escapes any character, inside double quotes only `"`, `$`, `\`.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('"') if c == '"' => quote = None,
            Some('"') if c == '\\' && matches!(chars.peek(), Some('"' | '$' | '\\')) => {
                word.extend(chars.next());
            }
            Some(_) => word.push(c),
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                match c {
                    '"' | '\'' => quote = Some(c),
                    '\\' => word.extend(chars.next()),
                    _ => word.push(c),
                }
            }
        }
    }
    assert!(quote.is_none(), "unterminated quote in {s:?}");
    if in_word {
        out.push(word);
    }
    out
}

/// The exec (JSON) form as is; the shell form as Docker runs it.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(args)
        .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), args.to_string()])
}

fn key_values(instruction: &str, args: &str) -> Vec<(String, String)> {
    words(args)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => panic!("{instruction} {args}: only the key=value form is supported"),
        })
        .collect()
}

fn resolve(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    }
}

fn parse_runtime_stage(text: &str) -> RuntimeStage {
    let mut stage: Option<RuntimeStage> = None;
    for (line, instruction) in logical_lines(text) {
        let (keyword, args) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim();
        if keyword == "FROM" {
            let image = words(args)
                .into_iter()
                .find(|w| !w.starts_with("--"))
                .unwrap_or_else(|| panic!("line {line}: FROM without an image"));
            stage = Some(RuntimeStage {
                base: image,
                ..RuntimeStage::default()
            });
            continue;
        }
        let Some(stage) = stage.as_mut() else {
            assert_eq!(
                keyword, "ARG",
                "line {line}: {keyword} before the first FROM"
            );
            continue;
        };
        match keyword.as_str() {
            "USER" => stage.user = Some(args.to_string()),
            "ENTRYPOINT" => stage.entrypoint = Some(exec_form(args)),
            "CMD" => stage.cmd = Some(exec_form(args)),
            "EXPOSE" => {
                for port in words(args) {
                    let port = port.to_ascii_lowercase();
                    let port = if port.contains('/') {
                        port
                    } else {
                        format!("{port}/tcp")
                    };
                    stage.exposed_ports.insert(port);
                }
            }
            "LABEL" => stage.labels.extend(key_values(&keyword, args)),
            "ENV" => {
                for (k, v) in key_values(&keyword, args) {
                    match stage.env.iter_mut().find(|(key, _)| *key == k) {
                        Some(entry) => entry.1 = v,
                        None => stage.env.push((k, v)),
                    }
                }
            }
            "WORKDIR" => {
                let current = stage.workdir.as_deref().unwrap_or(BASE_WORKDIR).to_string();
                stage.workdir = Some(resolve(&current, args));
            }
            "COPY" => {
                let paths: Vec<String> = words(args)
                    .into_iter()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, sources) = paths
                    .split_last()
                    .unwrap_or_else(|| panic!("line {line}: COPY without paths"));
                let mut dest = dest.clone();
                if dest.ends_with('/') {
                    let [source] = sources else {
                        panic!("line {line}: several sources into {dest}")
                    };
                    dest.push_str(source.rsplit('/').next().unwrap_or(source));
                }
                let workdir = stage.workdir.as_deref().unwrap_or(BASE_WORKDIR);
                stage
                    .copies
                    .push((sources.to_vec(), resolve(workdir, &dest)));
            }
            _ => stage.others.push(format!("line {line}: {instruction}")),
        }
    }
    stage.expect("the Dockerfile has no FROM")
}

/// The part of an OCI image config that the runtime contract is made of.
#[derive(Debug, PartialEq)]
struct ImageConfig {
    user: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    exposed_ports: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    env: Vec<String>,
    workdir: String,
}

/// The config `docker build` gives: the base's, with the stage's instructions on top.
fn expected_config(stage: &RuntimeStage) -> ImageConfig {
    let base_ok = stage.base == BASE
        || stage
            .base
            .strip_prefix(BASE)
            .is_some_and(|rest| rest.starts_with("@sha256:"));
    assert!(
        base_ok,
        "the runtime stage is FROM {}; tools/node/images.sh and this test model only {BASE}",
        stage.base
    );
    let mut env: Vec<(String, String)> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &stage.env {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    ImageConfig {
        user: stage.user.clone().unwrap_or_else(|| BASE_USER.to_string()),
        entrypoint: stage.entrypoint.clone().unwrap_or_default(),
        cmd: stage.cmd.clone().unwrap_or_default(),
        exposed_ports: stage.exposed_ports.clone(),
        labels: stage.labels.clone(),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir: stage
            .workdir
            .clone()
            .unwrap_or_else(|| BASE_WORKDIR.to_string()),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn config_of(image: &Value) -> ImageConfig {
    let c = &image["config"];
    ImageConfig {
        user: c["User"].as_str().unwrap_or_default().to_string(),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        exposed_ports: c["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        labels: c["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        env: strings(&c["Env"]),
        workdir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
    }
}

// ------------------------------------------------------------------------------------------------
// Running images.sh and reading its OCI layout
// ------------------------------------------------------------------------------------------------

/// Fails (never skips) when a tool the script needs is missing, naming the Debian package.
fn require_tools() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |cmd: &str| std::env::split_paths(&path).any(|dir| dir.join(cmd).is_file());
    let mut missing: Vec<String> = [
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("gcc", "gcc"),
        ("strip", "binutils"),
        ("tar", "tar"),
    ]
    .iter()
    .filter(|(cmd, _)| !on_path(cmd))
    .map(|(cmd, package)| format!("{cmd} (Debian package {package})"))
    .collect();
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox (Debian package busybox-static)".into());
    }
    assert!(
        missing.is_empty(),
        "tools/node/images.sh needs what is missing here: {}",
        missing.join(", ")
    );
}

fn script() -> PathBuf {
    Path::new(REPO).join("tools/node/images.sh")
}

/// Runs images.sh into `out`, following `dockerfile` (the repository's when None), and returns
/// the `name=reference` lines it printed.
fn build_images(out: &Path, binary: &str, dockerfile: Option<&Path>) -> BTreeMap<String, String> {
    require_tools();
    let mut cmd = Command::new(script());
    cmd.arg(out).arg(binary);
    match dockerfile {
        Some(path) => cmd.env("DOCKERFILE", path),
        None => cmd.env_remove("DOCKERFILE"),
    };
    let started = Instant::now();
    let output: Output = cmd.output().expect("cannot run tools/node/images.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tools/node/images.sh failed ({}):\n{stderr}",
        output.status
    );
    eprintln!(
        "images.sh took {:.1}s:\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, reference) = l.split_once('=').unwrap();
            (name.to_string(), reference.to_string())
        })
        .collect()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// An image of the OCI layout by its tag: its config and the paths of its layer blobs.
fn image(layout: &Path, tag: &str) -> (Value, Vec<PathBuf>) {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    let found: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert_eq!(found.len(), 1, "tag {tag} in {index}");
    let manifest = read_json(&blob(layout, found[0]["digest"].as_str().unwrap()));
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(layout, l["digest"].as_str().unwrap()))
        .collect();
    (config, layers)
}

/// Runs `tar MODE ARCHIVE MEMBERS...` and returns what it printed.
fn tar(mode: &str, archive: &Path, members: &[&str]) -> Vec<u8> {
    let output = Command::new("tar")
        .arg(mode)
        .arg(archive)
        .args(members)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tar {mode} {} {members:?}: {}",
        archive.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Every path in the image's layers, without a leading `./` or `/` and a trailing `/`.
fn paths(layers: &[PathBuf]) -> BTreeSet<String> {
    layers
        .iter()
        .flat_map(|layer| {
            String::from_utf8(tar("-tzf", layer, &[]))
                .unwrap()
                .lines()
                .map(|l| l.trim_start_matches("./").trim_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A file's content from a one-layer image.
fn file(layers: &[PathBuf], path: &str) -> Vec<u8> {
    let [layer] = layers else {
        panic!("expected one layer, got {layers:?}")
    };
    tar("-xzOf", layer, &[path])
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("unsupported architecture {other}"),
    }
}

/// The shared libraries `ldd` lists for a binary (what the image must carry).
fn shared_libraries(binary: &str) -> Vec<String> {
    let output = Command::new("ldd").arg(binary).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect()
}

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap()
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

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
