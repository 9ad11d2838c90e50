//! Running `tools/node/images.sh` and reading its OCI layout.

use super::*;

/// Fails (never skips) when a tool the script needs is missing, naming the Debian package.
pub(crate) fn require_tools() {
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

pub(crate) fn script() -> PathBuf {
    Path::new(REPO).join("tools/node/images.sh")
}

/// Runs images.sh into `out`, following `dockerfile` (the repository's when None), and returns
/// the `name=reference` lines it printed.
pub(crate) fn build_images(
    out: &Path,
    binary: &str,
    dockerfile: Option<&Path>,
) -> BTreeMap<String, String> {
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

pub(crate) fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// An image of the OCI layout by its tag: its config and the paths of its layer blobs.
pub(crate) fn image(layout: &Path, tag: &str) -> (Value, Vec<PathBuf>) {
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
pub(crate) fn tar(mode: &str, archive: &Path, members: &[&str]) -> Vec<u8> {
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
pub(crate) fn paths(layers: &[PathBuf]) -> BTreeSet<String> {
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
pub(crate) fn file(layers: &[PathBuf], path: &str) -> Vec<u8> {
    let [layer] = layers else {
        panic!("expected one layer, got {layers:?}")
    };
    tar("-xzOf", layer, &[path])
}

pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("unsupported architecture {other}"),
    }
}

/// The shared libraries `ldd` lists for a binary (what the image must carry).
pub(crate) fn shared_libraries(binary: &str) -> Vec<String> {
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

pub(crate) fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap()
}
