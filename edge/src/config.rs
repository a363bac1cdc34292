//! `strata edge --config edge.yaml`: the Prometheus configuration format, as far as a
//! scraper and forwarder uses it (Prometheus's `config/config.go`).
//!
//! - Every section is read strictly: an unknown field, a bad duration, size, relabel rule or
//!   URL is an error naming the file, the field and its line and column.
//! - Checks that span fields (a timeout longer than its interval, two jobs of one name) name
//!   the job.
//! - Defaults are Prometheus's: `scrape_interval` 1m, `scrape_timeout` 10s (never longer than
//!   the job's interval), `metrics_path` `/metrics`, `scheme` `http`, `honor_timestamps` true.
//! - `evaluation_interval` is accepted and unused, so an existing server's file loads as it is;
//!   `rule_files` and `alerting` are refused as Prometheus refuses them in agent mode.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::relabel::Rule;
use serde::Deserialize;
pub use strata_relay::remote_write::{
    Authorization, BasicAuth, HttpClient, MetadataConfig, PromDuration, QueueConfig,
    RemoteWriteConfig, check_url,
};
pub use strata_relay::tls::TlsConfig;

/// A size such as `10MB` or `512KiB` (base 2 either way, as Prometheus's `body_size_limit`);
/// 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct ByteSize(pub u64);

impl TryFrom<String> for ByteSize {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n: u64 = s[..digits]
            .parse()
            .map_err(|_| format!("invalid size {s:?}; write e.g. 10MB"))?;
        let shift = match &s[digits..] {
            "" | "B" => 0,
            "KB" | "KiB" => 10,
            "MB" | "MiB" => 20,
            "GB" | "GiB" => 30,
            "TB" | "TiB" => 40,
            unit => {
                return Err(format!(
                    "invalid size unit {unit:?} in {s:?}; use B, KB, MB, GB or TB"
                ));
            }
        };
        n.checked_mul(1 << shift)
            .map(Self)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: Global,
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Refused with Prometheus's agent-mode message.
    #[serde(default)]
    rule_files: Option<serde_norway::Value>,
    /// Refused with Prometheus's agent-mode message.
    #[serde(default)]
    alerting: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    pub scrape_interval: Option<PromDuration>,
    pub scrape_timeout: Option<PromDuration>,
    /// Accepted and unused: the edge evaluates no rules.
    pub evaluation_interval: Option<PromDuration>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
}

impl Global {
    /// The external labels as a label set: sorted by name, empty values left out.
    pub fn external_label_list(&self) -> Vec<strata_wire::Label> {
        self.external_labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| strata_wire::Label::new(n.clone(), v.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    pub refresh_interval: Option<PromDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSdConfig {
    pub url: String,
    pub refresh_interval: Option<PromDuration>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: Option<TlsConfig>,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

fn default_scheme() -> String {
    "http".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Option<PromDuration>,
    pub scrape_timeout: Option<PromDuration>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default)]
    pub http_sd_configs: Vec<HttpSdConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<Rule>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<Rule>,
    #[serde(default)]
    pub sample_limit: u64,
    #[serde(default)]
    pub label_limit: u64,
    #[serde(default)]
    pub label_name_length_limit: u64,
    #[serde(default)]
    pub label_value_length_limit: u64,
    #[serde(default)]
    pub body_size_limit: ByteSize,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: Option<TlsConfig>,
}

strata_relay::http_client_fields!(ScrapeConfig, HttpSdConfig);

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and checks a configuration; the error says which field, where, and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut c: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        c.check()?;
        Ok(c)
    }

    fn check(&mut self) -> Result<(), String> {
        if self.rule_files.is_some() {
            return Err("field rule_files is not allowed in agent mode".into());
        }
        if self.alerting.is_some() {
            return Err("field alerting is not allowed in agent mode".into());
        }
        let interval = self
            .global
            .scrape_interval
            .map_or(DEFAULT_INTERVAL, |d| d.0);
        // Prometheus: the default timeout, unless the global interval is shorter.
        let timeout = self
            .global
            .scrape_timeout
            .map_or(DEFAULT_TIMEOUT.min(interval), |d| d.0);
        if timeout > interval {
            return Err("global scrape timeout greater than scrape interval".into());
        }
        for name in self.global.external_labels.keys() {
            if !strata_wire::labels::is_valid_label_name(name) {
                return Err(format!("{name:?} is not a valid label name"));
            }
        }
        let mut jobs = HashSet::new();
        for sc in &mut self.scrape_configs {
            let job = sc.job_name.clone();
            let in_job = |m: String| format!("scrape_configs (job {job:?}): {m}");
            if job.is_empty() {
                return Err("scrape_configs: job_name is empty".into());
            }
            if !jobs.insert(job.clone()) {
                return Err(format!(
                    "found multiple scrape configs with job name {job:?}"
                ));
            }
            let job_interval = sc.scrape_interval.map_or(interval, |d| d.0);
            // Prometheus: the global timeout, unless the job's interval is shorter.
            let job_timeout = sc.scrape_timeout.map_or(timeout.min(job_interval), |d| d.0);
            if job_timeout > job_interval {
                return Err(format!(
                    "scrape timeout greater than scrape interval for scrape config with job name {job:?}"
                ));
            }
            sc.scrape_interval = Some(PromDuration(job_interval));
            sc.scrape_timeout = Some(PromDuration(job_timeout));
            match sc.scheme.as_str() {
                "http" | "https" => {}
                other => {
                    return Err(in_job(format!(
                        "scheme {other:?} is not supported; use http or https"
                    )));
                }
            }
            if !sc.metrics_path.starts_with('/') {
                return Err(in_job(format!(
                    "metrics_path {:?} must start with /",
                    sc.metrics_path
                )));
            }
            sc.client().check().map_err(in_job)?;
            for target in sc.static_configs.iter().flat_map(|s| &s.targets) {
                if target.is_empty() || target.contains('/') {
                    return Err(in_job(format!(
                        "{target:?} is not a valid target address; write host:port (the scheme and path are set by scheme and metrics_path)"
                    )));
                }
            }
            for name in sc.static_configs.iter().flat_map(|s| s.labels.keys()) {
                if !strata_wire::labels::is_valid_label_name(name) {
                    return Err(in_job(format!("{name:?} is not a valid label name")));
                }
            }
            for sd in &sc.http_sd_configs {
                check_url(&sd.url).map_err(in_job)?;
                sd.client().check().map_err(in_job)?;
            }
            if sc.file_sd_configs.iter().any(|f| f.files.is_empty()) {
                return Err(in_job(
                    "file_sd_configs need at least one entry in files".into(),
                ));
            }
        }
        strata_relay::remote_write::check_all(&self.remote_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels:
    region: cn-hangzhou
    cell: hz-07
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['127.0.0.1:9100']
        labels: {tier: meta}
    relabel_configs:
      - source_labels: [__address__]
        regex: '(.*):\d+'
        target_label: host
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: go_.*
        action: drop
    sample_limit: 50000
    body_size_limit: 10MB
    basic_auth: {username: edge, password_file: /etc/edge/pw}
  - job_name: apiserver
    scrape_interval: 5s
    metrics_path: /metrics/cadvisor
    params: {format: [prometheus]}
    honor_labels: true
    file_sd_configs:
      - files: ['/etc/edge/targets/*.json']
        refresh_interval: 1m
    http_sd_configs:
      - url: http://127.0.0.1:8080/sd
    authorization: {credentials_file: /var/run/token}
remote_write:
  - url: http://cascade:9201/api/v1/write
    headers: {X-Scope-OrgID: fleet}
    write_relabel_configs:
      - regex: tmp_.*
        action: labeldrop
    queue_config: {capacity: 10000, max_shards: 8, batch_send_deadline: 5s}
"#;

    #[test]
    fn a_prometheus_configuration_loads_with_its_defaults() {
        let c = Config::parse(FULL).expect("valid");
        assert_eq!(c.global.external_labels.len(), 2);
        let node = &c.scrape_configs[0];
        assert_eq!(
            node.scrape_interval,
            Some(PromDuration(Duration::from_secs(15)))
        );
        assert_eq!(
            node.scrape_timeout,
            Some(PromDuration(Duration::from_secs(10)))
        );
        assert_eq!(node.metrics_path, "/metrics");
        assert!(node.honor_timestamps);
        assert_eq!(node.body_size_limit, ByteSize(10 << 20));
        assert_eq!(node.relabel_configs.len(), 1);
        let api = &c.scrape_configs[1];
        // The global 10s timeout is longer than the job's 5s interval: the interval wins.
        assert_eq!(
            api.scrape_timeout,
            Some(PromDuration(Duration::from_secs(5)))
        );
        assert!(api.honor_labels);
        assert_eq!(c.remote_write[0].queue_config.capacity, Some(10_000));
        let short =
            Config::parse("global: {scrape_interval: 2s}\nscrape_configs: [{job_name: a}]\n")
                .expect("a short global interval caps the default timeout");
        assert_eq!(
            short.scrape_configs[0].scrape_timeout,
            Some(PromDuration(Duration::from_secs(2)))
        );
        assert!(
            Config::parse("")
                .expect("empty is valid")
                .scrape_configs
                .is_empty()
        );
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let err = |text: &str| Config::parse(text).expect_err("invalid");
        let e = err("scrape_configs:\n  - job_name: a\n    scrape_intervall: 15s\n");
        assert!(
            e.contains("unknown field `scrape_intervall`") && e.contains("line 3"),
            "{e}"
        );
        let e = err("global:\n  scrape_interval: 15 s\n");
        assert!(
            e.contains("not a valid duration string") && e.contains("line 2"),
            "{e}"
        );
        let e = err(
            "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: hashmod\n        target_label: x\n",
        );
        assert!(
            e.contains("requires non-zero modulus") && e.contains("line 4"),
            "{e}"
        );
        let e = err("scrape_configs:\n  - job_name: a\n    body_size_limit: 10 parsecs\n");
        assert!(e.contains("invalid size"), "{e}");
        assert_eq!(
            err("scrape_configs:\n  - job_name: a\n  - job_name: a\n"),
            "found multiple scrape configs with job name \"a\""
        );
        assert_eq!(
            err(
                "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n"
            ),
            "scrape timeout greater than scrape interval for scrape config with job name \"a\""
        );
        assert_eq!(
            err("rule_files: [a.yml]\n"),
            "field rule_files is not allowed in agent mode"
        );
        let e = err(
            "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['http://x:1/metrics']}]\n",
        );
        assert!(e.contains("not a valid target address"), "{e}");
        let e = err("remote_write:\n  - url: cascade:9201\n");
        assert!(e.contains("not an http or https URL"), "{e}");
        for (tls, want) in [
            ("{min_version: TLS10}", "TLS 1.2 and 1.3 only"),
            (
                "{min_version: TLS13, max_version: TLS12}",
                "lower than min_version",
            ),
            (
                "{ca_file: /nonexistent/ca.pem}",
                "cannot read ca_file /nonexistent/ca.pem",
            ),
            ("{cert_file: /c.pem}", "needs both cert"),
            ("{ca: x, ca_file: /y}", "at most one of ca and ca_file"),
            ("{ca: 'not pem'}", "ca holds no certificate"),
            ("{insecure: true}", "unknown field `insecure`"),
        ] {
            let e = err(&format!(
                "scrape_configs:\n  - job_name: a\n    scheme: https\n    tls_config: {tls}\n"
            ));
            assert!(e.contains(want), "{tls}: {e}");
        }
        Config::parse("scrape_configs:\n  - job_name: a\n    scheme: https\n    tls_config: {insecure_skip_verify: true, server_name: node.example}\n")
            .expect("https with tls_config");
        let e = err("remote_write:\n  - url: http://c/w\n  - url: http://c/w\n");
        assert!(e.contains("same url and name"), "{e}");
        let e = err("remote_write:\n  - url: http://c/w\n  - {url: http://c/w, name: 'c:80'}\n");
        assert!(e.contains("same url and name"), "{e}");
        Config::parse("remote_write:\n  - url: http://c/w\n  - {url: http://c/w, name: copy}\n")
            .expect("distinct names make distinct queues");
        let e = err("remote_write:\n  - url: http://c/w\n    headers: {Content-Type: x}\n");
        assert!(e.contains("reserved header"), "{e}");
        let e = err(
            "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u}\n    bearer_token: t\n",
        );
        assert!(e.contains("at most one of"), "{e}");
    }

    #[test]
    fn credentials_become_the_authorization_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let client = |yaml: &str| {
            let c = Config::parse(&format!("scrape_configs:\n  - job_name: a\n    {yaml}\n"))
                .expect("valid");
            c.scrape_configs[0].client().authorization_header()
        };
        assert_eq!(
            client("basic_auth: {username: edge, password: pw}"),
            Ok(Some("Basic ZWRnZTpwdw==".into()))
        );
        assert_eq!(
            client(&format!("bearer_token_file: {}", token.display())),
            Ok(Some("Bearer s3cret".into()))
        );
        assert_eq!(
            client(&format!(
                "authorization: {{type: Token, credentials_file: {}}}",
                token.display()
            )),
            Ok(Some("Token s3cret".into()))
        );
        assert_eq!(client("honor_labels: true"), Ok(None));
        let missing = client("bearer_token_file: /nonexistent/token").expect_err("missing");
        assert!(missing.contains("cannot read secret file"), "{missing}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.yaml");
        std::fs::write(&path, "global:\n  scrape_interval: soon\n").expect("write");
        let e = Config::load(&path).expect_err("invalid").to_string();
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
        let e = Config::load(&dir.path().join("missing.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
