//! `strata sim backfill`: writes the fleet's history through remote-write 1.0, so a store
//! holds months of history at once.
//!
//! Each series gets the labels a live scrape through `strata edge` gives it (`job`,
//! `instance`, the target's labels, and the external labels `region` and `cell`), so history
//! and live data are the same series. Steps are written oldest first and one step at a time:
//! a store that accepts samples only within a window behind its newest one (Prometheus, strata
//! central) takes the whole history as long as it holds nothing newer. A step is acknowledged
//! by every destination before the next starts. The first request carries the families'
//! metadata (remote-write 1.0 `metadata`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_wire::expose::{Family, Kind};
use strata_wire::prompb::{MetricMetadata, MetricType, WriteRequest};
use strata_wire::protocol::{WriteVersion, request_headers};
use strata_wire::{Label, Sample, TimeSeries};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::model::Fleet;
use crate::page::{Counters, Job, Target, render};
use crate::{Error, Result};

/// What to write, where, and how hard.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Remote-write URLs; each gets every sample.
    pub urls: Vec<String>,
    /// First step (inclusive) and end (exclusive), milliseconds since the epoch.
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    /// Requests in flight at once, over all destinations.
    pub concurrency: usize,
    pub series_per_request: usize,
    /// Jobs to write; empty means all.
    pub jobs: Vec<Job>,
    /// Sent as `Authorization: Bearer` (a cascade wants one).
    pub bearer_token: Option<String>,
}

impl BackfillOptions {
    pub fn validate(&self) -> Result<()> {
        if self.urls.is_empty() {
            return Err(Error::Config("give at least one --to URL".into()));
        }
        for url in &self.urls {
            reqwest::Url::parse(url).map_err(|e| {
                Error::Config(format!(
                    "{url:?} is not a URL ({e}); use e.g. http://127.0.0.1:9301/api/v1/write"
                ))
            })?;
        }
        if self.step_ms < 1000 {
            return Err(Error::Config("the step must be at least 1s".into()));
        }
        if self.end_ms <= self.start_ms {
            return Err(Error::Config("the history to write is empty".into()));
        }
        if self.concurrency == 0 || self.series_per_request == 0 {
            return Err(Error::Config(
                "concurrency and series per request must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// How many steps the history has.
    pub fn steps(&self) -> u64 {
        ((self.end_ms - self.start_ms + self.step_ms - 1) / self.step_ms) as u64
    }
}

/// Progress after each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub steps_done: u64,
    pub steps: u64,
    /// Samples acknowledged by every destination so far.
    pub samples: u64,
}

/// What a finished backfill wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub steps: u64,
    /// Samples each destination acknowledged.
    pub samples: u64,
    pub requests: u64,
    pub retries: u64,
    pub elapsed: Duration,
}

/// `families`, a target's page at `t`, as the series a scrape through the edge would produce.
pub fn as_series(fleet: &Fleet, target: Target, t: i64, families: Vec<Family>) -> Vec<TimeSeries> {
    let cell = &fleet.cells[target.cell];
    let mut common = vec![
        Label::new("cell", cell.name.clone()),
        Label::new("instance", target.instance(fleet)),
        Label::new("job", target.job.name()),
        Label::new("region", cell.region.clone()),
    ];
    common.extend(
        target
            .labels(fleet)
            .into_iter()
            .map(|(k, v)| Label::new(k, v)),
    );
    let mut out = Vec::new();
    for family in families {
        for s in family.samples {
            let mut labels = common.clone();
            labels.push(Label::new(
                "__name__",
                format!("{}{}", family.name, s.suffix),
            ));
            labels.extend(s.labels.into_iter().map(|(k, v)| Label::new(k, v)));
            labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            out.push(TimeSeries {
                labels,
                samples: vec![Sample {
                    value: s.value,
                    timestamp: t,
                }],
                ..Default::default()
            });
        }
    }
    out
}

enum Item {
    Body { body: Vec<u8>, samples: u64 },
    StepDone,
}

/// Writes the history; `progress` is called after each step.
pub async fn run(
    fleet: Arc<Fleet>,
    opts: BackfillOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Summary> {
    opts.validate()?;
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Item>(64);
    let generator = {
        let opts = opts.clone();
        std::thread::spawn(move || generate(&fleet, &opts, &tx))
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
    let limit = Arc::new(Semaphore::new(opts.concurrency));
    let mut in_flight: JoinSet<Result<(u64, u32)>> = JoinSet::new();
    let steps = opts.steps();
    let (mut done, mut samples, mut requests, mut retries) = (0, 0, 0, 0);
    let mut step_samples = 0;
    while let Some(item) = rx.recv().await {
        match item {
            Item::Body { body, samples: n } => {
                let body = Arc::new(body);
                step_samples += n;
                for url in &opts.urls {
                    let permit = limit.clone().acquire_owned().await;
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    let token = opts.bearer_token.clone();
                    in_flight.spawn(async move {
                        let _permit = permit;
                        send(&client, &url, token.as_deref(), &body)
                            .await
                            .map(|r| (n, r))
                    });
                }
            }
            Item::StepDone => {
                while let Some(joined) = in_flight.join_next().await {
                    let (_, r) = joined.map_err(|e| {
                        Error::Config(format!("a backfill request panicked: {e}"))
                    })??;
                    requests += 1;
                    retries += u64::from(r);
                }
                samples += step_samples;
                step_samples = 0;
                done += 1;
                progress(Progress {
                    steps_done: done,
                    steps,
                    samples,
                });
            }
        }
    }
    drop(rx);
    generator
        .join()
        .map_err(|_| Error::Config("the history generator panicked".into()))?;
    Ok(Summary {
        steps: done,
        samples,
        requests,
        retries,
        elapsed: started.elapsed(),
    })
}

/// Renders every step into request bodies; stops early when the receiving side went away.
fn generate(fleet: &Fleet, opts: &BackfillOptions, tx: &mpsc::Sender<Item>) {
    let mut counters = Counters::default();
    let mut metadata_sent = false;
    let mut t = opts.start_ms;
    while t < opts.end_ms {
        let mut batch: Vec<TimeSeries> = Vec::with_capacity(opts.series_per_request);
        let mut metadata = BTreeMap::new();
        for target in fleet.all_targets(t) {
            if !opts.jobs.is_empty() && !opts.jobs.contains(&target.job) {
                continue;
            }
            let families = render(fleet, target, t, &mut counters);
            if !metadata_sent {
                for f in &families {
                    metadata.entry(f.name).or_insert((f.kind, f.help));
                }
            }
            batch.extend(as_series(fleet, target, t, families));
            if batch.len() >= opts.series_per_request && !flush(&mut batch, tx) {
                return;
            }
        }
        if !metadata_sent {
            metadata_sent = true;
            let request = WriteRequest {
                timeseries: Vec::new(),
                metadata: metadata
                    .into_iter()
                    .map(|(name, (kind, help))| MetricMetadata {
                        r#type: match kind {
                            Kind::Counter => MetricType::Counter,
                            Kind::Gauge => MetricType::Gauge,
                            Kind::Histogram => MetricType::Histogram,
                        } as i32,
                        metric_family_name: name.to_string(),
                        help: help.to_string(),
                        unit: String::new(),
                    })
                    .collect(),
            };
            if let Ok(body) = request.encode_snappy()
                && tx.blocking_send(Item::Body { body, samples: 0 }).is_err()
            {
                return;
            }
        }
        if !flush(&mut batch, tx) || tx.blocking_send(Item::StepDone).is_err() {
            return;
        }
        t += opts.step_ms;
    }
}

fn flush(batch: &mut Vec<TimeSeries>, tx: &mpsc::Sender<Item>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let request = WriteRequest {
        timeseries: std::mem::take(batch),
        metadata: Vec::new(),
    };
    let samples = request.sample_count() as u64;
    match request.encode_snappy() {
        Ok(body) => tx.blocking_send(Item::Body { body, samples }).is_ok(),
        Err(_) => false,
    }
}

const MAX_ATTEMPTS: u32 = 12;

/// Sends one body, retrying 5xx, 429 and connection errors with capped exponential backoff
/// (honouring `Retry-After`), as Prometheus's remote-write client does; any other 4xx is
/// final. Returns how many retries it took.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<u32> {
    let mut backoff = Duration::from_millis(100);
    let mut last = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        let mut req = client.post(url).body(body.to_vec());
        for (k, v) in request_headers(WriteVersion::V1) {
            req = req.header(k, v);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(attempt),
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let text = resp.text().await.unwrap_or_default();
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return Err(Error::Refused {
                        url: url.to_string(),
                        status: status.as_u16(),
                        body: text.trim().chars().take(500).collect(),
                    });
                }
                if let Some(seconds) = retry_after {
                    backoff = Duration::from_secs(seconds.min(60));
                }
                last = format!("{status}: {}", text.trim());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::Unreachable {
        url: url.to_string(),
        attempts: MAX_ATTEMPTS,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FleetConfig;
    use strata_wire::expose::expose;

    #[test]
    fn backfilled_series_carry_what_a_scrape_through_the_edge_carries() {
        let fleet = Fleet::new(&FleetConfig {
            regions: 1,
            cells_per_region: 1,
            clusters_per_cell: 3,
            anchor: Some("2026-11-01T00:00:00Z".into()),
            ..Default::default()
        })
        .expect("fleet");
        let t = fleet.anchor_ms;
        let target = fleet.targets(0, Job::HostedEtcd, t)[1];
        let families = render(&fleet, target, t, &mut Counters::default());
        let page = expose(&families);
        let series = as_series(&fleet, target, t, families);
        assert_eq!(
            series.len(),
            page.lines().filter(|l| !l.starts_with('#')).count()
        );
        let labels: Vec<(&str, &str)> = series[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("__name__", "etcd_mvcc_db_total_size_in_bytes"),
                ("cell", "us-east-1-c01"),
                ("cluster", "us-east-1-c01-k002"),
                ("instance", "etcd.clusters-us-east-1-c01-k002:2379"),
                ("job", "hosted-etcd"),
                ("region", "us-east-1"),
            ]
        );
    }

    #[test]
    fn options_are_checked() {
        let ok = BackfillOptions {
            urls: vec!["http://127.0.0.1:9301/api/v1/write".into()],
            start_ms: 0,
            end_ms: 3_600_000,
            step_ms: 300_000,
            concurrency: 4,
            series_per_request: 5000,
            jobs: Vec::new(),
            bearer_token: None,
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.steps(), 12);
        let bad_url = BackfillOptions {
            urls: vec!["127.0.0.1:9301".into()],
            ..ok.clone()
        };
        assert!(
            bad_url
                .validate()
                .unwrap_err()
                .to_string()
                .contains("is not a URL")
        );
        let empty = BackfillOptions { end_ms: 0, ..ok };
        assert!(empty.validate().is_err());
    }
}
