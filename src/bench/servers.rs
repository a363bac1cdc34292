//! Starting the servers the benchmarks compare, each on a free loopback port with its own data
//! directory, and reading their CPU time, peak memory and disk use from `/proc` and the file
//! system.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Target {
    Strata,
    #[value(name = "victoria-metrics")]
    VictoriaMetrics,
    Prometheus,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Strata => "strata central",
            Target::VictoriaMetrics => "VictoriaMetrics",
            Target::Prometheus => "Prometheus",
        }
    }
}

/// Where the peers' binaries are.
#[derive(Args)]
pub struct Binaries {
    /// The Prometheus binary.
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus_bin: PathBuf,
    /// The VictoriaMetrics single-node binary.
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics_bin: PathBuf,
}

/// Where a benchmark keeps its servers' files: `work_dir` when given (kept afterwards), else a
/// temporary directory deleted when the returned guard drops.
pub fn work_root(work_dir: Option<&Path>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    Ok(match work_dir {
        Some(d) => (None, d.to_path_buf()),
        None => {
            let temp = tempfile::tempdir()?;
            let root = temp.path().to_path_buf();
            (Some(temp), root)
        }
    })
}

/// strata or vmagent, for the benchmarks that run both side by side.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Debug)]
pub enum Agent {
    Strata,
    Vmagent,
}

impl Agent {
    /// Its name in reports, with `strata` the strata component under test.
    pub fn name(self, strata: &'static str) -> &'static str {
        match self {
            Agent::Strata => strata,
            Agent::Vmagent => "vmagent",
        }
    }

    /// Its name in labels and directories.
    pub fn label(self) -> &'static str {
        match self {
            Agent::Strata => "strata",
            Agent::Vmagent => "vmagent",
        }
    }
}

/// A server under test, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// User plus system CPU seconds of a process. `/proc/<pid>/stat` counts in USER_HZ ticks,
/// 100 per second on every Linux architecture strata supports.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/<pid>/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// Peak resident set size of a process, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/<pid>/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn wait_ready(url: &str, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before becoming ready");
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} not ready at {url} after 60 s")
}

/// Starts `target` on a free loopback port with its data in `<root>/<target>-<phase>` and
/// waits until it is ready.
pub async fn start(
    target: Target,
    binaries: &Binaries,
    root: &Path,
    phase: &str,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let dir = root.join(format!("{target:?}-{phase}"));
    std::fs::create_dir_all(&dir)?;
    let listen = format!("127.0.0.1:{port}");
    let (command, ready) = match target {
        Target::Strata => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args([
                "central",
                "--listen",
                &listen,
                "--maintenance-interval",
                "1s",
            ])
            .arg("--data-dir")
            .arg(&dir);
            (c, "/-/ready")
        }
        Target::VictoriaMetrics => {
            let mut c = Command::new(&binaries.victoria_metrics_bin);
            c.arg(format!("-storageDataPath={}", dir.display()))
                .arg(format!("-httpListenAddr={listen}"));
            (c, "/health")
        }
        Target::Prometheus => {
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
            let mut c = Command::new(&binaries.prometheus_bin);
            c.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={listen}"))
                .arg("--web.enable-remote-write-receiver");
            (c, "/-/ready")
        }
    };
    launch(command, port, dir, ready, target.name()).await
}

/// Spawns `command` (its output to `dir/server.log`) and waits until `ready_path` on `port`
/// answers 2xx.
pub async fn launch(
    mut command: Command,
    port: u16,
    dir: PathBuf,
    ready_path: &str,
    what: &str,
) -> anyhow::Result<Server> {
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {what}; is it installed?"))?;
    wait_ready(
        &format!("http://127.0.0.1:{port}{ready_path}"),
        &mut child,
        what,
    )
    .await?;
    Ok(Server { child, port, dir })
}

/// The sum of every sample of the family `name` on a server's `/metrics` page.
pub async fn metric_total(
    client: &reqwest::Client,
    server: &Server,
    name: &str,
) -> anyhow::Result<f64> {
    let text = client
        .get(format!("http://127.0.0.1:{}/metrics", server.port))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// `ours / theirs` as a ratio for the reports.
pub fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.2}x", ours / theirs)
    } else {
        "-".into()
    }
}
