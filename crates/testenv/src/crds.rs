//! Installing CustomResourceDefinitions: read every YAML document from a directory, server-side
//! apply each, then wait until each reports `Established` (objects of a kind cannot be created
//! before that).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde::Deserialize;

use crate::error::Error;

/// The field manager the harness applies CRDs with.
pub const FIELD_MANAGER: &str = "acs-testenv";

/// The `*.yaml` / `*.yml` files directly in `dir`, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every CRD document in the YAML files of `dir` (multi-document files allowed, empty
/// documents skipped).
pub fn load_dir(dir: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let mut crds = Vec::new();
    for path in yaml_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let parse_err = |source| Error::ParseCrd {
                path: path.clone(),
                source,
            };
            let value = serde_yaml::Value::deserialize(document).map_err(parse_err)?;
            if value.is_null() {
                continue;
            }
            crds.push(serde_yaml::from_value(value).map_err(parse_err)?);
        }
    }
    Ok(crds)
}

/// Server-side applies `crds` (forcing: the harness owns them) and waits up to `timeout` for
/// all of them to be Established. Returns their names.
pub async fn apply(
    client: &Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::with_capacity(crds.len());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        // Server-side apply needs apiVersion and kind in the body; typed values built in code
        // (`CustomResourceExt::crd()`) have them, YAML ones too, but be sure.
        let mut body = serde_json::to_value(crd).map_err(|source| Error::ApplyCrd {
            name: name.clone(),
            source: kube::Error::SerdeError(source),
        })?;
        body["apiVersion"] = "apiextensions.k8s.io/v1".into();
        body["kind"] = "CustomResourceDefinition".into();
        api.patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| Error::ApplyCrd {
                name: name.clone(),
                source,
            })?;
        names.push(name);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout_at(deadline, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(Error::WatchCrd {
                    name: name.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(Error::CrdNotEstablished {
                    name: name.clone(),
                    timeout,
                })
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.dev
spec:
  group: example.dev
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object}
";

    #[test]
    fn crds_load_from_multi_document_yaml_files_and_other_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let second = CRD.replace("widgets.example.dev", "gadgets.example.dev");
        std::fs::write(tmp.path().join("b.yaml"), format!("---\n{CRD}---\n")).unwrap();
        std::fs::write(tmp.path().join("a.yml"), &second).unwrap();
        std::fs::write(tmp.path().join("README.md"), "not yaml").unwrap();
        let names: Vec<String> = load_dir(tmp.path())
            .unwrap()
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect();
        assert_eq!(names, ["gadgets.example.dev", "widgets.example.dev"]);
    }

    #[test]
    fn a_yaml_file_that_is_not_a_crd_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("x.yaml"), "spec: 3\n").unwrap();
        assert!(matches!(load_dir(tmp.path()), Err(Error::ParseCrd { .. })));
    }

    #[test]
    fn an_empty_directory_has_no_crds() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(load_dir(tmp.path()).unwrap().is_empty());
    }
}
