//! The scrape loop of one target, as Prometheus's `scrape/scrape.go` runs it:
//!
//! - Scrapes start at a stable offset within the interval, derived from the target's labels,
//!   so a cell's targets are spread over the interval and keep their slot across restarts.
//! - A scrape is one `GET` with Prometheus's `Accept` header, gzip, the scrape timeout and
//!   the body size limit; the body is parsed by the wire crate (text 0.0.4 or OpenMetrics).
//! - Each sample gets the target's labels (`honor_labels` decides conflicts: the target wins
//!   and the exposed value moves to `exported_<name>`, or the exposed label is kept), then
//!   `metric_relabel_configs` and the label limits. What relabelling made of an exposed series
//!   is cached until the series stops appearing, as Prometheus's scrape cache does.
//! - Synthetic series per scrape: `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling`, `scrape_series_added`.
//! - Staleness markers: a series of the previous scrape missing from this one; every series of
//!   the last good scrape when a scrape fails (or breaks `sample_limit` or a label limit); and,
//!   when the target goes away, its series and the synthetic ones at the time the next scrape
//!   would have been. Series exposed with their own timestamp get no markers, as in Prometheus.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_wire::clock::now_ms;

use strata_wire::MetricMetadata;
use strata_wire::exposition::{Format, Scanner};
use strata_wire::labels::fingerprint;
use strata_wire::prompb::Exemplar;
use strata_wire::{Label, Sample, raw, stale_nan};
use tokio::sync::{mpsc, oneshot, watch};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{HttpClient, ScrapeConfig};
use crate::relabel::{self, Rule};
use crate::target::Target;

/// Prometheus 2.42's `Accept` header for scrapes.
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The settings of a job that its scrape loops read at every scrape, so a reload that changes
/// them takes effect without restarting the loops.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub metric_relabel: Vec<Rule>,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    /// 0 is no limit.
    pub body_size_limit: u64,
    pub client: HttpClient,
    /// The job's HTTP client (its TLS settings); the error when its TLS files cannot be
    /// read, which every scrape then reports.
    pub http: Result<reqwest::Client, String>,
    /// The global external labels, sorted; added to every series that lacks them.
    pub external: Arc<Vec<Label>>,
}

impl JobSettings {
    pub fn new(cfg: &ScrapeConfig, external: Arc<Vec<Label>>) -> Self {
        Self {
            honor_labels: cfg.honor_labels,
            honor_timestamps: cfg.honor_timestamps,
            metric_relabel: cfg.metric_relabel_configs.clone(),
            sample_limit: cfg.sample_limit,
            label_limit: cfg.label_limit,
            label_name_length_limit: cfg.label_name_length_limit,
            label_value_length_limit: cfg.label_value_length_limit,
            body_size_limit: cfg.body_size_limit.0,
            client: cfg.client(),
            http: cfg.client().build(),
            external,
        }
    }
}

/// The health of a target, as `/api/v1/targets` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// The outcome of a target's last scrape.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub health: Health,
    pub last_error: String,
    pub last_scrape: Option<SystemTime>,
    pub last_duration: Duration,
    /// The metric metadata (`# HELP`, `# TYPE`, `# UNIT`) of the last good scrape.
    pub metadata: Arc<Vec<MetricMetadata>>,
}

/// Why a scrape loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The target went away: its series end with staleness markers.
    Removed,
    /// The edge is stopping: the series continue after the restart, so no markers.
    Shutdown,
}

/// Where a loop's samples go: the forwarder, which makes them durable in every remote-write
/// queue.
pub type Sink = mpsc::Sender<Encoded>;

/// Scraped samples as a remote-write 1.0 body made of series entries
/// ([`strata_wire::raw`]), and how many samples and exemplars it holds. Bodies are joined by
/// appending them.
#[derive(Debug, Default)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub items: u64,
}

impl Encoded {
    /// One sample of a series whose labels are already encoded.
    fn push(&mut self, labels: &[u8], value: f64, timestamp: i64, exemplar: Option<&Exemplar>) {
        raw::push_series(
            &mut self.body,
            labels,
            Sample { value, timestamp },
            exemplar,
        );
        self.items += 1 + u64::from(exemplar.is_some());
    }

    /// One sample of a series given by its labels.
    fn push_labels(&mut self, labels: &[Label], value: f64, timestamp: i64) {
        let mut encoded = Vec::new();
        raw::encode_labels(labels, &mut encoded);
        self.push(&encoded, value, timestamp, None);
    }

    /// Appends `other`.
    pub fn append(&mut self, other: &Encoded) {
        self.body.extend_from_slice(&other.body);
        self.items += other.items;
    }
}

/// A running scrape loop.
#[derive(Debug)]
pub struct LoopHandle {
    pub target: Target,
    pub status: Arc<Mutex<Status>>,
    stop: oneshot::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopHandle {
    /// Starts scraping `target`. `seed` spreads the offsets of edges that scrape the same
    /// targets (an HA pair) apart, as Prometheus's offset seed does.
    pub fn start(
        target: Target,
        settings: watch::Receiver<Arc<JobSettings>>,
        sink: Sink,
        seed: u64,
    ) -> Self {
        let status = Arc::new(Mutex::new(Status::default()));
        let (stop, stopped) = oneshot::channel();
        let scrape_loop = ScrapeLoop {
            series_labels: target.series_labels(),
            url: target.url(),
            interval: Duration::from_millis(target.interval_ms as u64),
            timeout: Duration::from_millis(target.timeout_ms as u64),
            offset_hash: fingerprint(&target.labels) ^ seed,
            settings,
            sink,
            status: status.clone(),
            state: ScrapeState::default(),
            body_hint: 0,
        };
        let task = tokio::spawn(scrape_loop.run(stopped));
        Self {
            target,
            status,
            stop,
            task,
        }
    }

    /// Ends the loop; with [`Stop::Removed`] it writes the staleness markers first.
    pub fn stop(self, why: Stop) -> tokio::task::JoinHandle<()> {
        // The loop may have ended already (its sink closed): nothing to tell it then.
        let _ = self.stop.send(why);
        self.task
    }
}

/// How long to wait for a target's first scrape: its slot in the interval is
/// `hash % interval`, as in Prometheus's `Target.offset`.
fn first_offset(hash: u64, interval: Duration, now_ms: i64) -> Duration {
    let interval_ms = interval.as_millis().max(1) as u64;
    let base = interval_ms - (now_ms as u64 % interval_ms);
    let mut next = base + hash % interval_ms;
    if next > interval_ms {
        next -= interval_ms;
    }
    Duration::from_millis(next)
}

struct ScrapeLoop {
    series_labels: Vec<Label>,
    url: String,
    interval: Duration,
    timeout: Duration,
    offset_hash: u64,
    settings: watch::Receiver<Arc<JobSettings>>,
    sink: Sink,
    status: Arc<Mutex<Status>>,
    state: ScrapeState,
    /// The size of the last body, to size the next one's buffer.
    body_hint: usize,
}

impl ScrapeLoop {
    async fn run(mut self, mut stop: oneshot::Receiver<Stop>) {
        let offset = first_offset(self.offset_hash, self.interval, now_ms());
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + offset, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                why = &mut stop => {
                    if why == Ok(Stop::Removed) {
                        ticker.tick().await;
                        let settings = self.settings.borrow().clone();
                        let markers = self.state.end_of_run(&self.series_labels, &settings.external, now_ms());
                        let _ = self.sink.send(markers).await;
                    }
                    return;
                }
                _ = ticker.tick() => {}
            }
            if !self.scrape_and_report().await {
                return;
            }
        }
    }

    /// One scrape; false when the sink is gone (the edge is stopping).
    async fn scrape_and_report(&mut self) -> bool {
        let settings = self.settings.borrow_and_update().clone();
        if !self
            .state
            .settings_seen
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, &settings))
        {
            // New relabelling or limits: what the cache holds was made under the old ones.
            self.state.cache.clear();
            self.state.settings_seen = Some(settings.clone());
        }
        let start = Instant::now();
        let ts = now_ms();
        let fetched = fetch(&self.url, self.timeout, &settings, self.body_hint).await;
        let outcome = fetched.and_then(|(body, format)| {
            self.body_hint = body.len();
            self.state
                .append(&body, format, ts, &settings, &self.series_labels)
        });
        let duration = start.elapsed();
        let (mut series, report, error) = match outcome {
            Ok((series, report)) => (series, report, None),
            Err(failure) => (self.state.fail(ts), failure.report, Some(failure.error)),
        };
        report.push_series(
            &mut series,
            &self.series_labels,
            &settings.external,
            ts,
            error.is_none(),
            duration,
        );
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.health = if error.is_none() {
                Health::Up
            } else {
                Health::Down
            };
            st.last_error = error.unwrap_or_default();
            st.last_scrape = Some(UNIX_EPOCH + Duration::from_millis(ts as u64));
            st.last_duration = duration;
            st.metadata = self.state.metadata.clone();
        }
        self.sink.send(series).await.is_ok()
    }
}

/// GETs the target and returns its body and format; the error reads as Prometheus's.
async fn fetch(
    url: &str,
    timeout: Duration,
    settings: &JobSettings,
    hint: usize,
) -> Result<(String, Format), Failure> {
    let fail = |error: String| Failure {
        error,
        report: Report::default(),
    };
    let client = settings.http.as_ref().map_err(|e| fail(e.clone()))?;
    let mut req = client
        .get(url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            timeout.as_secs_f64().to_string(),
        )
        .timeout(timeout);
    if let Some(auth) = settings.client.authorization_header().map_err(fail)? {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    let read = async {
        let mut resp = req.send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ));
        }
        let format = Format::from_content_type(
            resp.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let limit = settings.body_size_limit;
        // Sized for the last body (or the declared length), so a large page is not copied
        // again and again as it grows.
        let expected = hint.max(resp.content_length().unwrap_or(0) as usize);
        let expected = if limit > 0 {
            expected.min(limit as usize + 1)
        } else {
            expected
        };
        let mut body = Vec::with_capacity(expected);
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            body.extend_from_slice(&chunk);
            if limit > 0 && body.len() as u64 > limit {
                return Err(format!(
                    "body size limit exceeded: the target's response is larger than body_size_limit ({limit} bytes)"
                ));
            }
        }
        let body =
            String::from_utf8(body).map_err(|e| format!("the response is not valid UTF-8: {e}"))?;
        Ok((body, format))
    };
    read.await.map_err(fail)
}

/// A reqwest error in the words an operator searches for.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "context deadline exceeded (the scrape took longer than scrape_timeout)".into()
    } else {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    }
}

/// The numbers of one scrape for the synthetic series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub scraped: usize,
    pub post_relabel: usize,
    pub series_added: usize,
}

/// The names of the synthetic series, in the order Prometheus writes them.
pub const REPORT_NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl Report {
    /// Appends the synthetic series of one scrape.
    fn push_series(
        &self,
        out: &mut Encoded,
        target: &[Label],
        external: &[Label],
        ts: i64,
        up: bool,
        duration: Duration,
    ) {
        let values = [
            if up { 1.0 } else { 0.0 },
            duration.as_secs_f64(),
            self.scraped as f64,
            self.post_relabel as f64,
            self.series_added as f64,
        ];
        for (name, value) in REPORT_NAMES.iter().zip(values) {
            out.push_labels(&with_name(target, external, name), value, ts);
        }
    }
}

/// A failed scrape: why, and how far it got.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub report: Report,
}

/// A synthetic series' labels: its name, the target's labels, the external labels.
fn with_name(target: &[Label], external: &[Label], name: &str) -> Vec<Label> {
    let mut labels = Vec::with_capacity(target.len() + external.len() + 1);
    labels.push(Label::new(strata_wire::protocol::METRIC_NAME, name));
    labels.extend(target.iter().cloned());
    add_external(&mut labels, external);
    labels
}

/// Adds the external labels a series lacks (Prometheus's remote-write rule: a series' own
/// label wins) and sorts by name.
fn add_external(labels: &mut Vec<Label>, external: &[Label]) {
    for e in external {
        if !labels.iter().any(|l| l.name == e.name) {
            labels.push(e.clone());
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
}

/// What relabelling made of one exposed series.
#[derive(Debug)]
struct CacheEntry {
    /// The series as the target writes it (name and label set).
    exposed: Box<str>,
    /// What it is stored as; `None` when relabelling drops it.
    out: Option<Stored>,
    /// The scrape that last exposed it.
    seen: u64,
    /// The scrape that last stored it with the scrape's timestamp (so with staleness).
    tracked: u64,
}

/// The labels a series is stored with, encoded for remote-write, and their fingerprint.
#[derive(Debug)]
struct Stored {
    labels: Box<[u8]>,
    fingerprint: u64,
}

/// What a loop remembers between scrapes.
#[derive(Debug, Default)]
pub struct ScrapeState {
    /// By hash of the series text as exposed; a series missing from it is new
    /// (`scrape_series_added`). Entries not exposed by the last scrape are removed.
    cache: HashMap<u64, CacheEntry>,
    /// Scrapes so far.
    scrape: u64,
    /// The last scrape whose series were stored; 0 after a failure.
    last_good: u64,
    /// The settings the cache was built with.
    settings_seen: Option<Arc<JobSettings>>,
    /// The metadata of the last good scrape; replaced only when it changes.
    metadata: Arc<Vec<MetricMetadata>>,
}

/// The exposed labels with the target's, as Prometheus's `mutateSampleLabels`: with
/// `honor_labels` an exposed label wins; without, the target's wins and the exposed value
/// moves to `exported_<name>` (more `exported_` prefixes while that name is taken too).
fn merge_target_labels(exposed: &[Label], target: &[Label], honor: bool) -> Vec<Label> {
    let mut labels: Vec<Label> = exposed.to_vec();
    let mut conflicts = Vec::new();
    for t in target {
        match labels.iter_mut().find(|l| l.name == t.name) {
            Some(l) => {
                if !honor {
                    let exposed = std::mem::replace(&mut l.value, t.value.clone());
                    conflicts.push((&t.name, exposed));
                }
            }
            None => labels.push(t.clone()),
        }
    }
    for (name, value) in conflicts {
        let mut exported = format!("exported_{name}");
        while labels.iter().any(|l| l.name == exported) {
            exported.insert_str(0, "exported_");
        }
        labels.push(Label::new(exported, value));
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// Prometheus's `verifyLabelLimits`.
fn check_label_limits(labels: &[Label], s: &JobSettings) -> Result<(), String> {
    // Rendered only for a message: this runs for every new series.
    let metric = || strata_wire::labels::render(labels);
    if s.label_limit > 0 && labels.len() as u64 > s.label_limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            metric(),
            labels.len(),
            s.label_limit
        ));
    }
    for l in labels {
        if s.label_name_length_limit > 0 && l.name.len() as u64 > s.label_name_length_limit {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {}, limit: {})",
                metric(),
                l.name,
                l.name.len(),
                s.label_name_length_limit
            ));
        }
        if s.label_value_length_limit > 0 && l.value.len() as u64 > s.label_value_length_limit {
            return Err(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {}, limit: {})",
                metric(),
                l.name,
                l.value,
                l.value.len(),
                s.label_value_length_limit
            ));
        }
    }
    Ok(())
}

impl ScrapeState {
    /// Turns a scraped body into the series to store (with staleness markers for series that
    /// disappeared) and the report; on failure nothing of the body is kept. A series seen in
    /// the previous scrape is found by its text and costs no parsing and no allocation.
    pub fn append(
        &mut self,
        body: &str,
        format: Format,
        ts: i64,
        settings: &JobSettings,
        target: &[Label],
    ) -> Result<(Encoded, Report), Failure> {
        self.scrape += 1;
        let scrape = self.scrape;
        let mut report = Report::default();
        let mut out = Encoded {
            body: Vec::with_capacity(body.len() * 2),
            items: 0,
        };
        let mut stored: HashSet<u64> = HashSet::with_capacity(self.cache.len());
        // Marked once the scrape succeeded: a failed scrape must not change which series
        // the last good one stored.
        let mut tracked = Vec::with_capacity(self.cache.len());
        let mut scanner = Scanner::new(body, format);
        for line in &mut scanner {
            let line = line.map_err(|e| Failure {
                error: e.to_string(),
                report,
            })?;
            report.scraped += 1;
            let key = xxh3_64(line.series.as_bytes());
            let cached = self
                .cache
                .get(&key)
                .is_some_and(|e| *e.exposed == *line.series);
            if !cached {
                let exposed = line.labels().map_err(|e| Failure {
                    error: e.to_string(),
                    report,
                })?;
                let merged = merge_target_labels(&exposed, target, settings.honor_labels);
                let out = match relabel::process(&merged, &settings.metric_relabel) {
                    Some(mut labels) => {
                        check_label_limits(&labels, settings)
                            .map_err(|error| Failure { error, report })?;
                        add_external(&mut labels, &settings.external);
                        let mut encoded = Vec::new();
                        raw::encode_labels(&labels, &mut encoded);
                        Some(Stored {
                            labels: encoded.into_boxed_slice(),
                            fingerprint: fingerprint(&labels),
                        })
                    }
                    None => None,
                };
                report.series_added += usize::from(out.is_some());
                self.cache.insert(
                    key,
                    CacheEntry {
                        exposed: line.series.into(),
                        out,
                        seen: 0,
                        tracked: 0,
                    },
                );
            }
            let Some(entry) = self.cache.get_mut(&key) else {
                continue;
            };
            entry.seen = scrape;
            let Some(series) = &entry.out else {
                continue;
            };
            if !stored.insert(series.fingerprint) {
                // The same series twice in one scrape: Prometheus keeps the first.
                continue;
            }
            report.post_relabel += 1;
            if settings.sample_limit > 0 && report.post_relabel as u64 > settings.sample_limit {
                return Err(Failure {
                    error: format!(
                        "sample_limit exceeded: the target exposes more than {} samples after metric_relabel_configs",
                        settings.sample_limit
                    ),
                    report,
                });
            }
            let timestamp = match line.timestamp_ms {
                Some(t) if settings.honor_timestamps => t,
                _ => {
                    tracked.push(key);
                    ts
                }
            };
            out.push(
                &series.labels,
                line.value,
                timestamp,
                line.exemplar.as_ref(),
            );
        }
        let previous = self.last_good;
        for key in tracked {
            if let Some(e) = self.cache.get_mut(&key) {
                e.tracked = scrape;
            }
        }
        self.cache.retain(|_, e| {
            if e.seen == scrape {
                return true;
            }
            if let Some(series) = &e.out
                && previous > 0
                && e.tracked == previous
                && !stored.contains(&series.fingerprint)
            {
                out.push(&series.labels, stale_nan(), ts, None);
            }
            false
        });
        self.last_good = scrape;
        let metadata = scanner.into_metadata();
        if *self.metadata != metadata {
            self.metadata = Arc::new(metadata);
        }
        Ok((out, report))
    }

    /// A failed scrape: every series of the last good one ends with a staleness marker.
    pub fn fail(&mut self, ts: i64) -> Encoded {
        let mut markers = Encoded::default();
        let last_good = std::mem::take(&mut self.last_good);
        if last_good == 0 {
            return markers;
        }
        for series in self
            .cache
            .values()
            .filter(|e| e.tracked == last_good)
            .filter_map(|e| e.out.as_ref())
        {
            markers.push(&series.labels, stale_nan(), ts, None);
        }
        markers
    }

    /// The target went away: markers for its series and its synthetic series.
    pub fn end_of_run(&mut self, target: &[Label], external: &[Label], ts: i64) -> Encoded {
        let mut markers = self.fail(ts);
        for name in REPORT_NAMES {
            markers.push_labels(&with_name(target, external, name), stale_nan(), ts);
        }
        markers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_wire::{TimeSeries, WriteRequest, is_stale_nan};

    fn decoded(e: &Encoded) -> Vec<TimeSeries> {
        let req = WriteRequest::decode_body(&e.body).expect("an encoded batch decodes");
        assert_eq!(req.item_count() as u64, e.items);
        req.timeseries
    }

    fn settings(yaml: &str) -> JobSettings {
        let c = crate::config::Config::parse(&format!("scrape_configs:\n  - job_name: j\n{yaml}"))
            .expect("valid");
        JobSettings::new(
            &c.scrape_configs[0],
            Arc::new(vec![Label::new("cell", "hz-07")]),
        )
    }

    fn target() -> Vec<Label> {
        vec![Label::new("instance", "h:9100"), Label::new("job", "node")]
    }

    fn names(series: &Encoded) -> Vec<String> {
        let mut v: Vec<String> = decoded(series)
            .iter()
            .map(|s| {
                let stale = if is_stale_nan(s.samples[0].value) {
                    " stale"
                } else {
                    ""
                };
                format!("{}{stale}", strata_wire::labels::render(&s.labels))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn offsets_keep_a_slot_within_the_interval() {
        let i = Duration::from_secs(15);
        for now in [0, 1, 7_499, 14_999, 1_700_000_000_123] {
            let d = first_offset(4_000, i, now);
            assert!(d <= i, "{d:?}");
            assert_eq!((now as u64 + d.as_millis() as u64) % 15_000, 4_000);
        }
    }

    #[test]
    fn target_labels_win_unless_honored() {
        let exposed = vec![
            Label::new("__name__", "m"),
            Label::new("job", "pushed"),
            Label::new("exported_job", "x"),
        ];
        let merged = merge_target_labels(&exposed, &target(), false);
        assert_eq!(
            strata_wire::labels::render(&merged),
            r#"m{exported_exported_job="pushed", exported_job="x", instance="h:9100", job="node"}"#
        );
        let honored = merge_target_labels(&exposed, &target(), true);
        assert_eq!(
            strata_wire::labels::render(&honored),
            r#"m{exported_job="x", instance="h:9100", job="pushed"}"#
        );
    }

    #[test]
    fn scrapes_end_disappeared_series_with_staleness_markers() {
        let s = settings("");
        let mut st = ScrapeState::default();
        let (out, report) = st
            .append(
                "a 1\nb{x=\"1\"} 2\nc 3 1000\n",
                Format::Text,
                10,
                &s,
                &target(),
            )
            .expect("ok");
        assert_eq!(
            report,
            Report {
                scraped: 3,
                post_relabel: 3,
                series_added: 3
            }
        );
        let out = decoded(&out);
        assert_eq!(out.len(), 3);
        assert_eq!(out.iter().map(|s| s.samples[0].timestamp).max(), Some(1000));
        let (out, report) = st
            .append("a 1\nc 4 2000\n", Format::Text, 20, &s, &target())
            .expect("ok");
        assert_eq!(report.series_added, 0);
        assert_eq!(
            names(&out),
            [
                r#"a{cell="hz-07", instance="h:9100", job="node"}"#,
                r#"b{cell="hz-07", instance="h:9100", job="node", x="1"} stale"#,
                r#"c{cell="hz-07", instance="h:9100", job="node"}"#,
            ]
        );
        let markers = st.fail(30);
        assert_eq!(
            names(&markers),
            [r#"a{cell="hz-07", instance="h:9100", job="node"} stale"#]
        );
        assert_eq!(st.fail(40).items, 0, "markers are written once");
        let end = decoded(&st.end_of_run(&target(), &[], 50));
        assert_eq!(end.len(), 5);
        assert!(end.iter().all(|s| is_stale_nan(s.samples[0].value)));
    }

    #[test]
    fn relabelling_limits_and_honor_timestamps() {
        let s = settings(
            "    honor_timestamps: false\n    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: go_.*\n        action: drop\n",
        );
        let mut st = ScrapeState::default();
        let (out, report) = st
            .append(
                "go_x 1\nkeep 2 1000\nkeep 2 1000\n",
                Format::Text,
                10,
                &s,
                &target(),
            )
            .expect("ok");
        assert_eq!(report.scraped, 3);
        assert_eq!(
            report.post_relabel, 1,
            "dropped and duplicate samples do not count"
        );
        assert_eq!(
            decoded(&out)[0].samples[0].timestamp,
            10,
            "exposed timestamp ignored"
        );

        let limited = settings("    sample_limit: 1\n");
        let mut st = ScrapeState::default();
        st.append("a 1\n", Format::Text, 10, &limited, &target())
            .expect("ok");
        let f = st
            .append("a 1\nb 2\n", Format::Text, 20, &limited, &target())
            .expect_err("limit");
        assert!(f.error.contains("sample_limit exceeded"), "{}", f.error);
        assert_eq!(
            names(&st.fail(20)),
            [r#"a{cell="hz-07", instance="h:9100", job="node"} stale"#]
        );

        let labels = settings("    label_limit: 3\n");
        let f = ScrapeState::default()
            .append(
                "m{a=\"1\",b=\"2\"} 1\n",
                Format::Text,
                10,
                &labels,
                &target(),
            )
            .expect_err("limit");
        assert!(f.error.starts_with("label_limit exceeded"), "{}", f.error);

        let f = ScrapeState::default()
            .append("m{a=\"1\" 1\n", Format::Text, 10, &s, &target())
            .expect_err("parse error");
        assert!(f.error.contains("line 1"), "{}", f.error);
    }

    #[test]
    fn reports_carry_the_target_labels() {
        let r = Report {
            scraped: 7,
            post_relabel: 5,
            series_added: 2,
        };
        let mut out = Encoded::default();
        r.push_series(
            &mut out,
            &target(),
            &[Label::new("cell", "hz-07")],
            99,
            true,
            Duration::from_millis(250),
        );
        let series = decoded(&out);
        assert_eq!(series.len(), 5);
        assert_eq!(
            strata_wire::labels::render(&series[0].labels),
            r#"up{cell="hz-07", instance="h:9100", job="node"}"#
        );
        let values: Vec<f64> = series.iter().map(|s| s.samples[0].value).collect();
        assert_eq!(values, [1.0, 0.25, 7.0, 5.0, 2.0]);
    }
}
