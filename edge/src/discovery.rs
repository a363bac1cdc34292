//! File-based service discovery (Prometheus's `file_sd_configs`): files of target groups in
//! JSON or YAML, chosen by extension, named by patterns whose last path element may hold `*`
//! and `?` wildcards. Each group's targets get the group's labels and `__meta_filepath`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::target::LabelMap;

/// One group of targets sharing labels, as in a file_sd or http_sd document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: LabelMap,
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` one.
fn wildcard(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

/// The files a pattern names today, sorted; wildcards only in the last path element.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new(pattern);
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| format!("{pattern:?} names no file"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "{pattern:?}: wildcards are allowed in the file name only"
        ));
    }
    if !file.contains(['*', '?']) {
        return Ok(if path.exists() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let pattern: Vec<char> = file.chars().collect();
    let entries = match std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name: Vec<char> = e.file_name().to_string_lossy().chars().collect();
            wildcard(&pattern, &name)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// The target groups of one file, each with `__meta_filepath` added; the error names the
/// file and, for a syntax error, the place in it.
pub fn read_file(path: &Path) -> Result<Vec<TargetGroup>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut groups: Vec<TargetGroup> = match ext {
        "json" => serde_json::from_str(&text).map_err(|e| e.to_string()),
        "yml" | "yaml" => {
            if text.trim().is_empty() {
                Ok(Vec::new())
            } else {
                serde_norway::from_str(&text).map_err(|e| e.to_string())
            }
        }
        _ => Err(format!(
            "invalid file extension {ext:?}; file_sd files end in .json, .yml or .yaml"
        )),
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    for g in &mut groups {
        for name in g.labels.keys() {
            if !strata_wire::labels::is_valid_label_name(name) {
                return Err(format!(
                    "{}: {name:?} is not a valid label name",
                    path.display()
                ));
            }
        }
        g.labels.insert(
            "__meta_filepath".into(),
            path.to_string_lossy().into_owned(),
        );
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_files_by_pattern() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("a.json"),
            r#"[{"targets": ["10.0.0.1:9100", "10.0.0.2:9100"], "labels": {"cell": "hz-07"}}]"#,
        )
        .expect("write");
        std::fs::write(d.join("b.yaml"), "- targets: ['10.0.0.3:9100']\n").expect("write");
        std::fs::write(d.join("notes.txt"), "not targets").expect("write");
        let json = expand(&format!("{}/*.json", d.display())).expect("expands");
        assert_eq!(json, vec![d.join("a.json")]);
        let groups = read_file(&json[0]).expect("valid");
        assert_eq!(groups[0].targets.len(), 2);
        assert_eq!(groups[0].labels["cell"], "hz-07");
        assert_eq!(
            groups[0].labels["__meta_filepath"],
            d.join("a.json").to_string_lossy()
        );
        let all = expand(&format!("{}/?.*", d.display())).expect("expands");
        assert_eq!(all, vec![d.join("a.json"), d.join("b.yaml")]);
        assert_eq!(
            read_file(&all[1]).expect("valid")[0].targets,
            ["10.0.0.3:9100"]
        );
        assert!(
            expand(&format!("{}/missing/*.json", d.display()))
                .expect("none")
                .is_empty()
        );
        assert!(expand(&format!("{}/*/x.json", d.display())).is_err());
    }

    #[test]
    fn bad_files_say_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "- targets: ['a:1']\n  lables: {x: y}\n").expect("write");
        let e = read_file(&bad).expect_err("unknown field");
        assert!(
            e.contains("unknown field `lables`") && e.contains("line 2"),
            "{e}"
        );
        let txt = dir.path().join("t.txt");
        std::fs::write(&txt, "[]").expect("write");
        assert!(
            read_file(&txt)
                .expect_err("extension")
                .contains("invalid file extension")
        );
        let label = dir.path().join("l.json");
        std::fs::write(&label, r#"[{"targets": ["a:1"], "labels": {"1x": "y"}}]"#).expect("write");
        assert!(
            read_file(&label)
                .expect_err("label")
                .contains("not a valid label name")
        );
    }
}
