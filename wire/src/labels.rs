//! Validated label sets: the identity of a series.
//!
//! Rules from the remote-write 1.0 spec ("Labels"): label names match `[a-zA-Z_][a-zA-Z0-9_]*`,
//! the metric name (the `__name__` value) matches `[a-zA-Z_:][a-zA-Z0-9_:]*`, no label name
//! repeats, and no name or value is empty (an empty value means "no label" in Prometheus, so it
//! is refused rather than stored). Every series needs a `__name__`. Labels are kept sorted by
//! name, which is the order the spec requires on the wire; input in another order is sorted
//! rather than refused, as Prometheus's own receiver does.
//!
//! The [`LabelSet::fingerprint`] is xxh3-64 over `name 0xff value 0xff ...` in sorted order:
//! stable across processes, versions and machines, so it can shard and be persisted.

use std::fmt;

use crate::prompb::Label;
use crate::protocol::METRIC_NAME;

/// What is wrong with one label of one series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("series {series}: {problem}")]
pub struct LabelError {
    /// The offending series as written (`name{a="b"}`), with its index in the request if known.
    pub series: String,
    pub problem: LabelProblem,
}

/// The specific rule a label broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelProblem {
    #[error("label with an empty name (value {value:?})")]
    EmptyName { value: String },
    #[error("label name {name:?} is invalid: it must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName { name: String },
    #[error("label {name:?} has an empty value; omit the label instead")]
    EmptyValue { name: String },
    #[error("label name {name:?} appears more than once")]
    DuplicateName { name: String },
    #[error("no __name__ label: every series needs a metric name")]
    MissingMetricName,
    #[error("metric name {name:?} is invalid: it must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName { name: String },
}

/// A sorted, validated set of labels including `__name__`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet {
    labels: Vec<Label>,
}

/// True if `name` is a valid label name per the remote-write 1.0 spec.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True if `name` is a valid metric name per the remote-write 1.0 spec.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// A name/value pair, owned ([`Label`]) or borrowed from a request body
/// ([`crate::view::LabelRef`]): validation, fingerprints and rendering work on either.
pub trait LabelPair {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

impl LabelPair for Label {
    fn name(&self) -> &str {
        &self.name
    }
    fn value(&self) -> &str {
        &self.value
    }
}

/// Sorts `labels` by name and checks them against the rules in the module docs.
pub fn sort_and_check<L: LabelPair>(labels: &mut [L]) -> Result<(), LabelError> {
    if !labels.is_sorted_by(|a, b| a.name() <= b.name()) {
        labels.sort_unstable_by(|a, b| a.name().cmp(b.name()));
    }
    let mut has_name = false;
    for (i, l) in labels.iter().enumerate() {
        let (name, value) = (l.name(), l.value());
        let problem = if name.is_empty() {
            Some(LabelProblem::EmptyName {
                value: value.to_string(),
            })
        } else if i > 0 && labels[i - 1].name() == name {
            Some(LabelProblem::DuplicateName {
                name: name.to_string(),
            })
        } else if !is_valid_label_name(name) {
            Some(LabelProblem::InvalidName {
                name: name.to_string(),
            })
        } else if value.is_empty() {
            Some(LabelProblem::EmptyValue {
                name: name.to_string(),
            })
        } else if name == METRIC_NAME {
            has_name = true;
            (!is_valid_metric_name(value)).then(|| LabelProblem::InvalidMetricName {
                name: value.to_string(),
            })
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(LabelError {
                series: render(labels),
                problem,
            });
        }
    }
    if !has_name {
        return Err(LabelError {
            series: render(labels),
            problem: LabelProblem::MissingMetricName,
        });
    }
    Ok(())
}

/// Owned copies of borrowed labels.
pub fn to_owned<L: LabelPair>(labels: &[L]) -> Vec<Label> {
    labels
        .iter()
        .map(|l| Label::new(l.name(), l.value()))
        .collect()
}

impl LabelSet {
    /// Sorts and validates `labels`.
    pub fn new(mut labels: Vec<Label>) -> Result<Self, LabelError> {
        sort_and_check(&mut labels)?;
        Ok(Self { labels })
    }

    /// The value of `__name__`.
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME).unwrap_or_default()
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.labels[i].value.as_str())
    }

    /// Labels in sorted order.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Gives the sorted labels back.
    pub fn into_labels(self) -> Vec<Label> {
        self.labels
    }

    /// Stable 64-bit identity of the series (see the module docs).
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }
}

/// The fingerprint of already sorted labels, without validating them; equal to
/// [`LabelSet::fingerprint`] for a valid set.
pub fn fingerprint<L: LabelPair>(sorted: &[L]) -> u64 {
    // One-shot xxh3 over a stack buffer: the streaming hasher gives the same value but copies
    // every short piece into its own buffer, which costs more than the hash on the ingest path.
    const STACK: usize = 1024;
    let len: usize = sorted
        .iter()
        .map(|l| l.name().len() + l.value().len() + 2)
        .sum();
    let mut stack = [0u8; STACK];
    let mut heap = Vec::new();
    let buf = if len <= STACK {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap[..]
    };
    let mut at = 0;
    for l in sorted {
        for part in [l.name(), l.value()] {
            buf[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
            buf[at] = 0xff;
            at += 1;
        }
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(&self.labels))
    }
}

/// Renders labels the way PromQL writes a series: `name{a="b", c="d"}`, values escaped.
/// Long label sets are cut at 512 characters so error messages stay readable.
pub fn render<L: LabelPair>(labels: &[L]) -> String {
    let mut out = String::new();
    if let Some(n) = labels.iter().find(|l| l.name() == METRIC_NAME) {
        out.push_str(n.value());
    }
    out.push('{');
    let mut first = true;
    for l in labels.iter().filter(|l| l.name() != METRIC_NAME) {
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(l.name());
        out.push_str("=\"");
        for c in l.value().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        if out.len() > 512 {
            out.push_str(", ...");
            break;
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn l(n: &str, v: &str) -> Label {
        Label::new(n, v)
    }

    #[test]
    fn sorts_and_validates() {
        let set = LabelSet::new(vec![
            l("job", "node"),
            l("__name__", "up"),
            l("cell", "hz-07"),
        ])
        .unwrap();
        let names: Vec<_> = set.labels().iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "cell", "job"]);
        assert_eq!(set.metric_name(), "up");
        assert_eq!(set.get("cell"), Some("hz-07"));
        assert_eq!(set.get("nope"), None);
        assert_eq!(set.to_string(), r#"up{cell="hz-07", job="node"}"#);
    }

    #[test]
    fn errors_name_the_label_and_series() {
        let cases = [
            (
                vec![l("__name__", "up"), l("1job", "x")],
                "label name \"1job\" is invalid",
            ),
            (
                vec![l("__name__", "up"), l("job", "")],
                "label \"job\" has an empty value",
            ),
            (vec![l("__name__", "up"), l("", "x")], "empty name"),
            (
                vec![l("__name__", "up"), l("a", "1"), l("a", "2")],
                "\"a\" appears more than once",
            ),
            (vec![l("job", "x")], "no __name__"),
            (
                vec![l("__name__", "bad-name")],
                "metric name \"bad-name\" is invalid",
            ),
            (
                vec![l("__name__", "up"), l("jöb", "x")],
                "\"jöb\" is invalid",
            ),
        ];
        for (labels, want) in cases {
            let err = LabelSet::new(labels).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(err.starts_with("series "), "{err}");
        }
        let err = LabelSet::new(vec![l("__name__", "up"), l("job", "")]).unwrap_err();
        assert_eq!(err.series, r#"up{job=""}"#);
    }

    #[test]
    fn colons_only_in_metric_names() {
        assert!(LabelSet::new(vec![l("__name__", "job:rate:5m")]).is_ok());
        assert!(LabelSet::new(vec![l("__name__", "x"), l("a:b", "1")]).is_err());
    }

    #[test]
    fn fingerprint_is_stable() {
        const PINNED: u64 = 9_644_008_637_806_697_401;
        let set = LabelSet::new(vec![l("__name__", "up"), l("job", "node")]).unwrap();
        // Pinned: the fingerprint is persisted and used for sharding, so it must never change.
        assert_eq!(
            set.fingerprint(),
            fingerprint(&[l("__name__", "up"), l("job", "node")])
        );
        assert_eq!(set.fingerprint(), PINNED);
    }

    proptest! {
        #[test]
        fn order_does_not_change_identity(
            mut pairs in prop::collection::btree_map("[a-z_][a-z0-9_]{0,6}", "\\PC{1,8}", 0..6)
        ) {
            pairs.remove("__name__");
            let mut labels: Vec<Label> = pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect();
            labels.push(l("__name__", "m"));
            let a = LabelSet::new(labels.clone()).unwrap();
            labels.reverse();
            let b = LabelSet::new(labels).unwrap();
            prop_assert_eq!(a.fingerprint(), b.fingerprint());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn never_panics(labels in prop::collection::vec(("\\PC{0,4}", "\\PC{0,4}"), 0..5)) {
            let _ = LabelSet::new(labels.into_iter().map(|(n, v)| Label::new(n, v)).collect());
        }
    }
}
