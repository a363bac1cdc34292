//! Relabelling as Prometheus does it (`model/relabel/relabel.go` of Prometheus 3.x): the
//! configuration with its defaults and validation, and the eleven actions applied in order to
//! one label set.
//!
//! - Regexes are anchored at both ends and `.` matches a newline (`^(?s:<regex>)$`).
//! - Replacements and `target_label` expand `$1`, `${1}`, `$name` and `${name}` as Go's
//!   `Regexp.Expand` does: the longest name is taken, so `$1x` is the (absent) group `1x`.
//! - `hashmod` takes the last 8 bytes of the MD5 of the joined source values, big-endian,
//!   modulo `modulus`.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;
use strata_wire::Label;

/// What a relabel rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// One rule as written in `relabel_configs`, `metric_relabel_configs` or
/// `write_relabel_configs`; unset fields take Prometheus's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Action,
}

/// A validated rule, ready to apply. In a configuration file it is read as a
/// [`RelabelConfig`] and checked on the spot, so a bad rule is reported at its line.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RelabelConfig")]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
    action: Action,
}

/// `target_label` of the actions that expand it, and `replacement` of `labelmap`: label name
/// characters with `$name`/`${name}` references (Prometheus's `relabelTarget`).
fn is_relabel_target(s: &str) -> bool {
    static TARGET: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    TARGET
        .get_or_init(|| {
            Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("a valid regex")
        })
        .is_match(s)
}

impl RelabelConfig {
    /// Checks the rule as Prometheus does when it loads a configuration; the error is
    /// Prometheus's message.
    pub fn compile(&self) -> Result<Rule, String> {
        let action = self.action;
        let name = action.name();
        let target = self.target_label.clone().unwrap_or_default();
        let regex_text = self.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        let regex = Regex::new(&format!("^(?s:{regex_text})$"))
            .map_err(|e| format!("invalid regex {regex_text:?}: {e}"))?;
        let modulus = self.modulus.unwrap_or(0);
        if modulus == 0 && action == Action::HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        let expands_target = matches!(
            action,
            Action::Replace
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if expands_target && !is_relabel_target(&target) {
            return Err(format!(
                "{target:?} is invalid 'target_label' for {name} action"
            ));
        }
        let plain_target = matches!(
            action,
            Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
                | Action::HashMod
        );
        if plain_target && !strata_wire::labels::is_valid_label_name(&target) {
            return Err(format!(
                "{target:?} is invalid 'target_label' for {name} action"
            ));
        }
        let replacement = self
            .replacement
            .clone()
            .unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        if action == Action::LabelMap && !is_relabel_target(&replacement) {
            return Err(format!(
                "{replacement:?} is invalid 'replacement' for {name} action"
            ));
        }
        let separator_set = self
            .separator
            .as_deref()
            .is_some_and(|s| s != DEFAULT_SEPARATOR);
        let regex_set = self.regex.as_deref().is_some_and(|r| r != DEFAULT_REGEX);
        let replacement_set = replacement != DEFAULT_REPLACEMENT;
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (regex_set || modulus != 0 || separator_set || replacement_set)
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (self.source_labels.is_some()
                || !target.is_empty()
                || modulus != 0
                || separator_set
                || replacement_set)
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        Ok(Rule {
            source_labels: self.source_labels.clone().unwrap_or_default(),
            separator: self
                .separator
                .clone()
                .unwrap_or_else(|| DEFAULT_SEPARATOR.into()),
            target_label: target,
            regex,
            modulus,
            replacement,
            action,
        })
    }
}

impl TryFrom<RelabelConfig> for Rule {
    type Error = String;

    fn try_from(c: RelabelConfig) -> Result<Self, String> {
        c.compile()
    }
}

/// Go's `Regexp.ExpandString` of `template` with the captures of `regex` on `value`.
fn expand(regex: &Regex, template: &str, value: &str) -> Option<String> {
    let caps = regex.captures(value)?;
    let mut out = String::new();
    caps.expand(template, &mut out);
    Some(out)
}

/// Applies `rules` in order to `labels` (sorted by name); `None` when a rule drops the series.
/// The result is sorted by name and holds no empty values.
pub fn process(labels: &[Label], rules: &[Rule]) -> Option<Vec<Label>> {
    let mut lb: BTreeMap<String, String> = labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    for rule in rules {
        if !rule.apply(&mut lb) {
            return None;
        }
    }
    Some(
        lb.into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| Label::new(n, v))
            .collect(),
    )
}

impl Rule {
    /// Applies the rule; false when the series is dropped.
    fn apply(&self, lb: &mut BTreeMap<String, String>) -> bool {
        let value = self
            .source_labels
            .iter()
            .map(|n| lb.get(n).map_or("", String::as_str))
            .collect::<Vec<_>>()
            .join(&self.separator);
        match self.action {
            Action::Drop => return !self.regex.is_match(&value),
            Action::Keep => return self.regex.is_match(&value),
            Action::DropEqual => {
                return lb.get(&self.target_label).map_or("", String::as_str) != value;
            }
            Action::KeepEqual => {
                return lb.get(&self.target_label).map_or("", String::as_str) == value;
            }
            Action::Replace => {
                // An unmatched regex leaves the labels as they are; a target that expands to
                // an invalid name does too; an empty result deletes the target.
                let Some(target) = expand(&self.regex, &self.target_label, &value) else {
                    return true;
                };
                if !strata_wire::labels::is_valid_label_name(&target) {
                    return true;
                }
                let Some(result) = expand(&self.regex, &self.replacement, &value) else {
                    return true;
                };
                set(lb, target, result);
            }
            Action::Lowercase => set(lb, self.target_label.clone(), value.to_lowercase()),
            Action::Uppercase => set(lb, self.target_label.clone(), value.to_uppercase()),
            Action::HashMod => {
                let sum = Md5::digest(value.as_bytes());
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&sum[8..]);
                let m = u64::from_be_bytes(tail) % self.modulus;
                set(lb, self.target_label.clone(), m.to_string());
            }
            Action::LabelMap => {
                let renamed: Vec<(String, String)> = lb
                    .iter()
                    .filter_map(|(name, v)| {
                        expand(&self.regex, &self.replacement, name).map(|n| (n, v.clone()))
                    })
                    .collect();
                for (name, v) in renamed {
                    set(lb, name, v);
                }
            }
            Action::LabelDrop => lb.retain(|name, _| !self.regex.is_match(name)),
            Action::LabelKeep => lb.retain(|name, _| self.regex.is_match(name)),
        }
        true
    }
}

/// Sets a label, or deletes it when the value is empty (Prometheus's `labels.Builder.Set`).
fn set(lb: &mut BTreeMap<String, String>, name: String, value: String) {
    if value.is_empty() {
        lb.remove(&name);
    } else {
        lb.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        let mut v: Vec<Label> = pairs.iter().map(|&(n, v)| Label::new(n, v)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn rule(json: serde_json::Value) -> Rule {
        serde_json::from_value::<RelabelConfig>(json)
            .expect("a rule")
            .compile()
            .expect("a valid rule")
    }

    fn run(input: &[(&str, &str)], rules: &[serde_json::Value]) -> Option<Vec<Label>> {
        let rules: Vec<Rule> = rules.iter().cloned().map(rule).collect();
        process(&labels(input), &rules)
    }

    #[test]
    fn replace_with_captures_and_defaults() {
        let out = run(
            &[("__address__", "10.0.0.1:9100"), ("job", "node")],
            &[serde_json::json!({
                "source_labels": ["__address__"],
                "regex": "(.*):\\d+",
                "target_label": "host",
                "replacement": "${1}"
            })],
        );
        assert_eq!(
            out,
            Some(labels(&[
                ("__address__", "10.0.0.1:9100"),
                ("host", "10.0.0.1"),
                ("job", "node")
            ]))
        );
        // Default regex (.*) and replacement $1 copy the joined values; `$1x` is a group
        // named "1x", which does not exist, so it expands to nothing and deletes the target.
        let out = run(
            &[("a", "x"), ("b", "y")],
            &[
                serde_json::json!({"source_labels": ["a", "b"], "target_label": "c"}),
                serde_json::json!({"source_labels": ["a"], "target_label": "a", "replacement": "$1x"}),
            ],
        );
        assert_eq!(out, Some(labels(&[("b", "y"), ("c", "x;y")])));
    }

    #[test]
    fn keep_drop_and_equal_actions() {
        let keep =
            serde_json::json!({"source_labels": ["job"], "regex": "node|kube.*", "action": "keep"});
        assert!(run(&[("job", "kubelet")], std::slice::from_ref(&keep)).is_some());
        assert!(run(&[("job", "kubelet-x")], std::slice::from_ref(&keep)).is_some());
        assert!(
            run(&[("job", "xnode")], &[keep]).is_none(),
            "anchored regex"
        );
        let drop = serde_json::json!({"source_labels": ["job"], "regex": "node", "action": "drop"});
        assert!(run(&[("job", "node")], std::slice::from_ref(&drop)).is_none());
        assert!(run(&[], &[drop]).is_some(), "a missing label is empty");
        let keepequal =
            serde_json::json!({"source_labels": ["a"], "target_label": "b", "action": "keepequal"});
        assert!(run(&[("a", "1"), ("b", "1")], std::slice::from_ref(&keepequal)).is_some());
        assert!(run(&[("a", "1"), ("b", "2")], &[keepequal]).is_none());
        let dropequal =
            serde_json::json!({"source_labels": ["a"], "target_label": "b", "action": "dropequal"});
        assert!(run(&[("a", "1"), ("b", "1")], &[dropequal]).is_none());
    }

    #[test]
    fn label_name_actions_and_case() {
        let out = run(
            &[
                ("__meta_kubernetes_pod_label_app", "web"),
                ("__meta_kubernetes_pod_label_tier", "Front"),
                ("job", "k"),
            ],
            &[
                serde_json::json!({"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"}),
                serde_json::json!({"regex": "__meta_.*", "action": "labeldrop"}),
                serde_json::json!({"source_labels": ["tier"], "target_label": "tier_lc", "action": "lowercase"}),
                serde_json::json!({"source_labels": ["app"], "target_label": "app", "action": "uppercase"}),
            ],
        );
        assert_eq!(
            out,
            Some(labels(&[
                ("app", "WEB"),
                ("job", "k"),
                ("tier", "Front"),
                ("tier_lc", "front")
            ]))
        );
        let out = run(
            &[("a", "1"), ("b", "2"), ("job", "x")],
            &[serde_json::json!({"regex": "a|job", "action": "labelkeep"})],
        );
        assert_eq!(out, Some(labels(&[("a", "1"), ("job", "x")])));
    }

    #[test]
    fn hashmod_is_md5_tail_modulo() {
        // md5("10.0.0.1:9100") = 1eac7f871dc4b32a 4cfeac4083628b3d; the tail mod 1000 is 645.
        // md5("") ends e9800998ecf8427e, which is 6 mod 8.
        let hash = |value: &str, modulus: u64| {
            run(
                &[("__address__", value)],
                &[serde_json::json!({"source_labels": ["__address__"], "target_label": "shard", "modulus": modulus, "action": "hashmod"})],
            )
            .expect("kept")
            .into_iter()
            .find(|l| l.name == "shard")
            .map(|l| l.value)
        };
        assert_eq!(hash("10.0.0.1:9100", 1000).as_deref(), Some("645"));
        assert_eq!(hash("", 8).as_deref(), Some("6"));
    }

    #[test]
    fn invalid_rules_get_prometheus_messages() {
        let err = |json: serde_json::Value| {
            serde_json::from_value::<RelabelConfig>(json)
                .map_err(|e| e.to_string())
                .and_then(|c| c.compile().map(|_| ()))
                .expect_err("invalid")
        };
        assert_eq!(
            err(serde_json::json!({"action": "hashmod", "target_label": "x"})),
            "relabel configuration for hashmod requires non-zero modulus"
        );
        assert_eq!(
            err(serde_json::json!({"source_labels": ["a"]})),
            "relabel configuration for replace action requires 'target_label' value"
        );
        assert_eq!(
            err(serde_json::json!({"target_label": "1bad"})),
            "\"1bad\" is invalid 'target_label' for replace action"
        );
        assert_eq!(
            err(serde_json::json!({"action": "labeldrop", "regex": "x", "source_labels": ["a"]})),
            "labeldrop action requires only 'regex', and no other fields"
        );
        assert_eq!(
            err(serde_json::json!({"action": "labelmap", "replacement": "-"})),
            "\"-\" is invalid 'replacement' for labelmap action"
        );
        assert!(
            err(serde_json::json!({"action": "replace", "target_label": "x", "regex": "("}))
                .starts_with("invalid regex")
        );
        assert!(err(serde_json::json!({"action": "explode"})).contains("unknown variant"));
        assert!(err(serde_json::json!({"target": "x"})).contains("unknown field"));
    }
}
