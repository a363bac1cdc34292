//! Writing metrics pages in the Prometheus text exposition format 0.0.4, for pages whose
//! series change from one scrape to the next (simulated exporters, the planner's forecasts),
//! which a registry of fixed metrics does not fit.

use std::fmt::Write as _;

/// The content type of a page [`expose`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

/// One sample: its series name is the family's name plus `suffix` (`_bucket`, `_sum`,
/// `_count` for histograms).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
    }

    pub fn with(mut self, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        self.push(labels, value);
        self
    }
}

/// Renders families in the text exposition format: `# HELP`, `# TYPE`, then each sample
/// with its label values escaped (`\\`, `\"`, `\n`).
pub fn expose(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            out.push_str(f.name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let escaped = value
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{name}=\"{escaped}\"");
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Format, parse};

    #[test]
    fn a_written_page_parses_back() {
        let page = expose(&[Family::new("up", Kind::Gauge, "Whether it is up.")
            .with(vec![("job", "a\"b\\c\nd".into())], 1.0)
            .with(vec![], 0.5)]);
        let scrape = parse(&page, Format::Text).unwrap_or_else(|e| panic!("{e}: {page}"));
        assert_eq!(scrape.samples.len(), 2);
        assert_eq!(scrape.samples[0].labels[1].value, "a\"b\\c\nd");
        assert_eq!(scrape.samples[1].value, 0.5);
    }
}
