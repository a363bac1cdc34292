//! Recording and alerting rules in Prometheus's rule-file format (rulefmt), checked as
//! `promtool check rules` checks them.

pub mod dispatch;
pub mod expand;
mod gofmt;
pub mod group;
pub mod manager;
pub mod notify;
pub mod route;
pub mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use strata_wire::duration::parse_duration_ms;
use strata_wire::labels::{is_valid_label_name, is_valid_metric_name};

use template::Template;

/// A rule file: `groups`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default, deserialize_with = "null_as_default")]
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    #[serde(default)]
    pub name: String,
    /// Evaluation interval (Prometheus duration); the global one when absent.
    #[serde(default)]
    pub interval: Option<String>,
    /// Most series a rule may return; 0 is no limit (rulefmt accepts negative values too).
    #[serde(default)]
    pub limit: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, deserialize_with = "scalar")]
    pub record: String,
    #[serde(default, deserialize_with = "scalar")]
    pub alert: String,
    #[serde(default, deserialize_with = "scalar")]
    pub expr: String,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub annotations: BTreeMap<String, String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A YAML scalar of any type as its text (rule files write `expr: 1` and `severity: 2`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?
        .map(Scalar::text)
        .unwrap_or_default())
}

fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Option<Scalar>>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.map(Scalar::text).unwrap_or_default()))
        .collect())
}

/// One thing wrong with a rule file, located as precisely as the check knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    /// Group name and the rule's 1-based index and name, when the error is about a rule.
    pub group: Option<String>,
    pub rule: Option<(usize, String)>,
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(group) = &self.group {
            write!(f, "group {group:?}, ")?;
        }
        if let Some((index, name)) = &self.rule {
            write!(f, "rule {index}, {name:?}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// A duplicate rule (same name and labels) in one file, as promtool's lint reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What checking one file found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    /// The file as read (whatever of it parsed).
    pub parsed: RuleFile,
    pub rules: usize,
    pub errors: Vec<RuleError>,
    pub duplicates: Vec<Duplicate>,
}

/// Reads, parses and validates a rule file.
pub fn check_file(path: &Path) -> Checked {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => check(&file, &text),
        Err(e) => Checked {
            errors: vec![RuleError {
                file,
                group: None,
                rule: None,
                reason: format!("cannot read the file: {e}"),
            }],
            ..Checked::default()
        },
    }
}

/// Parses and validates the text of rule file `file` (Prometheus's rulefmt `Validate`).
pub fn check(file: &str, text: &str) -> Checked {
    let error =
        |group: Option<&RuleGroup>, rule: Option<(usize, &Rule)>, reason: String| RuleError {
            file: file.to_string(),
            group: group.map(|g| g.name.clone()),
            rule: rule.map(|(i, r)| {
                (
                    i + 1,
                    if r.alert.is_empty() {
                        r.record.clone()
                    } else {
                        r.alert.clone()
                    },
                )
            }),
            reason,
        };
    // Only the first YAML document counts, as in Prometheus.
    let parsed = match serde_norway::Deserializer::from_str(text).next() {
        None => Ok(RuleFile::default()),
        Some(doc) => Option::<RuleFile>::deserialize(doc).map(Option::unwrap_or_default),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            return Checked {
                errors: vec![error(None, None, format!("yaml: {e}"))],
                ..Checked::default()
            };
        }
    };
    let mut out = Checked::default();
    let mut names = std::collections::BTreeSet::new();
    let mut seen: BTreeMap<(String, BTreeMap<String, String>), usize> = BTreeMap::new();
    for group in &parsed.groups {
        if group.name.is_empty() {
            out.errors
                .push(error(None, None, "Groupname must not be empty".into()));
        } else if !names.insert(group.name.clone()) {
            out.errors.push(error(
                None,
                None,
                format!("groupname: {:?} is repeated in the same file", group.name),
            ));
        }
        if let Some(interval) = &group.interval
            && let Err(e) = parse_duration_ms(interval)
        {
            out.errors.push(error(Some(group), None, e));
        }
        for (i, rule) in group.rules.iter().enumerate() {
            for reason in validate(rule) {
                out.errors.push(error(Some(group), Some((i, rule)), reason));
            }
            out.rules += 1;
            let name = if rule.alert.is_empty() {
                &rule.record
            } else {
                &rule.alert
            };
            *seen.entry((name.clone(), rule.labels.clone())).or_default() += 1;
        }
    }
    out.duplicates = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((name, labels), _)| Duplicate { name, labels })
        .collect();
    out.parsed = parsed;
    out
}

/// What is wrong with one rule (rulefmt `RuleNode.Validate`).
fn validate(rule: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    if !rule.record.is_empty() && !rule.alert.is_empty() {
        out.push("only one of 'record' and 'alert' must be set".into());
    }
    if rule.record.is_empty() && rule.alert.is_empty() {
        out.push("one of 'record' or 'alert' must be set".into());
    }
    if rule.expr.is_empty() {
        out.push("field 'expr' must be set in rule".into());
    } else if let Err(e) = promql_parser::parser::parse(&rule.expr) {
        out.push(format!("could not parse expression: {e}"));
    }
    let durations = [
        ("for", &rule.for_),
        ("keep_firing_for", &rule.keep_firing_for),
    ];
    let mut set = Vec::new();
    for (field, value) in durations {
        match value.as_deref().map(parse_duration_ms) {
            Some(Err(e)) => out.push(e),
            Some(Ok(ms)) if ms != 0 => set.push(field),
            _ => {}
        }
    }
    if !rule.record.is_empty() {
        if !rule.annotations.is_empty() {
            out.push("invalid field 'annotations' in recording rule".into());
        }
        for field in set {
            out.push(format!("invalid field '{field}' in recording rule"));
        }
        if !is_valid_metric_name(&rule.record) {
            out.push(format!("invalid recording rule name: {}", rule.record));
        }
    }
    for name in rule.labels.keys() {
        if !is_valid_label_name(name) || name == "__name__" {
            out.push(format!("invalid label name: {name}"));
        }
    }
    for name in rule.annotations.keys() {
        if !is_valid_label_name(name) {
            out.push(format!("invalid annotation name: {name}"));
        }
    }
    // Templates are those of alerting rules only (rulefmt testTemplateParsing).
    if !rule.alert.is_empty() {
        let name = format!("__alert_{}", rule.alert);
        for (kind, map) in [("label", &rule.labels), ("annotation", &rule.annotations)] {
            for (key, text) in map {
                if let Err(e) = Template::parse(&name, text) {
                    out.push(format!("{kind} {key:?}: {e}"));
                }
            }
        }
    }
    out
}
