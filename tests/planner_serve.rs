//! `strata planner serve` end to end: reports from a backfilled central served as HTML with
//! charts, JSON and metrics; notifications to a webhook receiver and to the real Alertmanager
//! 0.25 from Debian, whose own webhook notifications of the same alerts must look exactly
//! like the planner's (same payload keys, group key, labels, annotations, start time and
//! fingerprint). Notifications are sent once, survive a receiver's 503 and a restart without
//! being sent again, and are resolved when the decision goes away.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{Proc, Recorder, free_port, get_text, spawn_ready, start_central};

/// What the in-test webhook receiver got: (path, body).
async fn start_planner(
    dir: &Path,
    source: &str,
    config: &Path,
    hook: &str,
    alertmanager: &str,
) -> Proc {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["planner", "serve", "--source", source, "--interval", "2s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(config)
        .args(["--webhook-url", hook, "--alertmanager-url", alertmanager])
        .args(["--repeat-interval", "1h"])
        .arg("--state-file")
        .arg(dir.join("notifications.json"));
    spawn_ready(dir, "strata planner", command, port, "/-/ready").await
}

/// Waits until `path` got at least `want` messages, for up to 60 s.
async fn wait_for(received: &Recorder, path: &str, want: usize) -> Vec<Value> {
    for _ in 0..600 {
        let got = received.posts(path);
        if got.len() >= want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{path} got {} messages, want {want}: {:#?}",
        received.posts(path).len(),
        received.posts(path)
    );
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn fingerprint(m: &Value) -> String {
    m["alerts"][0]["fingerprint"].as_str().unwrap().to_string()
}

fn write_config(path: &Path, headroom: f64, lead_time_days: u32) {
    std::fs::write(
        path,
        format!("headroom: {headroom}\nlead_time_days: {lead_time_days}\n"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_reports_and_notifies_once_like_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(dir.path(), "central", free_port(), &[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // History up to the last full hour, that hour's sample included (the end is exclusive).
    let time = |s: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
            .to_string()
    };
    let (at, end) = (time(now / 3600 * 3600), time(now / 3600 * 3600 + 1));
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["sim", "backfill", "--seed", "7", "--regions", "1"])
        .args(["--cells-per-region", "2", "--clusters-per-cell", "5"])
        .args(["--days", "35", "--step", "1h", "--anchor", &at, "--end", &end])
        .args([
            "--jobs",
            "kube-state-metrics,ipam,aws-cni,hypershift,etcd,apiserver,hosted-apiserver,hosted-etcd",
        ])
        .args(["--to", &format!("{}/api/v1/write", central.base())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let received = Recorder::start(Some("/direct")).await;
    let hook = |path: &str| format!("{}{path}", received.url());
    // Group by every label, as the planner does: one alert per notification.
    let alertmanager = support::start_alertmanager(
        dir.path(),
        "['...']",
        "strata-planner",
        &hook("/from-alertmanager"),
    )
    .await;
    let am = alertmanager.base();

    // A low headroom line and a long lead time: every cell's split is due now.
    let config = dir.path().join("planner.yaml");
    write_config(&config, 0.3, 400);
    let mut planner =
        start_planner(dir.path(), &central.base(), &config, &hook("/direct"), &am).await;
    let report: Value =
        serde_json::from_str(&get_text(&format!("{}/api/v1/report", planner.base())).await)
            .unwrap();
    assert_eq!(report["schema"], "strata.planner.report/v1");
    let due = report["summary"]["act_now"].as_u64().unwrap() as usize;
    let splits = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "split_cell" && d["urgency"] == "act_now")
        .count();
    assert_eq!(
        splits, 2,
        "both cells should be due for a split: {report:#}"
    );

    // Each due decision reaches the receiver once, despite the first 503, and Alertmanager
    // forwards the same alerts.
    let direct = wait_for(&received, "/direct", due).await;
    let forwarded = wait_for(&received, "/from-alertmanager", due).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // two more reports
    assert_eq!(received.posts("/direct").len(), due, "sent more than once");
    let fingerprints: BTreeSet<String> = direct.iter().map(fingerprint).collect();
    assert_eq!(fingerprints.len(), due);

    for ours in &direct {
        let theirs = forwarded
            .iter()
            .find(|m| fingerprint(m) == fingerprint(ours))
            .unwrap_or_else(|| {
                panic!("Alertmanager has no alert with the fingerprint of {ours:#}")
            });
        assert_eq!(keys(ours), keys(theirs));
        for key in [
            "version",
            "groupKey",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "truncatedAlerts",
        ] {
            assert_eq!(ours[key], theirs[key], "{key} differs");
        }
        let (a, b) = (&ours["alerts"][0], &theirs["alerts"][0]);
        assert_eq!(keys(a), keys(b));
        for key in [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        ] {
            assert_eq!(a[key], b[key], "alert {key} differs");
        }
        assert_eq!(ours["externalURL"], planner.base());
    }

    // Served pages: HTML with charts, chart files, metrics and Markdown.
    let html = get_text(&format!("{}/", planner.base())).await;
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<svg"),
        "{html}"
    );
    let cell = report["cells"][0]["cell"].as_str().unwrap();
    let png = reqwest::get(format!("{}/charts/{cell}/cpu_requests.png", planner.base()))
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let metrics = get_text(&format!("{}/metrics", planner.base())).await;
    for want in [
        "strata_planner_days_to_headroom{region=",
        "quantile=\"0.9\"",
        "strata_planner_resource_utilisation{",
        "strata_planner_decision_act_by_days{kind=\"split_cell\",urgency=\"act_now\"",
        "strata_planner_reports_total{result=\"ok\"}",
        &format!("strata_planner_alerts_firing {due}"),
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }

    // A restart remembers what was sent.
    planner.terminate();
    let mut planner =
        start_planner(dir.path(), &central.base(), &config, &hook("/direct"), &am).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        received.posts("/direct").len(),
        due,
        "sent again after a restart"
    );

    // With the headroom line at the limit and a short lead time no split is due: both are
    // resolved, to the receiver and through Alertmanager; the promotions stay firing and are
    // not sent again.
    planner.terminate();
    write_config(&config, 0.99, 1);
    let _planner = start_planner(dir.path(), &central.base(), &config, &hook("/direct"), &am).await;
    let resolved_direct = |received: &Recorder, path: &str| {
        received
            .posts(path)
            .into_iter()
            .filter(|m| m["status"] == "resolved")
            .collect::<Vec<_>>()
    };
    let direct = wait_for(&received, "/direct", due + splits).await;
    assert_eq!(direct.len(), due + splits);
    let resolved = resolved_direct(&received, "/direct");
    assert_eq!(resolved.len(), splits);
    for m in &resolved {
        assert_eq!(
            m["commonLabels"]["alertname"], "StrataPlannerSplitCell",
            "{m:#}"
        );
        assert_ne!(m["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    }
    // Alertmanager also resolves on its own any alert whose endsAt (four intervals ahead)
    // passed while the planner restarted, so only the splits are compared.
    let ours: BTreeSet<String> = resolved.iter().map(fingerprint).collect();
    let split_resolved = || -> BTreeSet<String> {
        resolved_direct(&received, "/from-alertmanager")
            .iter()
            .filter(|m| m["commonLabels"]["alertname"] == "StrataPlannerSplitCell")
            .map(fingerprint)
            .collect()
    };
    for _ in 0..300 {
        if split_resolved().len() >= splits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ours,
        split_resolved(),
        "Alertmanager did not resolve the splits"
    );
}
