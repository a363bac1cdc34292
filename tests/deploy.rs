//! Every example in `deploy/` is checked by strata itself: the edge and cascade files and the
//! file_sd target files are loaded, and every command line of the systemd units and the
//! Kubernetes manifests is run with `--check` by the real binary. Paths under `/etc/strata/`
//! are redirected into a temporary directory holding what they name (generated certificates,
//! tokens, target files, the configuration files themselves).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(deploy().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {ext} files in deploy/{dir}");
    out
}

/// A stand-in for `/etc/strata`: every path the examples name exists in it.
struct Etc {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Etc {
    fn new() -> Etc {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc-strata");
        let mut text = String::new();
        for sub in ["edge", "cascade", "kubernetes", "systemd", "central"] {
            for entry in std::fs::read_dir(deploy().join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    text.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let etc = Etc { _dir: dir, root };
        let mut pki: BTreeMap<PathBuf, (String, String, String)> = BTreeMap::new();
        let mut named = std::collections::BTreeSet::new();
        for found in text.match_indices("/etc/strata/") {
            let rest = &text[found.0 + "/etc/strata/".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
                .unwrap_or(rest.len());
            let relative = rest[..end].trim_end_matches(['/', '.']);
            if !relative.is_empty() && !relative.starts_with("targets") {
                named.insert(relative.to_string());
            }
        }
        for relative in &named {
            let path = etc.root.join(relative);
            let is_dir = named
                .iter()
                .any(|other| other.starts_with(&format!("{relative}/")));
            if relative.ends_with(".yaml") {
                continue;
            }
            if is_dir {
                std::fs::create_dir_all(&path).unwrap();
                continue;
            }
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let content =
                if name.ends_with(".crt") || name.ends_with(".pem") || name.ends_with(".key") {
                    let (ca, cert, key) = pki
                        .entry(path.parent().unwrap().to_path_buf())
                        .or_insert_with(certificates)
                        .clone();
                    if name.ends_with(".key") {
                        key
                    } else if name.starts_with("ca") {
                        ca
                    } else {
                        cert
                    }
                } else {
                    "example-token\n".to_string()
                };
            std::fs::write(&path, content).unwrap();
        }
        std::fs::create_dir_all(etc.root.join("targets")).unwrap();
        for target in files("edge/targets", "") {
            std::fs::copy(
                &target,
                etc.root.join("targets").join(target.file_name().unwrap()),
            )
            .unwrap();
        }
        std::fs::write(
            etc.root.join("edge.yaml"),
            etc.rewrite(&read(&files("edge", ".yaml")[0])),
        )
        .unwrap();
        std::fs::write(
            etc.root.join("cascade.yaml"),
            etc.rewrite(&read(&files("cascade", ".yaml")[0])),
        )
        .unwrap();
        etc
    }

    /// `text` with `/etc/strata/` pointing here.
    fn rewrite(&self, text: &str) -> String {
        text.replace("/etc/strata/", &format!("{}/", self.root.display()))
    }

    /// Runs `strata ARGS --check` and asserts it succeeds.
    fn check(&self, what: &str, args: &[String]) {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                self.rewrite(a).replace(
                    "/var/lib/strata",
                    &self.root.join("data").display().to_string(),
                )
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(&args)
            .arg("--check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: strata {} --check failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("valid"),
            "{what}"
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A CA, and a certificate and key it signed, as PEM.
fn certificates() -> (String, String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["strata.example.internal".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (issuer.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn edge_and_cascade_examples_and_target_files_are_valid() {
    let etc = Etc::new();
    for (i, path) in files("edge", ".yaml").into_iter().enumerate() {
        let copy = etc.root.join(format!("edge-example-{i}.yaml"));
        std::fs::write(&copy, etc.rewrite(&read(&path))).unwrap();
        etc.check(
            &path.display().to_string(),
            &["edge".into(), "--config".into(), copy.display().to_string()],
        );
    }
    for (i, path) in files("cascade", ".yaml").into_iter().enumerate() {
        let copy = etc.root.join(format!("cascade-example-{i}.yaml"));
        std::fs::write(&copy, etc.rewrite(&read(&path))).unwrap();
        etc.check(
            &path.display().to_string(),
            &[
                "cascade".into(),
                "--config".into(),
                copy.display().to_string(),
            ],
        );
    }
    for path in files("edge/targets", "") {
        let groups = strata_edge::discovery::read_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!groups.is_empty(), "{}", path.display());
    }
}

/// The command line of a unit's `ExecStart`, continuation lines joined, `${VAR}` filled
/// from `env`.
fn exec_start(unit: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut args: Vec<String> = line
        .split_whitespace()
        .map(|a| {
            let mut a = a.to_string();
            for (k, v) in env {
                a = a
                    .replace(&format!("${{{k}}}"), v)
                    .replace(&format!("${k}"), v);
            }
            a
        })
        .collect();
    assert!(args[0].ends_with("/strata"), "{line}");
    args.remove(0);
    args
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

#[test]
fn systemd_units_run_valid_command_lines() {
    let etc = Etc::new();
    for unit in files("systemd", ".service") {
        let text = read(&unit);
        let envs: Vec<BTreeMap<String, String>> = if text.contains("%i") {
            files("central", ".env")
                .iter()
                .map(|p| env_file(p))
                .collect()
        } else {
            vec![BTreeMap::new()]
        };
        for env in envs {
            let args = exec_start(&text, &env);
            assert!(
                !args.iter().any(|a| a.contains('$')),
                "{}: unfilled {args:?}",
                unit.display()
            );
            etc.check(&unit.display().to_string(), &args);
        }
        if text.contains("strata edge") || text.contains("strata cascade") {
            assert!(
                text.contains("ExecReload=/bin/kill -HUP $MAINPID"),
                "{}",
                unit.display()
            );
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    serde_norway::Deserializer::from_str(&read(path))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn kubernetes_manifests_embed_the_examples_and_run_valid_command_lines() {
    let etc = Etc::new();
    let mut containers = 0;
    for manifest in files("kubernetes", ".yaml") {
        let name = manifest.display().to_string();
        for doc in documents(&manifest) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            assert!(doc["apiVersion"].is_string() && !kind.is_empty(), "{name}");
            if kind == "ConfigMap" {
                for (key, dir) in [("edge.yaml", "edge"), ("cascade.yaml", "cascade")] {
                    if let Some(embedded) = doc["data"][key].as_str() {
                        assert_eq!(embedded, read(&files(dir, ".yaml")[0]), "{name}: {key}");
                    }
                }
            }
            if kind != "StatefulSet" && kind != "Deployment" {
                continue;
            }
            let spec = &doc["spec"]["template"]["spec"];
            for c in spec["containers"].as_sequence().expect("containers") {
                let args: Vec<String> = c["args"]
                    .as_sequence()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                if !matches!(
                    args.first().map(String::as_str),
                    Some("edge" | "cascade" | "central")
                ) {
                    continue;
                }
                containers += 1;
                etc.check(&name, &args);
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/-/ready", "{name}");
                assert_eq!(
                    c["livenessProbe"]["httpGet"]["path"], "/-/healthy",
                    "{name}"
                );
            }
            if kind == "StatefulSet" {
                assert!(
                    doc["spec"]["volumeClaimTemplates"]
                        .as_sequence()
                        .is_some_and(|v| !v.is_empty()),
                    "{name}: a StatefulSet keeps its queue or store on a PVC"
                );
            }
        }
    }
    assert!(
        containers >= 4,
        "edge, cascade and two centrals: {containers}"
    );
}

#[test]
fn the_planner_example_is_valid_and_shows_the_defaults() {
    let path = deploy().join("planner.yaml");
    let config = strata_planner::PlannerConfig::load(&path).unwrap();
    assert_eq!(
        config,
        strata_planner::PlannerConfig::default(),
        "{} should show every default; update it when a default changes",
        path.display()
    );
}
