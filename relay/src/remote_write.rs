//! Prometheus's `remote_write` section (`config/config.go`: `RemoteWriteConfig`, `QueueConfig`,
//! `MetadataConfig`, and the HTTP client fields it shares with scrape configs), as edges and
//! cascades read it, so users reuse their files. Also what every forwarding hop does with a
//! section: its sender settings, its queue directory, and its `write_relabel_configs`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strata_wire::WriteRequest;
use strata_wire::protocol::{PROTO_V1, PROTO_V2};

use crate::config::SenderConfig;
use crate::relabel::{self, Rule};
use crate::tls::TlsConfig;

/// A duration written as Prometheus writes them (`15s`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PromDuration(pub Duration);

impl TryFrom<String> for PromDuration {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let ms = strata_wire::duration::parse_duration_ms(&s)?;
        Ok(Self(Duration::from_millis(ms as u64)))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

/// How a client authenticates to a target or a remote-write destination. The fields sit
/// inline in scrape, HTTP discovery and remote-write sections, as in Prometheus's format
/// (not flattened: serde would then lose the line of a bad field).
#[derive(Debug, Clone, Default)]
pub struct HttpClient {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: Option<TlsConfig>,
}

/// A secret's text: the file's contents without surrounding whitespace, as Prometheus reads
/// `password_file`, `credentials_file` and `bearer_token_file`.
pub fn read_secret(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
}

impl HttpClient {
    /// The `Authorization` header to send, if any. Secret files are read on every call, so a
    /// rotated token is picked up without a reload, as Prometheus does.
    pub fn authorization_header(&self) -> Result<Option<String>, String> {
        use base64::Engine;
        if let Some(b) = &self.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (_, Some(file)) => read_secret(file)?,
                (Some(p), None) => p.clone(),
                (None, None) => String::new(),
            };
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{password}", b.username));
            return Ok(Some(format!("Basic {encoded}")));
        }
        let (kind, credentials) = match (
            &self.authorization,
            &self.bearer_token,
            &self.bearer_token_file,
        ) {
            (Some(a), _, _) => (
                a.kind.clone().unwrap_or_else(|| "Bearer".into()),
                match (&a.credentials, &a.credentials_file) {
                    (_, Some(file)) => read_secret(file)?,
                    (Some(c), None) => c.clone(),
                    (None, None) => return Ok(None),
                },
            ),
            (None, Some(token), _) => ("Bearer".into(), token.clone()),
            (None, None, Some(file)) => ("Bearer".into(), read_secret(file)?),
            (None, None, None) => return Ok(None),
        };
        Ok(Some(format!("{kind} {credentials}")))
    }

    /// An HTTP client with this section's TLS settings (files are read now).
    pub fn build(&self) -> Result<reqwest::Client, String> {
        crate::tls::client_builder(self.tls_config.as_ref())?
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// Prometheus allows one way of authenticating per client; TLS files must be readable.
    pub fn check(&self) -> Result<(), String> {
        if let Some(tls) = &self.tls_config {
            tls.client_config()?;
        }
        if let Some(a) = &self.authorization
            && a.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("basic"))
        {
            return Err(
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead".into(),
            );
        }
        let ways = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
        ];
        if ways.iter().filter(|&&w| w).count() > 1 {
            return Err(
                "at most one of basic_auth, authorization and bearer_token(_file) may be configured"
                    .into(),
            );
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err(
                "at most one of bearer_token & bearer_token_file must be configured".into(),
            );
        }
        if let Some(b) = &self.basic_auth
            && b.password.is_some()
            && b.password_file.is_some()
        {
            return Err(
                "at most one of basic_auth password & password_file must be configured".into(),
            );
        }
        if let Some(a) = &self.authorization
            && a.credentials.is_some()
            && a.credentials_file.is_some()
        {
            return Err(
                "at most one of authorization credentials & credentials_file must be configured"
                    .into(),
            );
        }
        Ok(())
    }
}

/// How a remote-write destination's relay queue sends (Prometheus's `queue_config`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub capacity: Option<usize>,
    pub max_shards: Option<usize>,
    pub min_shards: Option<usize>,
    pub max_samples_per_send: Option<usize>,
    pub batch_send_deadline: Option<PromDuration>,
    pub min_backoff: Option<PromDuration>,
    pub max_backoff: Option<PromDuration>,
    pub retry_on_http_429: Option<bool>,
    pub sample_age_limit: Option<PromDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    pub send: Option<bool>,
    pub send_interval: Option<PromDuration>,
    pub max_samples_per_send: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    pub name: Option<String>,
    pub remote_timeout: Option<PromDuration>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub write_relabel_configs: Vec<Rule>,
    #[serde(default)]
    pub queue_config: QueueConfig,
    #[serde(default)]
    pub metadata_config: MetadataConfig,
    /// `prometheus.WriteRequest` (1.0, the default) or `io.prometheus.write.v2.Request`.
    pub protobuf_message: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: Option<TlsConfig>,
}

/// Implements `client()` for sections that carry Prometheus's HTTP client fields inline
/// (`basic_auth`, `authorization`, `bearer_token(_file)`, `tls_config`).
#[macro_export]
macro_rules! http_client_fields {
    ($($section:ty),*) => {$(
        impl $section {
            /// The section's HTTP client fields.
            pub fn client(&self) -> $crate::remote_write::HttpClient {
                $crate::remote_write::HttpClient {
                    basic_auth: self.basic_auth.clone(),
                    authorization: self.authorization.clone(),
                    bearer_token: self.bearer_token.clone(),
                    bearer_token_file: self.bearer_token_file.clone(),
                    tls_config: self.tls_config.clone(),
                }
            }
        }
    )*};
}

http_client_fields!(RemoteWriteConfig);

impl RemoteWriteConfig {
    /// True when the section asks for remote-write 2.0.
    pub fn is_v2(&self) -> bool {
        self.protobuf_message.as_deref() == Some(PROTO_V2)
    }
}

/// Headers remote-write sets itself (Prometheus's `reservedHeaders`).
const RESERVED_HEADERS: [&str; 6] = [
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
];

/// Checks a list of `remote_write` sections as Prometheus does: valid URLs and client
/// settings, distinct names, no reserved headers, a known protobuf message.
pub fn check_all(sections: &[RemoteWriteConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut destinations = HashSet::new();
    for (i, rw) in sections.iter().enumerate() {
        let at = |m: String| format!("remote_write[{i}] ({}): {m}", rw.url);
        check_url(&rw.url).map_err(at)?;
        rw.client().check().map_err(at)?;
        // Each destination has its own queue, named by name (given or derived from the
        // URL) and URL.
        let url = reqwest::Url::parse(&rw.url).map_err(|e| at(e.to_string()))?;
        let name = crate::config::destination_name(rw.name.as_deref(), &url);
        if !destinations.insert((name, rw.url.clone())) {
            return Err(at(
                "another remote_write has the same url and name; give each a distinct name".into(),
            ));
        }
        if let Some(name) = &rw.name
            && !names.insert(name.clone())
        {
            return Err(format!(
                "found multiple remote write configs with job name {name:?}"
            ));
        }
        for h in rw.headers.keys() {
            if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                return Err(at(format!(
                    "{h} is a reserved header. It must not be changed"
                )));
            }
        }
        if let Some(m) = &rw.protobuf_message
            && !matches!(m.as_str(), PROTO_V1 | PROTO_V2)
        {
            return Err(at(format!(
                "unknown remote write protobuf message {m}, supported: {PROTO_V1}, {PROTO_V2}"
            )));
        }
    }
    Ok(())
}

/// An `http://` or `https://` URL with something after the scheme.
pub fn check_url(url: &str) -> Result<(), String> {
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        _ => Err(format!("{url:?} is not an http or https URL")),
    }
}

/// The relay's sender settings for a `remote_write` section, Prometheus's `queue_config`
/// mapped onto the relay: `max_shards` → `shards`, `max_samples_per_send`,
/// `batch_send_deadline`, `min_backoff`, `max_backoff`, `retry_on_http_429`,
/// `sample_age_limit`, `remote_timeout`. `capacity` and `min_shards` size Prometheus's
/// in-memory buffers and have no counterpart: the queue is on disk, bounded by
/// `--max-queue-bytes`.
/// Returns the checked settings and the destination's name (`name`, or the URL's host:port).
pub fn sender_config(rw: &RemoteWriteConfig) -> Result<(SenderConfig, String), String> {
    let d = SenderConfig::default();
    let q = &rw.queue_config;
    let mut headers = rw.headers.clone();
    if let Some(auth) = rw.client().authorization_header()? {
        headers.insert("Authorization".into(), auth);
    }
    let ms = |v: Option<PromDuration>, default: u64| v.map_or(default, |d| d.0.as_millis() as u64);
    let config = SenderConfig {
        url: rw.url.clone(),
        name: rw.name.clone(),
        headers,
        max_samples_per_send: q.max_samples_per_send.unwrap_or(d.max_samples_per_send),
        batch_send_deadline_seconds: q
            .batch_send_deadline
            .map_or(d.batch_send_deadline_seconds, |v| v.0.as_secs_f64()),
        shards: q.max_shards.unwrap_or(d.shards),
        min_backoff_ms: ms(q.min_backoff, d.min_backoff_ms),
        max_backoff_ms: ms(q.max_backoff, d.max_backoff_ms),
        remote_timeout_seconds: rw
            .remote_timeout
            .map_or(d.remote_timeout_seconds, |v| v.0.as_secs_f64()),
        retry_on_http_429: q.retry_on_http_429.unwrap_or(d.retry_on_http_429),
        sample_age_limit_seconds: q.sample_age_limit.map_or(0, |v| v.0.as_secs()),
        remote_write_v2: rw.is_v2(),
        tls_config: rw.tls_config.clone(),
    };
    let name = config.validate().map_err(|e| e.to_string())?;
    Ok((config, name))
}

/// The directory of a destination's queue: its name and a hash of its URL, so two
/// destinations never share a queue and a restart finds its own.
pub fn queue_dir(root: &Path, name: &str, url: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join(format!(
        "{safe}-{:016x}",
        xxhash_rust::xxh3::xxh3_64(url.as_bytes())
    ))
}

/// Applies a section's `write_relabel_configs` to a decompressed 1.0 body and returns the
/// queue record for its destination (snappy-compressed) with its item count, or `None` when
/// every series was dropped.
pub fn relabel_body(body: &[u8], rules: &[Rule]) -> strata_wire::Result<Option<(Vec<u8>, u64)>> {
    let mut request = WriteRequest::decode_body(body)?;
    request
        .timeseries
        .retain_mut(|ts| match relabel::process(&ts.labels, rules) {
            Some(labels) => {
                ts.labels = labels;
                true
            }
            None => false,
        });
    if request.timeseries.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        request.encode_snappy()?,
        request.item_count() as u64,
    )))
}
