//! One task per scrape job: it gathers the job's target groups (static, file and HTTP service
//! discovery), turns them into targets, and keeps one scrape loop per target running.
//!
//! - `file_sd_configs`: the patterns are expanded and the files' sizes and modification times
//!   checked every few seconds, so a changed file is picked up within that time; a file that
//!   fails to parse keeps its last good groups (and is logged), as in Prometheus.
//! - `http_sd_configs`: fetched every `refresh_interval` (default 60s), Prometheus's HTTP SD
//!   protocol (200, `application/json`, a list of target groups); each group gets `__meta_url`.
//!   A failed fetch keeps the last good groups.
//! - A reload that changes the job updates the running loops' settings in place; targets whose
//!   labels change are restarted, targets that disappear end with staleness markers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use strata_wire::Label;
use strata_wire::labels::fingerprint;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::config::{HttpSdConfig, ScrapeConfig};
use crate::discovery::{self, TargetGroup};
use crate::scrape::{JobSettings, LoopHandle, Sink, Status, Stop};
use crate::target::{self, LabelMap, Populated, Target};

/// How often file discovery looks for changed files.
const FILE_POLL: Duration = Duration::from_secs(5);
const HTTP_SD_DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// What `/api/v1/targets` shows of one job.
#[derive(Debug, Default)]
pub struct JobView {
    pub active: Vec<(Target, Arc<Mutex<Status>>)>,
    pub dropped: Vec<Vec<Label>>,
}

/// Every job's view, by job name.
pub type Views = Arc<RwLock<BTreeMap<String, JobView>>>;

/// A discovery failure's job and mechanism (`file` or `http`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SdFailureLabel {
    pub job: String,
    pub mechanism: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetsLabel {
    pub job: String,
    pub state: &'static str,
}

/// What every job task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The global external labels of the running configuration, sorted.
    pub external: watch::Receiver<Arc<Vec<Label>>>,
    pub sink: Sink,
    pub seed: u64,
    pub views: Views,
    pub targets: Family<TargetsLabel, Gauge>,
    /// Discovery refreshes that failed (the last good targets were kept).
    pub sd_failures: Family<SdFailureLabel, Counter>,
}

/// A running job.
#[derive(Debug)]
pub struct Job {
    config: watch::Sender<Arc<ScrapeConfig>>,
    stop: oneshot::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
}

impl Job {
    pub fn start(config: ScrapeConfig, shared: Shared) -> Self {
        let (tx, rx) = watch::channel(Arc::new(config));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(rx, shared, stopped));
        Self {
            config: tx,
            stop,
            task,
        }
    }

    /// Hands the job a reloaded configuration.
    pub fn update(&self, config: ScrapeConfig) {
        self.config.send_replace(Arc::new(config));
    }

    pub fn stop(self, why: Stop) -> tokio::task::JoinHandle<()> {
        let _ = self.stop.send(why);
        self.task
    }
}

/// The last good groups of one file and how it looked when read.
#[derive(Debug)]
struct FileState {
    stamp: Option<(SystemTime, u64)>,
    groups: Vec<TargetGroup>,
}

#[derive(Debug)]
struct HttpState {
    next: Instant,
    groups: Vec<TargetGroup>,
}

/// The job's discovery state between refreshes.
#[derive(Debug, Default)]
struct Discovery {
    files: BTreeMap<PathBuf, FileState>,
    http: Vec<HttpState>,
}

impl Discovery {
    /// Every discovered label set with its group's labels.
    async fn refresh(
        &mut self,
        cfg: &ScrapeConfig,
        failures: &Family<SdFailureLabel, Counter>,
    ) -> Vec<(LabelMap, LabelMap)> {
        let failed = |mechanism| {
            failures
                .get_or_create(&SdFailureLabel {
                    job: cfg.job_name.clone(),
                    mechanism,
                })
                .inc();
        };
        // Each mechanism in use is exported at zero before its first failure.
        for (mechanism, used) in [
            ("file", !cfg.file_sd_configs.is_empty()),
            ("http", !cfg.http_sd_configs.is_empty()),
        ] {
            if used {
                failures
                    .get_or_create(&SdFailureLabel {
                        job: cfg.job_name.clone(),
                        mechanism,
                    })
                    .inc_by(0);
            }
        }
        let mut out: Vec<(LabelMap, LabelMap)> = target::static_targets(cfg)
            .into_iter()
            .map(|(t, g)| (t, g.clone()))
            .collect();
        self.refresh_files(cfg, || failed("file"));
        for state in self.files.values() {
            out.extend(expand_groups(&state.groups));
        }
        self.http
            .resize_with(cfg.http_sd_configs.len(), || HttpState {
                next: Instant::now(),
                groups: Vec::new(),
            });
        for (sd, state) in cfg.http_sd_configs.iter().zip(&mut self.http) {
            if Instant::now() >= state.next {
                let refresh = sd.refresh_interval.map_or(HTTP_SD_DEFAULT_REFRESH, |d| d.0);
                state.next = Instant::now() + refresh;
                match fetch_http_sd(sd, refresh).await {
                    Ok(groups) => state.groups = groups,
                    Err(e) => {
                        failed("http");
                        tracing::warn!(job = %cfg.job_name, url = %sd.url, error = %e, "HTTP service discovery failed; keeping the last targets")
                    }
                }
            }
            out.extend(expand_groups(&state.groups));
        }
        out
    }

    fn refresh_files(&mut self, cfg: &ScrapeConfig, failed: impl Fn()) {
        let mut current = BTreeSet::new();
        for pattern in cfg.file_sd_configs.iter().flat_map(|f| &f.files) {
            match discovery::expand(pattern) {
                Ok(paths) => current.extend(paths),
                Err(e) => {
                    failed();
                    tracing::warn!(job = %cfg.job_name, pattern = %pattern, error = %e, "file service discovery")
                }
            }
        }
        self.files.retain(|p, _| current.contains(p));
        for path in current {
            let stamp = std::fs::metadata(&path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            let state = self.files.entry(path.clone()).or_insert(FileState {
                stamp: None,
                groups: Vec::new(),
            });
            if state.stamp.is_some() && state.stamp == stamp {
                continue;
            }
            match discovery::read_file(&path) {
                Ok(groups) => {
                    state.groups = groups;
                    state.stamp = stamp;
                }
                Err(e) => {
                    failed();
                    tracing::warn!(job = %cfg.job_name, error = %e, "cannot read a file_sd file; keeping its last targets")
                }
            }
        }
    }
}

fn expand_groups(groups: &[TargetGroup]) -> impl Iterator<Item = (LabelMap, LabelMap)> + '_ {
    groups.iter().flat_map(|g| {
        target::group_targets(&g.targets, &g.labels).map(|(t, labels)| (t, labels.clone()))
    })
}

/// One HTTP SD request, as Prometheus's `discovery/http`.
async fn fetch_http_sd(sd: &HttpSdConfig, timeout: Duration) -> Result<Vec<TargetGroup>, String> {
    let http = sd.client();
    // Built per refresh, so rotated TLS files are picked up.
    let client = http.build()?;
    let mut req = client
        .get(&sd.url)
        .header(
            "X-Prometheus-Refresh-Interval-Seconds",
            timeout.as_secs().to_string(),
        )
        .timeout(timeout);
    if let Some(auth) = http.authorization_header()? {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "unsupported content type {content_type:?}; HTTP SD answers application/json"
        ));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    let mut groups: Vec<TargetGroup> =
        serde_json::from_slice(&body).map_err(|e| format!("invalid HTTP SD document: {e}"))?;
    for g in &mut groups {
        for name in g.labels.keys() {
            if !strata_wire::labels::is_valid_label_name(name) {
                return Err(format!("{name:?} is not a valid label name"));
            }
        }
        g.labels.insert("__meta_url".into(), sd.url.clone());
    }
    Ok(groups)
}

/// The targets of the discovered label sets; dropped ones are kept for the API.
fn populate_all(
    cfg: &ScrapeConfig,
    discovered: &[(LabelMap, LabelMap)],
) -> (BTreeMap<u64, Target>, Vec<Vec<Label>>) {
    let mut active = BTreeMap::new();
    let mut dropped = Vec::new();
    for (t, g) in discovered {
        match target::populate(cfg, t, g) {
            Ok(Populated::Scrape(target)) => {
                active.insert(fingerprint(&target.labels), target);
            }
            Ok(Populated::Dropped { discovered }) => dropped.push(discovered),
            Err(e) => {
                tracing::warn!(job = %cfg.job_name, target = ?t, error = %e, "invalid target; not scraping it")
            }
        }
    }
    (active, dropped)
}

async fn run(
    mut config: watch::Receiver<Arc<ScrapeConfig>>,
    shared: Shared,
    mut stop: oneshot::Receiver<Stop>,
) {
    let mut cfg = config.borrow_and_update().clone();
    let job = cfg.job_name.clone();
    let job_settings =
        |cfg: &ScrapeConfig| Arc::new(JobSettings::new(cfg, shared.external.borrow().clone()));
    let (settings, _) = watch::channel(job_settings(&cfg));
    let mut discovery = Discovery::default();
    let mut loops: HashMap<u64, LoopHandle> = HashMap::new();
    let mut last: Option<Vec<(LabelMap, LabelMap)>> = None;
    let mut poll = tokio::time::interval(FILE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Biased: `Job::stop` sends the reason before it drops the configuration's sender.
        let stopping = tokio::select! {
            biased;
            why = &mut stop => Some(why.unwrap_or(Stop::Shutdown)),
            changed = config.changed() => match changed {
                Ok(()) => {
                    cfg = config.borrow_and_update().clone();
                    settings.send_replace(job_settings(&cfg));
                    discovery = Discovery::default();
                    last = None;
                    None
                }
                Err(_) => Some(Stop::Shutdown),
            },
            _ = poll.tick() => None,
        };
        if let Some(why) = stopping {
            let tasks: Vec<_> = loops.into_values().map(|l| l.stop(why)).collect();
            shared
                .views
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&job);
            for state in ["active", "dropped"] {
                shared.targets.remove(&TargetsLabel {
                    job: job.clone(),
                    state,
                });
            }
            for task in tasks {
                let _ = task.await;
            }
            return;
        }
        let discovered = discovery.refresh(&cfg, &shared.sd_failures).await;
        if last.as_ref() == Some(&discovered) {
            continue;
        }
        let (active, dropped) = populate_all(&cfg, &discovered);
        last = Some(discovered);
        let gone: Vec<u64> = loops
            .keys()
            .filter(|k| !active.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(l) = loops.remove(&key) {
                drop(l.stop(Stop::Removed));
            }
        }
        for (key, target) in active {
            loops.entry(key).or_insert_with(|| {
                LoopHandle::start(
                    target,
                    settings.subscribe(),
                    shared.sink.clone(),
                    shared.seed,
                )
            });
        }
        let view = JobView {
            active: loops
                .values()
                .map(|l| (l.target.clone(), l.status.clone()))
                .collect(),
            dropped,
        };
        let labels = |state| TargetsLabel {
            job: job.clone(),
            state,
        };
        shared
            .targets
            .get_or_create(&labels("active"))
            .set(view.active.len() as i64);
        shared
            .targets
            .get_or_create(&labels("dropped"))
            .set(view.dropped.len() as i64);
        shared
            .views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.clone(), view);
    }
}
