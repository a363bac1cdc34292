//! `strata demo` end to end, with the real binary: a tiny fleet's data flows sim → edges →
//! cascade → both centrals, both centrals hold the same series, history is there, Ctrl-C
//! stops it cleanly and a second run resumes. The Grafana dashboards are checked against the
//! running demo: every metric a panel or variable queries is one the demo's centrals hold.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};
use serde_json::Value;
use support::{get_json, until_ok};

/// A base port whose demo ports (base+1, +2, +3, +100.., +201, +301) are all free.
fn free_base() -> u16 {
    for _ in 0..50 {
        let base = 20_000 + (rand_port() % 300) * 100;
        let ports = [1, 2, 3, 100, 101, 102, 201, 301];
        if ports
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", base + p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free range of ports for the demo");
}

fn rand_port() -> u16 {
    (std::process::id() as u64
        ^ Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64)) as u16
}

struct Demo {
    child: Child,
    out: std::path::PathBuf,
}

impl Demo {
    fn start(dir: &Path, base: u16, run: &str) -> Demo {
        let out = dir.join(format!("demo-{run}.out"));
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["demo", "--dir"])
            .arg(dir.join("demo"))
            .args([
                "--regions",
                "1",
                "--cells-per-region",
                "2",
                "--clusters-per-cell",
                "3",
                "--history-days",
                "0.05",
                "--history-step",
                "5m",
                "--scrape-interval",
                "2s",
                "--base-port",
                &base.to_string(),
            ])
            .stdout(Stdio::from(std::fs::File::create(&out).expect("out")))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join(format!("demo-{run}.err"))).expect("err"),
            ))
            .spawn()
            .expect("starts strata demo");
        Demo { child, out }
    }

    fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.out) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    async fn wait_for_output(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("strata demo exited with {status}:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("strata demo never printed {needle:?}:\n{}", self.output());
    }

    /// Ctrl-C, then the exit status within a minute.
    async fn interrupt(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("strata demo did not stop within 60 s of SIGINT");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every series a central holds for the simulated cells in the ten minutes before `now`
/// (Unix seconds; the same for every central compared).
async fn series(base: &str, now: u64) -> BTreeSet<String> {
    let v = get_json(
        &format!("{base}/api/v1/series"),
        &[
            ("match[]", "{cell=~\"us-east-1-c0.\"}".to_string()),
            ("start", (now - 600).to_string()),
            ("end", (now - 20).to_string()),
        ],
    )
    .await;
    v["data"]
        .as_array()
        .expect("series")
        .iter()
        .map(Value::to_string)
        .collect()
}

async fn scalar(base: &str, query: &str, time: Option<u64>) -> Option<f64> {
    let mut params = vec![("query", query.to_string())];
    if let Some(t) = time {
        params.push(("time", t.to_string()));
    }
    let v = get_json(&format!("{base}/api/v1/query"), &params).await;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_flows_through_every_hop_into_both_centrals_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base();
    let (a, b) = (
        format!("http://127.0.0.1:{}", base + 1),
        format!("http://127.0.0.1:{}", base + 2),
    );
    let mut demo = Demo::start(dir.path(), base, "first");
    demo.wait_for_output("all components are ready").await;
    let first = demo.output();
    assert!(
        first.contains("history: writing 1") && first.contains(" steps of 5m"),
        "{first}"
    );

    // Live data from every job of both cells reaches both centrals through the cascade:
    // every hosted apiserver up, every simulated job scraped, both cells' nodes.
    let checks = [
        ("count(up{job=\"hosted-apiserver\"} == 1)", 6.0),
        (
            "count(count by (job) (up{cell=~\"us-east-1-c0.\",job!~\"strata-.*\"}))",
            10.0,
        ),
        ("count(count by (cell) (kube_node_status_allocatable))", 2.0),
    ];
    let (a_ref, b_ref, demo_ref) = (&a, &b, &demo);
    until_ok(Duration::from_secs(120), || async move {
        let mut seen = Vec::new();
        for (central, name) in [(a_ref, "az-a"), (b_ref, "az-b")] {
            for (query, want) in checks {
                let got = scalar(central, query, None).await;
                if got != Some(want) {
                    seen.push(format!("{name}: {query} = {got:?}, want {want}"));
                }
            }
        }
        if seen.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n{}", seen.join("\n"), demo_ref.output()))
        }
    })
    .await;

    // Both centrals hold the same series.
    let same = until_ok(Duration::from_secs(120), || async move {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let (sa, sb) = (series(a_ref, now).await, series(b_ref, now).await);
        if !sa.is_empty() && sa == sb {
            Ok(sa)
        } else {
            Err(format!(
                "series differ: {} only in az-a, {} only in az-b",
                sa.difference(&sb).count(),
                sb.difference(&sa).count()
            ))
        }
    })
    .await;
    assert!(same.len() > 500, "{} series", same.len());

    // The backfilled hour is there in both.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 3000;
    let history = "count(kube_pod_container_resource_requests)";
    let ha = scalar(&a, history, Some(an_hour_ago)).await;
    assert!(ha.is_some_and(|n| n > 10.0), "history in az-a: {ha:?}");
    assert_eq!(ha, scalar(&b, history, Some(an_hour_ago)).await);

    // The planner reports on the fleet from central az-a, and the monitor edge scrapes it.
    let planner = format!("http://127.0.0.1:{}", base + 3);
    assert!(
        first.contains(&format!("planner:    {planner}/")),
        "{first}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        if let Ok(resp) = reqwest::get(format!("{planner}/api/v1/report")).await
            && resp.status().is_success()
        {
            let text = resp.text().await.expect("report body");
            break serde_json::from_str::<Value>(&text).expect("report JSON");
        }
        assert!(
            Instant::now() < deadline,
            "no planner report\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(report["schema"], "strata.planner.report/v1");
    assert_eq!(report["summary"]["cells"], 2, "{report}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(&a, "up{job=\"strata-planner\"}", None).await != Some(1.0) {
        assert!(Instant::now() < deadline, "the planner is not scraped");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    check_dashboards_against(&a, &planner).await;

    let status = demo.interrupt().await;
    assert!(status.success(), "{status}\n{}", demo.output());
    assert!(
        demo.output()
            .contains("stopped; run the same command again")
    );

    // The same command resumes: the fleet and history are kept, nothing is written twice.
    let mut again = Demo::start(dir.path(), base, "second");
    again.wait_for_output("all components are ready").await;
    let second = again.output();
    assert!(second.contains(", resumed"), "{second}");
    assert!(second.contains("history: already written"), "{second}");
    assert_eq!(scalar(&a, history, Some(an_hour_ago)).await, ha);
    let status = again.interrupt().await;
    assert!(status.success(), "{status}\n{}", again.output());
}

/// Metric names a PromQL expression selects.
fn metric_names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(e) => {
            metric_names(&e.expr, out);
            if let Some(p) = &e.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(e) => metric_names(&e.expr, out),
        Expr::Binary(e) => {
            metric_names(&e.lhs, out);
            metric_names(&e.rhs, out);
        }
        Expr::Paren(e) => metric_names(&e.expr, out),
        Expr::Subquery(e) => metric_names(&e.expr, out),
        Expr::VectorSelector(vs) => out.extend(vs.name.clone()),
        Expr::MatrixSelector(ms) => out.extend(ms.vs.name.clone()),
        Expr::Call(call) => {
            for arg in &call.args.args {
                metric_names(arg, out);
            }
        }
        _ => {}
    }
}

/// Grafana's variables replaced by values PromQL parses.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${datasource}", "")
        .split('$')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                return part.to_string();
            }
            let rest = part.trim_start_matches(|c: char| {
                c.is_alphanumeric() || c == '_' || c == '{' || c == '}'
            });
            format!(".*{rest}")
        })
        .collect()
}

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out: Vec<Dashboard> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| Dashboard {
            file: p.file_name().expect("name").to_string_lossy().into_owned(),
            json: serde_json::from_str(&std::fs::read_to_string(&p).expect("read"))
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display())),
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// Every PromQL expression of a dashboard (panel targets and query variables), and the
/// metric names they select.
fn queried_metrics(d: &Dashboard) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in d.json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in d.json["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let q = var["query"]
                .as_str()
                .or_else(|| var["query"]["query"].as_str())
                .expect("variable query");
            if let Some(inner) = q.strip_prefix("label_values(") {
                let metric = inner
                    .trim_end_matches(')')
                    .rsplit_once(',')
                    .map_or(inner, |(m, _)| m);
                exprs.push(metric.to_string());
            } else {
                exprs.push(q.to_string());
            }
        }
    }
    for expr in exprs {
        let parsed = parser::parse(&substitute(&expr))
            .unwrap_or_else(|e| panic!("{}: {expr:?} is not PromQL: {e}", d.file));
        metric_names(&parsed, &mut names);
    }
    names
}

#[test]
fn every_dashboard_has_grafanas_shape_descriptions_and_a_datasource_variable() {
    let all = dashboards();
    assert!(
        all.len() >= 3,
        "pipeline, central and fleet capacity dashboards"
    );
    let mut uids = HashSet::new();
    for d in &all {
        let j = &d.json;
        for field in [
            "title",
            "uid",
            "schemaVersion",
            "panels",
            "templating",
            "time",
        ] {
            assert!(!j[field].is_null(), "{}: no {field}", d.file);
        }
        assert!(uids.insert(j["uid"].as_str().expect("uid").to_string()));
        let vars = j["templating"]["list"].as_array().expect("variables");
        assert_eq!(vars[0]["type"], "datasource", "{}", d.file);
        assert_eq!(vars[0]["query"], "prometheus", "{}", d.file);
        let var = format!("${{{}}}", vars[0]["name"].as_str().expect("name"));
        let mut ids = HashSet::new();
        for panel in j["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(panel["id"].as_i64().expect("id")),
                "{}: {title}",
                d.file
            );
            assert!(
                panel["description"].as_str().is_some_and(|s| s.len() > 10),
                "{}: panel {title:?} has no description",
                d.file
            );
            for key in ["x", "y", "w", "h"] {
                assert!(panel["gridPos"][key].is_u64(), "{}: {title}", d.file);
            }
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"],
                var.as_str(),
                "{}: {title}",
                d.file
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{}: {title}", d.file);
            for t in targets {
                assert_eq!(t["datasource"]["uid"], var.as_str(), "{}: {title}", d.file);
            }
        }
        assert!(!queried_metrics(d).is_empty());
    }
}

/// The metric names every dashboard queries are all held by a running central, or declared
/// without series by the planner's `/metrics`: its forecasts have no series until it has
/// weeks of history, more than the demo's hour.
async fn check_dashboards_against(central: &str, planner: &str) {
    let page = reqwest::get(format!("{planner}/metrics"))
        .await
        .expect("planner metrics")
        .text()
        .await
        .expect("planner metrics body");
    let with_series: HashSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let declared: HashSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !with_series.contains(name))
        .map(str::to_string)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(&format!("{central}/api/v1/label/__name__/values"), &[]).await;
        let held: HashSet<String> = v["data"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .chain(declared.iter().cloned())
            .collect();
        let missing: Vec<String> = dashboards()
            .iter()
            .flat_map(|d| {
                queried_metrics(d)
                    .into_iter()
                    .filter(|m| !held.contains(m))
                    .map(|m| format!("{}: {m}", d.file))
                    .collect::<Vec<_>>()
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dashboards query metrics the demo does not export:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
