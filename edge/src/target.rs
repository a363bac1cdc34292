//! Scrape targets from discovered label sets, as Prometheus builds them
//! (`PopulateLabels` in `scrape/target.go` of Prometheus 3.x):
//!
//! 1. The discovered labels (`__address__`, `__meta_*`), then the group's labels where the
//!    target has none, then `job`, `__scrape_interval__`, `__scrape_timeout__`,
//!    `__metrics_path__`, `__scheme__` and one `__param_<name>` per `params` entry, each only
//!    where not set already.
//! 2. `relabel_configs`; a rule may drop the target.
//! 3. Checks: an address is left and has no `/`; interval and timeout parse, are not zero,
//!    and the timeout is not longer than the interval.
//! 4. `__meta_*` labels are removed and `instance` defaults to the address. Labels starting
//!    with `__` stay with the target (they make its URL) but not on its series.

use std::collections::BTreeMap;

use strata_wire::Label;
use strata_wire::duration::{format_duration_ms, parse_duration_ms};

use crate::config::ScrapeConfig;
use crate::relabel;

const ADDRESS: &str = "__address__";
const SCHEME: &str = "__scheme__";
const METRICS_PATH: &str = "__metrics_path__";
const INTERVAL: &str = "__scrape_interval__";
const TIMEOUT: &str = "__scrape_timeout__";
const PARAM_PREFIX: &str = "__param_";
const META_PREFIX: &str = "__meta_";

/// Labels by name, as discovery gives them.
pub type LabelMap = BTreeMap<String, String>;

/// A target to scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Every label after relabelling, internal (`__`) ones included, sorted.
    pub labels: Vec<Label>,
    /// The labels it was discovered with, before relabelling.
    pub discovered: Vec<Label>,
    pub interval_ms: i64,
    pub timeout_ms: i64,
    /// The job's `params`; `__param_<name>` labels replace the first value of each.
    pub params: BTreeMap<String, Vec<String>>,
}

/// What relabelling made of one discovered label set.
#[derive(Debug, Clone, PartialEq)]
pub enum Populated {
    Scrape(Target),
    /// Dropped by a relabel rule; kept for `/api/v1/targets` (`droppedTargets`).
    Dropped {
        discovered: Vec<Label>,
    },
}

fn get<'a>(labels: &'a [Label], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
        .filter(|v| !v.is_empty())
}

/// Builds the target of one discovered label set (`target`) of a group whose common labels
/// are `group`, with the job's settings; the error says why the label set is unusable.
pub fn populate(
    cfg: &ScrapeConfig,
    target: &LabelMap,
    group: &LabelMap,
) -> Result<Populated, String> {
    let mut lb = target.clone();
    for (name, value) in group {
        lb.entry(name.clone()).or_insert_with(|| value.clone());
    }
    let interval = cfg.scrape_interval.map_or(0, |d| d.0.as_millis() as i64);
    let timeout = cfg.scrape_timeout.map_or(0, |d| d.0.as_millis() as i64);
    let defaults = [
        ("job", cfg.job_name.clone()),
        (INTERVAL, format_duration_ms(interval)),
        (TIMEOUT, format_duration_ms(timeout)),
        (METRICS_PATH, cfg.metrics_path.clone()),
        (SCHEME, cfg.scheme.clone()),
    ];
    let params = cfg
        .params
        .iter()
        .filter_map(|(k, v)| Some((format!("{PARAM_PREFIX}{k}"), v.first()?.clone())));
    for (name, value) in defaults
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .chain(params)
    {
        let slot = lb.entry(name).or_default();
        if slot.is_empty() {
            *slot = value;
        }
    }
    let discovered: Vec<Label> = lb
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| Label::new(n.clone(), v.clone()))
        .collect();
    let Some(mut labels) = relabel::process(&discovered, &cfg.relabel_configs) else {
        return Ok(Populated::Dropped { discovered });
    };
    let address = get(&labels, ADDRESS).ok_or("no address")?.to_string();
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    let duration = |name: &str, what: &str| -> Result<i64, String> {
        let text = get(&labels, name).unwrap_or_default();
        let ms = parse_duration_ms(text).map_err(|e| format!("error parsing {what}: {e}"))?;
        if ms == 0 {
            return Err(format!("{what} cannot be 0"));
        }
        Ok(ms)
    };
    let interval_ms = duration(INTERVAL, "scrape interval")?;
    let timeout_ms = duration(TIMEOUT, "scrape timeout")?;
    if timeout_ms > interval_ms {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            get(&labels, TIMEOUT).unwrap_or_default(),
            get(&labels, INTERVAL).unwrap_or_default()
        ));
    }
    labels.retain(|l| !l.name.starts_with(META_PREFIX));
    if get(&labels, "instance").is_none() {
        labels.retain(|l| l.name != "instance");
        labels.push(Label::new("instance", address));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(Populated::Scrape(Target {
        labels,
        discovered,
        interval_ms,
        timeout_ms,
        params: cfg.params.clone(),
    }))
}

impl Target {
    /// The labels its series get: those not starting with `__`.
    pub fn series_labels(&self) -> Vec<Label> {
        self.labels
            .iter()
            .filter(|l| !l.name.starts_with("__"))
            .cloned()
            .collect()
    }

    /// The URL to scrape: scheme, address and metrics path from its labels; the query is the
    /// job's `params` with each `__param_<name>` label as the first value of its parameter,
    /// sorted by name (Go's `url.Values.Encode`).
    pub fn url(&self) -> String {
        let label = |name| get(&self.labels, name).unwrap_or_default();
        let mut url = format!(
            "{}://{}{}",
            label(SCHEME),
            label(ADDRESS),
            label(METRICS_PATH)
        );
        let mut values = self.params.clone();
        for l in &self.labels {
            if let Some(name) = l.name.strip_prefix(PARAM_PREFIX) {
                let v = values.entry(name.to_string()).or_default();
                match v.first_mut() {
                    Some(first) => first.clone_from(&l.value),
                    None => v.push(l.value.clone()),
                }
            }
        }
        let params: Vec<(&str, &str)> = values
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
            .collect();
        if !params.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&serde_urlencoded::to_string(&params).unwrap_or_default());
        }
        url
    }
}

/// The discovered label sets of one target group: for each target its `__address__`, with
/// the group's labels.
pub fn group_targets<'a>(
    targets: &'a [String],
    labels: &'a LabelMap,
) -> impl Iterator<Item = (LabelMap, &'a LabelMap)> + 'a {
    targets
        .iter()
        .map(move |t| (BTreeMap::from([(ADDRESS.to_string(), t.clone())]), labels))
}

/// The discovered label sets of a job's `static_configs`.
pub fn static_targets(cfg: &ScrapeConfig) -> Vec<(LabelMap, &LabelMap)> {
    cfg.static_configs
        .iter()
        .flat_map(|sc| group_targets(&sc.targets, &sc.labels))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn job(yaml: &str) -> ScrapeConfig {
        Config::parse(&format!(
            "global:\n  scrape_interval: 15s\nscrape_configs:\n{yaml}"
        ))
        .expect("valid")
        .scrape_configs
        .remove(0)
    }

    fn all(cfg: &ScrapeConfig) -> Vec<Result<Populated, String>> {
        static_targets(cfg)
            .into_iter()
            .map(|(t, g)| populate(cfg, &t, g))
            .collect()
    }

    fn target(p: &Result<Populated, String>) -> &Target {
        match p {
            Ok(Populated::Scrape(t)) => t,
            other => panic!("not scraped: {other:?}"),
        }
    }

    #[test]
    fn defaults_instance_and_url() {
        let cfg = job(
            "  - job_name: node\n    params: {collect: [cpu, meminfo]}\n    static_configs:\n      - targets: ['10.0.0.1:9100']\n        labels: {cell: hz-07}\n",
        );
        let got = all(&cfg);
        let t = target(&got[0]);
        assert_eq!(
            t.series_labels(),
            vec![
                Label::new("cell", "hz-07"),
                Label::new("instance", "10.0.0.1:9100"),
                Label::new("job", "node"),
            ]
        );
        assert_eq!(
            t.url(),
            "http://10.0.0.1:9100/metrics?collect=cpu&collect=meminfo"
        );
        assert_eq!((t.interval_ms, t.timeout_ms), (15_000, 10_000));
        assert!(
            t.labels
                .iter()
                .any(|l| l.name == INTERVAL && l.value == "15s")
        );
    }

    #[test]
    fn relabelling_drops_rewrites_and_overrides() {
        let cfg = job(r#"  - job_name: k
    static_configs:
      - targets: ['a:1', 'b:2', 'c:3']
    relabel_configs:
      - source_labels: [__address__]
        regex: 'b:.*'
        action: drop
      - source_labels: [__address__]
        regex: '(.*):\d+'
        target_label: __address__
        replacement: '${1}:9100'
      - source_labels: [__address__]
        regex: 'c:.*'
        target_label: __scrape_interval__
        replacement: 1m
      - target_label: __param_target
        replacement: x y
"#);
        let got = all(&cfg);
        assert!(matches!(got[1], Ok(Populated::Dropped { .. })));
        let a = target(&got[0]);
        assert_eq!(a.url(), "http://a:9100/metrics?target=x+y");
        assert_eq!(get(&a.labels, "instance"), Some("a:9100"));
        let c = target(&got[2]);
        assert_eq!(c.interval_ms, 60_000);
    }

    #[test]
    fn unusable_targets_say_why() {
        let err = |relabel: &str| {
            let cfg = job(&format!(
                "  - job_name: k\n    static_configs: [{{targets: ['a:1']}}]\n    relabel_configs:\n{relabel}"
            ));
            all(&cfg).remove(0).expect_err("unusable")
        };
        assert_eq!(
            err("      - {action: labeldrop, regex: __address__}\n"),
            "no address"
        );
        assert_eq!(
            err("      - {target_label: __address__, replacement: 'a:1/x'}\n"),
            "\"a:1/x\" is not a valid hostname"
        );
        assert_eq!(
            err("      - {target_label: __scrape_timeout__, replacement: 20s}\n"),
            "scrape timeout cannot be greater than scrape interval (\"20s\" > \"15s\")"
        );
        assert_eq!(
            err("      - {target_label: __scrape_interval__, replacement: 0}\n"),
            "scrape interval cannot be 0"
        );
        assert!(
            err("      - {target_label: __scrape_interval__, replacement: often}\n")
                .starts_with("error parsing scrape interval")
        );
    }
}
