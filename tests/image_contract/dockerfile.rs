//! The Dockerfile's runtime stage, parsed by code of its own (not the script's parser), and the
//! image config `docker build` would give from it.

use super::*;

/// What the last stage of a Dockerfile sets, as far as the image config and the binary go.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RuntimeStage {
    pub(crate) base: String,
    pub(crate) user: Option<String>,
    pub(crate) entrypoint: Option<Vec<String>>,
    pub(crate) cmd: Option<Vec<String>>,
    pub(crate) exposed_ports: BTreeSet<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) env: Vec<(String, String)>,
    /// Absolute, relative WORKDIRs resolved against the previous one (or the base's).
    pub(crate) workdir: Option<String>,
    /// Absolute destination of each COPY: (sources, destination).
    pub(crate) copies: Vec<(Vec<String>, String)>,
    /// Instructions the image config and the comparison do not cover (RUN, ADD, VOLUME, ...).
    pub(crate) others: Vec<String>,
}

impl RuntimeStage {
    /// Where the binary lands: the one COPY of the stage.
    pub(crate) fn binary_dest(&self) -> &str {
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
pub(crate) fn logical_lines(text: &str) -> Vec<(usize, String)> {
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
pub(crate) fn words(s: &str) -> Vec<String> {
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
pub(crate) fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(args)
        .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), args.to_string()])
}

pub(crate) fn key_values(instruction: &str, args: &str) -> Vec<(String, String)> {
    words(args)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => panic!("{instruction} {args}: only the key=value form is supported"),
        })
        .collect()
}

pub(crate) fn resolve(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    }
}

pub(crate) fn parse_runtime_stage(text: &str) -> RuntimeStage {
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
pub(crate) struct ImageConfig {
    pub(crate) user: String,
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) exposed_ports: BTreeSet<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) env: Vec<String>,
    pub(crate) workdir: String,
}

/// The config `docker build` gives: the base's, with the stage's instructions on top.
pub(crate) fn expected_config(stage: &RuntimeStage) -> ImageConfig {
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

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

pub(crate) fn config_of(image: &Value) -> ImageConfig {
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
