//! Helpers for end-to-end tests: the real `strata` binary and real peers from Debian's
//! packages, each on a free loopback port, each killed (by PID) when dropped.

#![allow(dead_code)] // each test binary uses a different subset of these helpers
#![allow(clippy::unwrap_used)] // a failing helper should fail the test that called it

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub name: &'static str,
}

impl Proc {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM (a clean stop), then reap.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Path of a peer binary, with a message saying how to install it when missing.
pub fn peer_binary(name: &str, package: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} not found: install it with `apt-get install -y {package}` (.ci/run does)"
    );
    path
}

pub async fn wait_ready(url: &str, child: &mut Child, what: &str) {
    wait_ready_with(&reqwest::Client::new(), url, child, what).await;
}

/// [`wait_ready`] with `client` (for servers that need TLS settings).
pub async fn wait_ready_with(client: &reqwest::Client, url: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before becoming ready");
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} not ready at {url} after 60 s");
}

/// Spawns `command` (its stderr to `dir/<name>.log`) and waits until `ready_path` on `port`
/// answers 2xx.
pub async fn spawn_ready(
    dir: &Path,
    name: &'static str,
    command: Command,
    port: u16,
    ready_path: &str,
) -> Proc {
    let url = format!("http://127.0.0.1:{port}{ready_path}");
    spawn_ready_with(dir, name, command, port, &url, &reqwest::Client::new()).await
}

/// Spawns `command` (its stderr to `dir/<name>.log`) and waits until `client` gets a 2xx
/// from `ready_url`.
pub async fn spawn_ready_with(
    dir: &Path,
    name: &'static str,
    mut command: Command,
    port: u16,
    ready_url: &str,
    client: &reqwest::Client,
) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{}.log", name.replace(' ', "-")))).unwrap();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    wait_ready_with(client, ready_url, &mut child, name).await;
    Proc { child, port, name }
}

/// Starts `strata relay` forwarding to `upstream`, with its queue in `dir/queue`.
pub async fn start_relay(dir: &Path, port: u16, upstream: &str, extra: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["relay", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--remote-write-url", upstream])
        .arg("--queue-dir")
        .arg(dir.join("queue"))
        .args(extra);
    spawn_ready(dir, "strata relay", command, port, "/-/ready").await
}

/// Starts `strata central` with its data in `dir/<name>`.
pub async fn start_central(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["central", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(extra);
    spawn_ready(dir, "strata central", command, port, "/-/ready").await
}

/// Every sample of every series in `[start, end]` of a central, via remote-read.
pub async fn read_all(base: &str, start: i64, end: i64) -> Vec<strata_wire::TimeSeries> {
    let client = reqwest::Client::new();
    strata_central::backfill::remote_read(&client, base, start, end)
        .await
        .unwrap()
}

/// Starts Debian's Prometheus with the remote-write receiver enabled.
pub async fn start_prometheus(dir: &Path) -> Proc {
    start_prometheus_with(dir, "").await
}

/// Starts Debian's Prometheus with `extra` appended to its configuration file.
pub async fn start_prometheus_with(dir: &Path, extra: &str) -> Proc {
    start_prometheus_at(dir, extra, free_port()).await
}

/// Starts Debian's Prometheus on `port`, with `extra` appended to its configuration file.
pub async fn start_prometheus_at(dir: &Path, extra: &str, port: u16) -> Proc {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1h\n{extra}")).unwrap();
    let mut command = Command::new(peer_binary("prometheus", "prometheus"));
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Backfilled history goes back months; the default retention is 15 days.
        .arg("--storage.tsdb.retention.time=10y")
        .arg("--web.enable-remote-write-receiver");
    spawn_ready(dir, "prometheus", command, port, "/-/ready").await
}

/// Starts Debian's VictoriaMetrics single-node.
pub async fn start_victoria_metrics(dir: &Path) -> Proc {
    start_victoria_metrics_at(dir, free_port()).await
}

/// Starts Debian's VictoriaMetrics single-node on `port`, with its data in `dir/vm-data`.
pub async fn start_victoria_metrics_at(dir: &Path, port: u16) -> Proc {
    let mut command = Command::new(peer_binary("victoria-metrics", "victoria-metrics"));
    command
        .arg(format!(
            "-storageDataPath={}",
            dir.join("vm-data").display()
        ))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        // Backfilled history goes back months; the default retention is one month.
        .arg("-retentionPeriod=10y")
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache");
    spawn_ready(dir, "victoria-metrics", command, port, "/health").await
}

/// Runs `strata bench write` against `url`.
pub fn bench_write(url: &str, series: usize, intervals: usize, protocol: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "bench",
            "write",
            "--url",
            url,
            "--batch",
            "500",
            "--concurrency",
            "2",
            "--protocol",
            protocol,
        ])
        .args([
            "--series",
            &series.to_string(),
            "--intervals",
            &intervals.to_string(),
        ])
        .output()
        .expect("run strata bench write");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench write failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("failed requests: 0"), "{stdout}");
}

/// The body of the answer to GET `url`, as text.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The JSON body of the answer to GET `url` with `query` parameters.
pub async fn get_json(url: &str, query: &[(&str, String)]) -> serde_json::Value {
    let body = reqwest::Client::new()
        .get(url)
        .query(query)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Counts raw samples of all series with a `job` label in the last `range` via the
/// Prometheus API (an instant query of a range selector returns raw samples).
pub async fn count_samples_promql(base: &str, range: &str) -> usize {
    let query = [("query", format!("{{job=~\".+\"}}[{range}]"))];
    let resp = get_json(&format!("{base}/api/v1/query"), &query).await;
    assert_eq!(resp["status"], "success", "{resp}");
    resp["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum()
}

/// Polls `attempt` every half second until it gives `Ok`, and returns what it gave; fails
/// with the last `Err` once `limit` has passed. For what a peer or a queue settles to.
pub async fn until_ok<T, F, Fut>(limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls `count` until it returns `want` (or 60 s pass); returns the last count.
pub async fn eventually<F, Fut>(want: usize, mut count: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count().await;
        if n == want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts `strata edge` on `port` with `config` as its configuration file (`dir/edge.yaml`)
/// and its queues under `dir/edge-data`.
pub async fn start_edge(dir: &Path, config: &str, port: u16) -> Proc {
    let path = dir.join("edge.yaml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["edge", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("edge-data"));
    spawn_ready(dir, "strata edge", command, port, "/-/ready").await
}

/// Starts Debian's node exporter.
pub async fn start_node_exporter(dir: &Path) -> Proc {
    let port = free_port();
    let mut command = Command::new(peer_binary(
        "prometheus-node-exporter",
        "prometheus-node-exporter",
    ));
    command.arg(format!("--web.listen-address=127.0.0.1:{port}"));
    spawn_ready(dir, "node exporter", command, port, "/metrics").await
}

/// Starts `strata cascade` on `port` with `config` as its file (`dir/cascade.yaml`) and its
/// queues under `dir/cascade-data`.
pub async fn start_cascade(dir: &Path, config: &str, port: u16) -> Proc {
    let path = dir.join("cascade.yaml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["cascade", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("cascade-data"));
    spawn_ready(dir, "strata cascade", command, port, "/-/ready").await
}

/// POSTs a snappy-compressed remote-write 1.0 body with an optional bearer token; returns the
/// status and the answer's text.
pub async fn post_write(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Starts Debian's Alertmanager (clustering off) with one webhook receiver named `receiver`
/// at `hook`, grouping by `group_by` (a YAML list, e.g. `[alertname]` or `['...']`) with 1 s
/// waits.
pub async fn start_alertmanager(dir: &Path, group_by: &str, receiver: &str, hook: &str) -> Proc {
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: {receiver}\n  group_by: {group_by}\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: {receiver}\n    webhook_configs:\n      - url: {hook}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(peer_binary(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
    ));
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=");
    spawn_ready(dir, "alertmanager", command, port, "/-/ready").await
}

/// An HTTP server that keeps every JSON body POSTed to it, by path, with when it came (Unix
/// seconds) and its `Authorization` header: a webhook receiver, or an Alertmanager API
/// stand-in. The first POST to `refuse_first` gets a 503.
#[derive(Clone)]
pub struct Recorder {
    pub port: u16,
    posts: std::sync::Arc<std::sync::Mutex<Vec<(String, f64, serde_json::Value)>>>,
    authorizations: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    refused: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Recorder {
    pub async fn start(refuse_first: Option<&str>) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let recorder = Recorder {
            port: listener.local_addr().unwrap().port(),
            posts: std::sync::Arc::default(),
            authorizations: std::sync::Arc::default(),
            refused: std::sync::Arc::new(std::sync::Mutex::new(refuse_first.map(String::from))),
        };
        let app = axum::Router::new()
            .fallback(
                |axum::extract::State(r): axum::extract::State<Recorder>,
                 uri: axum::http::Uri,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let path = uri.path().to_string();
                    let auth = headers
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    r.authorizations.lock().unwrap().push((path.clone(), auth));
                    let mut refuse = r.refused.lock().unwrap();
                    if refuse.as_deref() == Some(path.as_str()) {
                        *refuse = None;
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    drop(refuse);
                    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64();
                    r.posts.lock().unwrap().push((path, at, value));
                    axum::http::StatusCode::OK
                },
            )
            .with_state(recorder.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        recorder
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `Authorization` headers of the POSTs to `path` (empty where there was none).
    pub fn authorizations(&self, path: &str) -> Vec<String> {
        self.authorizations
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// The bodies POSTed to `path`, in order.
    pub fn posts(&self, path: &str) -> Vec<serde_json::Value> {
        self.timed_posts(path).into_iter().map(|(_, v)| v).collect()
    }

    /// The bodies POSTed to `path` with when each came, in order.
    pub fn timed_posts(&self, path: &str) -> Vec<(f64, serde_json::Value)> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, t, v)| (*t, v.clone()))
            .collect()
    }
}

/// A central running `rules` (written to `dir/rules.yml`), sending its alerts to `api` (an
/// Alertmanager API recorder) and to a real Alertmanager that notifies `hook` at `/hook`,
/// grouping by `group_by`.
pub struct Alerting {
    pub dir: tempfile::TempDir,
    pub rules: std::path::PathBuf,
    pub api: Recorder,
    pub hook: Recorder,
    pub alertmanager: Proc,
    pub central: Proc,
}

pub async fn start_alerting(rules: &str, group_by: &str, extra: &[&str]) -> Alerting {
    let dir = tempfile::tempdir().unwrap();
    let api = Recorder::start(None).await;
    let hook = Recorder::start(None).await;
    let alertmanager = start_alertmanager(
        dir.path(),
        group_by,
        "hook",
        &format!("{}/hook", hook.url()),
    )
    .await;
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, rules).unwrap();
    let mut args = vec![
        "--rule-file".to_string(),
        path.display().to_string(),
        "--alertmanager-url".to_string(),
        api.url(),
        "--alertmanager-url".to_string(),
        alertmanager.base(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let central = start_central(dir.path(), "central", free_port(), &args).await;
    Alerting {
        dir,
        rules: path,
        api,
        hook,
        alertmanager,
        central,
    }
}
