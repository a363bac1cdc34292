//! End-to-end tests of rules in `strata central`: recording rules written into the store,
//! alerts pending → firing → resolved, delivered to a real Alertmanager 0.25 (Debian's
//! `prometheus-alertmanager`) and through it to a webhook receiver, the rules and alerts
//! APIs, and reloads by `/-/reload` and SIGHUP.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_wire::clock::now_ms;
use strata_wire::{Label, Sample, TimeSeries, WriteRequest};
use support::{get_json, start_alerting};

/// Writes `load{job="api",instance="a"}` every 200 ms with the value in `value` (f64 bits).
fn start_writer(port: u16, value: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let url = format!("http://127.0.0.1:{port}/api/v1/write");
        loop {
            let body = WriteRequest {
                timeseries: vec![TimeSeries {
                    labels: vec![
                        Label::new("__name__", "load"),
                        Label::new("instance", "a"),
                        Label::new("job", "api"),
                    ],
                    samples: vec![Sample {
                        value: f64::from_bits(value.load(Ordering::Relaxed)),
                        timestamp: now_ms(),
                    }],
                    ..Default::default()
                }],
                metadata: vec![],
            }
            .encode_snappy()
            .unwrap();
            support::post_write(&url, None, body).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Polls `check` every 100 ms until it gives `Some` (or 30 s pass, then panics with `what`).
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn query(base: &str, q: &str) -> Vec<Value> {
    let r = get_json(&format!("{base}/api/v1/query"), &[("query", q.to_string())]).await;
    assert_eq!(r["status"], "success", "{r}");
    r["data"]["result"].as_array().unwrap().clone()
}

const RULES: &str = "groups:
- name: load
  interval: 1s
  rules:
  - record: job:load:max
    expr: max by (job) (load)
  - alert: HighLoad
    expr: load > 10
    for: 2s
    labels: {severity: page}
    annotations:
      summary: '{{ $labels.instance }} at {{ $value }}'
      link: '{{ $externalURL }}'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_record_and_alert_through_a_real_alertmanager_and_reload() {
    let setup = start_alerting(
        RULES,
        "[alertname]",
        &[
            "--rules-resend-delay",
            "2s",
            "--external-url",
            "http://strata.example:9301",
            "--external-label",
            "az=az-a",
            "--query-lookback-delta",
            "60s",
        ],
    )
    .await;
    let (central, recorder, hook, am) =
        (&setup.central, &setup.api, &setup.hook, &setup.alertmanager);
    let rules = &setup.rules;
    let port = central.port;
    let base = central.base();
    let value = Arc::new(AtomicU64::new(5f64.to_bits()));
    start_writer(port, value.clone());

    // The recording rule writes its series; the alert stays inactive.
    wait_for("the recorded series", || async {
        let r = query(&base, "job:load:max").await;
        (r.len() == 1 && r[0]["value"][1] == "5").then_some(())
    })
    .await;
    let groups = get_json(&format!("{base}/api/v1/rules"), &[]).await;
    let group = &groups["data"]["groups"][0];
    assert_eq!(group["name"], "load");
    assert_eq!(group["interval"], 1.0);
    assert_eq!(group["rules"][0]["type"], "recording");
    assert_eq!(group["rules"][0]["health"], "ok");
    assert_eq!(group["rules"][1]["state"], "inactive");
    assert_eq!(group["rules"][1]["query"], "load > 10");
    let only_alerts = get_json(
        &format!("{base}/api/v1/rules"),
        &[("type", "alert".to_string())],
    )
    .await;
    assert_eq!(
        only_alerts["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Over the threshold: pending, then firing after `for`.
    value.store(20f64.to_bits(), Ordering::Relaxed);
    let pending_seen = Instant::now();
    wait_for("the alert to fire", || async {
        let a = get_json(&format!("{base}/api/v1/alerts"), &[]).await;
        (a["data"]["alerts"][0]["state"] == "firing").then_some(())
    })
    .await;
    assert!(
        pending_seen.elapsed() >= Duration::from_secs(2),
        "fired before its `for`"
    );
    let alerts = get_json(&format!("{base}/api/v1/alerts"), &[]).await;
    let alert = &alerts["data"]["alerts"][0];
    assert_eq!(alert["annotations"]["summary"], "a at 20");
    assert_eq!(alert["annotations"]["link"], "http://strata.example:9301");
    assert_eq!(alert["value"], "2e+01");
    assert_eq!(
        query(&base, "ALERTS{alertstate=\"firing\"}").await[0]["metric"]["severity"],
        "page"
    );

    // Alertmanager's API format: what the central sent.
    let sent = wait_for("alerts sent to the Alertmanager API", || async {
        let posts = recorder.posts("/api/v2/alerts");
        (posts.len() >= 2).then_some(posts)
    })
    .await;
    let first = &sent[0][0];
    assert_eq!(first["labels"]["alertname"], "HighLoad");
    assert_eq!(first["labels"]["az"], "az-a", "external labels are added");
    assert_eq!(
        first["generatorURL"],
        "http://strata.example:9301/graph?g0.expr=load+%3E+10&g0.tab=1"
    );
    let starts = first["startsAt"].as_str().unwrap();
    assert!(starts.ends_with('Z') && starts.len() == 24, "{starts}");
    // Re-sent with the same start while firing, each time valid further ahead.
    assert_eq!(sent[1][0]["startsAt"], first["startsAt"]);
    assert!(sent[1][0]["endsAt"].as_str() > first["endsAt"].as_str());

    // The real Alertmanager took it and notified its webhook receiver.
    let message = wait_for("the Alertmanager's webhook", || async {
        hook.posts("/hook")
            .into_iter()
            .find(|m| m["status"] == "firing")
    })
    .await;
    assert_eq!(message["version"], "4");
    assert_eq!(message["groupKey"], "{}:{alertname=\"HighLoad\"}");
    assert_eq!(message["commonLabels"]["severity"], "page");
    assert_eq!(message["alerts"][0]["annotations"]["summary"], "a at 20");
    let am_alerts = get_json(&format!("{}/api/v2/alerts", am.base()), &[]).await;
    assert_eq!(am_alerts[0]["labels"]["instance"], "a");
    assert_eq!(
        humantime::parse_rfc3339(am_alerts[0]["startsAt"].as_str().unwrap()).unwrap(),
        humantime::parse_rfc3339(starts).unwrap()
    );

    // Back under the threshold: resolved at the Alertmanager, ALERTS marked stale.
    value.store(5f64.to_bits(), Ordering::Relaxed);
    wait_for("the resolved notification", || async {
        hook.posts("/hook")
            .into_iter()
            .find(|m| m["status"] == "resolved")
    })
    .await;
    assert!(query(&base, "ALERTS").await.is_empty(), "ALERTS not stale");
    let a = get_json(&format!("{base}/api/v1/alerts"), &[]).await;
    assert!(a["data"]["alerts"].as_array().unwrap().is_empty(), "{a}");
    let resolved = recorder
        .posts("/api/v2/alerts")
        .into_iter()
        .flat_map(|b| b.as_array().unwrap().clone())
        .find(|a| {
            humantime::parse_rfc3339(a["endsAt"].as_str().unwrap()).unwrap()
                <= std::time::SystemTime::now()
        });
    assert!(resolved.is_some(), "no resolved alert was sent");

    // A broken file is refused and the running rules stay.
    std::fs::write(rules, RULES.replace("load > 10", "load >")).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("rules.yml") && text.contains("HighLoad"),
        "{text}"
    );
    let count = |v: &Value| v["data"]["groups"][0]["rules"].as_array().unwrap().len();
    assert_eq!(
        count(&get_json(&format!("{base}/api/v1/rules"), &[]).await),
        2
    );

    // SIGHUP loads a fixed file with one more rule.
    let more = format!("{RULES}  - record: load:doubled\n    expr: load * 2\n");
    std::fs::write(rules, more).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &central.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the reloaded rules", || async {
        let v = get_json(&format!("{base}/api/v1/rules"), &[]).await;
        (count(&v) == 3).then_some(())
    })
    .await;
    wait_for("the new rule's series", || async {
        let r = query(&base, "load:doubled").await;
        (r.len() == 1 && r[0]["value"][1] == "10").then_some(())
    })
    .await;
    let metrics = support::get_text(&format!("{base}/metrics")).await;
    assert!(metrics.contains("strata_rules{az=\"az-a\"} 3"), "{metrics}");
    assert!(metrics.contains("strata_rules_config_last_reload_successful{az=\"az-a\"} 1"));
}
