//! The Kubernetes manifests (`deploy/kubernetes`) as the cluster would get
//! them: an overlay rendered by `kubectl kustomize`, parsed into one JSON value
//! per object, with accessors for what the checks look at.
//!
//! The overlays read their secrets from an uncommitted `secrets.env`; rendering
//! happens in a temporary copy of the folders a build reads, with a
//! `secrets.env` of known, unique values, so that a check can search every
//! other object for them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// The folders a build of an overlay reads: the manifests and the config
/// folders compose mounts, each with its small kustomization.yaml.
const BUILD_INPUTS: [&str; 5] = ["deploy", "nginx", "redis", "prometheus", "grafana"];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One overlay, rendered.
#[derive(Debug)]
pub struct Rendered {
    /// `dev` or `production`.
    pub overlay: String,
    /// Every object of the output, in order.
    pub objects: Vec<Value>,
    /// The output as `kubectl apply -k` would send it.
    pub yaml: String,
    /// What the test's secrets.env held: name → value.
    pub secrets: BTreeMap<String, String>,
}

impl Rendered {
    /// Renders `deploy/kubernetes/overlays/<overlay>` with `kubectl kustomize`
    /// (the Kustomize that `kubectl apply -k` runs). Panics with kubectl's
    /// message when the build fails.
    pub fn overlay(overlay: &str) -> Self {
        let root = repo_root();
        let copy = tempfile::tempdir().expect("temporary directory");
        for input in BUILD_INPUTS {
            copy_tree(&root.join(input), &copy.path().join(input));
        }
        let example = fs::read_to_string(root.join("deploy/kubernetes/secrets.env.example"))
            .expect("deploy/kubernetes/secrets.env.example");
        let secrets = test_secrets(&example);
        let overlay_dir = copy.path().join("deploy/kubernetes/overlays").join(overlay);
        let env: String = secrets.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(overlay_dir.join("secrets.env"), env).expect("write secrets.env");
        let kubectl = std::env::var("EVERGREEN_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
        let output = Command::new(kubectl)
            .arg("kustomize")
            .arg(&overlay_dir)
            .output()
            .expect("kubectl (scripts/test installs it; Kustomize ships with kubectl)");
        assert!(
            output.status.success(),
            "kubectl kustomize overlays/{overlay} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let yaml = String::from_utf8(output.stdout).expect("UTF-8 output");
        let objects = serde_norway::Deserializer::from_str(&yaml)
            .map(|document| Value::deserialize(document).expect("kubectl printed YAML"))
            .filter(|object| !object.is_null())
            .collect();
        Self {
            overlay: overlay.to_owned(),
            objects,
            yaml,
            secrets,
        }
    }

    pub fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let kind = kind.to_owned();
        self.objects
            .iter()
            .filter(move |o| o["kind"] == kind.as_str())
    }

    /// The object of `kind` named `name`, or of a generated name `name-<hash>`.
    pub fn get<'a>(&'a self, kind: &str, name: &str) -> &'a Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("overlays/{}: no {kind} named {name}", self.overlay))
    }

    pub fn find<'a>(&'a self, kind: &str, name: &str) -> Option<&'a Value> {
        self.of_kind(kind).find(|o| {
            let full = name_of(o);
            full == name
                || full
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| hash.len() == 10 && !hash.contains('-'))
        })
    }

    /// Deployments and StatefulSets: `(kind/name, pod template)`.
    pub fn workloads(&self) -> impl Iterator<Item = (String, &Value)> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .map(|o| {
                (
                    format!("{}/{}", o["kind"].as_str().unwrap_or(""), name_of(o)),
                    &o["spec"]["template"],
                )
            })
    }

    /// The `data` of a ConfigMap, by its name before the hash.
    pub fn config_map(&self, name: &str) -> BTreeMap<String, String> {
        serde_json::from_value(self.get("ConfigMap", name)["data"].clone())
            .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"))
    }
}

/// A JSON object of strings (labels, selectors, ConfigMap data) as a map.
pub fn string_map(value: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// Whether a (non-empty) label selector matches `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// Every container of a pod template, init containers included:
/// `(name, container, is_init)`.
pub fn containers(template: &Value) -> Vec<(&str, &Value, bool)> {
    let list = |field: &str, init: bool| {
        template["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |c| (c["name"].as_str().unwrap_or(""), c, init))
            .collect::<Vec<_>>()
    };
    let mut all = list("initContainers", true);
    all.extend(list("containers", false));
    all
}

/// secrets.env from the example: every variable with a value of its own
/// that appears nowhere else (`k8s-test-<name>-<uuid>`), examples kept for
/// non-secret settings that have one.
fn test_secrets(example: &str) -> BTreeMap<String, String> {
    example
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let value = if value.is_empty() {
                format!(
                    "k8s-test-{}-{}",
                    name.to_lowercase().replace('_', "-"),
                    uuid::Uuid::new_v4().simple()
                )
            } else {
                value.to_owned()
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            fs::copy(&path, to.join(entry.file_name())).expect("copy file");
        }
    }
}
