//! Direct webhook receivers of `strata central` with two AZs: both evaluate the same rules
//! and group the same alerts, and an in-test receiver gets each notification once, with both
//! AZs up, with the sender AZ killed, and with the other AZ killed after the first came back.
//! Its messages equal those real Alertmanager 0.25 sends for the same alerts and grouping.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_wire::clock::now_ms;
use strata_wire::{Label, Sample, TimeSeries, WriteRequest};
use support::{Proc, Recorder, free_port, get_json, get_text, start_alertmanager, start_central};

const RULES: &str = "groups:
- name: load
  interval: 1s
  rules:
  - alert: HighLoad
    expr: load > 10
    labels: {severity: page}
    annotations:
      summary: '{{ $labels.instance }} at {{ $value }}'
";

/// One group per alert name, notified a second after it starts and then at most every 5 s (far
/// apart enough that a late delivery on a loaded machine is not taken for two in one
/// interval); a repeat interval longer than the test, so every notification is due to a
/// change.
fn notify_config(hook: &str) -> String {
    format!(
        "route:
  receiver: team.hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: team.hook
    webhook_configs:
      - url: {hook}/hook
        http_config:
          authorization: {{credentials: hook-token}}
      - url: {hook}/truncated
        max_alerts: 1
        send_resolved: false
"
    )
}

/// Writes `load{instance=...}` to every central every 200 ms, with the values in `values`.
fn start_writer(ports: Vec<u16>, values: Arc<BTreeMap<&'static str, AtomicU64>>) {
    tokio::spawn(async move {
        loop {
            let timeseries = values
                .iter()
                .map(|(instance, v)| TimeSeries {
                    labels: vec![
                        Label::new("__name__", "load"),
                        Label::new("instance", *instance),
                    ],
                    samples: vec![Sample {
                        value: f64::from_bits(v.load(Ordering::Relaxed)),
                        timestamp: now_ms(),
                    }],
                    ..Default::default()
                })
                .collect();
            let body = WriteRequest {
                timeseries,
                metadata: vec![],
            }
            .encode_snappy()
            .unwrap();
            for port in &ports {
                let url = format!("http://127.0.0.1:{port}/api/v1/write");
                let _ = reqwest::Client::new()
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body.clone())
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// The instances firing and resolved in a webhook message.
fn summary(message: &Value) -> (Vec<String>, Vec<String>) {
    let mut firing = Vec::new();
    let mut resolved = Vec::new();
    for a in message["alerts"].as_array().unwrap() {
        let instance = a["labels"]["instance"].as_str().unwrap().to_string();
        if a["status"] == "firing" {
            firing.push(instance);
        } else {
            resolved.push(instance);
        }
    }
    (firing, resolved)
}

/// Waits until `/hook` has `n` messages and returns the last; panics after `within`.
async fn nth_message(hook: &Recorder, n: usize, within: Duration, what: &str) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let posts = hook.posts("/hook");
        if posts.len() >= n {
            assert_eq!(
                posts.len(),
                n,
                "{what}: more notifications than changes: {posts:#?}"
            );
            return posts[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no notification {n} within {within:?}; got {posts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The webhook message fields that do not depend on who sent it or when.
fn comparable(message: &Value) -> Value {
    let mut m = message.clone();
    m.as_object_mut().unwrap().remove("externalURL");
    // Alertmanager merges both AZs' copies of an alert: the earliest start, the latest end.
    for a in m["alerts"].as_array_mut().unwrap() {
        let a = a.as_object_mut().unwrap();
        for field in ["generatorURL", "startsAt", "endsAt"] {
            a.remove(field);
        }
    }
    m
}

async fn start_az(
    dir: &Path,
    az: &str,
    (port, peer): (u16, u16),
    rules: &Path,
    notify: &Path,
    alertmanager: &str,
) -> Proc {
    let sub = dir.join(az);
    std::fs::create_dir_all(&sub).unwrap();
    let args = [
        "--az".to_string(),
        az.to_string(),
        "--peer-url".to_string(),
        format!("http://127.0.0.1:{peer}"),
        "--rule-file".to_string(),
        rules.display().to_string(),
        "--notify-config".to_string(),
        notify.display().to_string(),
        "--notify-peer-check-interval".to_string(),
        "3s".to_string(),
        "--rules-resend-delay".to_string(),
        "1s".to_string(),
        "--rules-resolved-retention".to_string(),
        "5s".to_string(),
        "--query-lookback-delta".to_string(),
        "60s".to_string(),
        "--external-url".to_string(),
        format!("http://central-{az}.example:9301"),
        "--alertmanager-url".to_string(),
        alertmanager.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_central(&sub, "data", port, &args).await
}

/// Waits for a message of `hook` with the instances `want` firing and resolved.
async fn wait_for_message(hook: &Recorder, want: &(Vec<String>, Vec<String>), what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(m) = hook
            .posts("/hook")
            .into_iter()
            .find(|m| &summary(m) == want)
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no message with {want:?}: {:#?}",
            hook.posts("/hook")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn is_sender(base: &str) -> bool {
    get_json(&format!("{base}/api/v1/notifications/status"), &[]).await["sender"] == true
}

async fn wait_sender(base: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_sender(base).await {
        assert!(
            Instant::now() < deadline,
            "{what}: {base} never became the sender"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_each_notification_once_from_two_azs_with_either_down() {
    let dir = tempfile::tempdir().unwrap();
    // The first attempt at the receiver fails with 503: it is retried.
    let hook = Recorder::start(Some("/hook")).await;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let notify = dir.path().join("notify.yml");
    std::fs::write(&notify, notify_config(&hook.url())).unwrap();
    // Both AZs also send to a real Alertmanager 0.25 with the same receiver and grouping,
    // whose webhook messages strata's must equal.
    let am_hook = Recorder::start(None).await;
    let am = start_alertmanager(
        dir.path(),
        "[alertname]",
        "team.hook",
        &format!("{}/hook", am_hook.url()),
    )
    .await;
    let (port_a, port_b) = (free_port(), free_port());
    let ports_a = (port_a, port_b);
    let ports_b = (port_b, port_a);
    let mut a = start_az(dir.path(), "az-a", ports_a, &rules, &notify, &am.base()).await;
    let mut b = start_az(dir.path(), "az-b", ports_b, &rules, &notify, &am.base()).await;
    let values: Arc<BTreeMap<&'static str, AtomicU64>> = Arc::new(
        ["a", "b", "c"]
            .into_iter()
            .map(|i| (i, AtomicU64::new(5f64.to_bits())))
            .collect(),
    );
    start_writer(vec![port_a, port_b], values.clone());
    let set = |instance: &str, v: f64| values[instance].store(v.to_bits(), Ordering::Relaxed);
    let plenty = Duration::from_secs(40);

    // Both up: az-a, whose name sorts first, sends; az-b holds the same groups and sends
    // nothing.
    wait_sender(&a.base(), "both up").await;
    assert!(!is_sender(&b.base()).await);
    set("a", 20.0);
    let m1 = nth_message(&hook, 1, plenty, "a fires").await;
    assert!(
        hook.authorizations("/hook")
            .iter()
            .all(|a| a == "Bearer hook-token")
    );
    assert_eq!(hook.authorizations("/truncated")[0], "");
    assert_eq!(m1["version"], "4");
    assert_eq!(
        m1["receiver"], "team\\.hook",
        "Alertmanager's QuoteMeta of the name"
    );
    assert_eq!(m1["groupKey"], "{}:{alertname=\"HighLoad\"}");
    assert_eq!(
        m1["groupLabels"],
        serde_json::json!({"alertname": "HighLoad"})
    );
    assert_eq!(m1["commonLabels"]["severity"], "page");
    assert_eq!(m1["externalURL"], "http://central-az-a.example:9301");
    assert_eq!(m1["status"], "firing");
    assert_eq!(m1["truncatedAlerts"], 0);
    let alert = &m1["alerts"][0];
    assert_eq!(alert["annotations"]["summary"], "a at 20");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("http://central-az-a.example:9301/graph?g0.expr=load+%3E+10")
    );
    assert_eq!(summary(&m1), (vec!["a".to_string()], vec![]));

    set("b", 30.0);
    let m2 = nth_message(&hook, 2, plenty, "b fires").await;
    assert_eq!(summary(&m2), (vec!["a".into(), "b".into()], vec![]));
    // The second webhook of the receiver keeps one alert and says how many it left out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.posts("/truncated").len() < 2 {
        assert!(Instant::now() < deadline, "{:#?}", hook.posts("/truncated"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let truncated = hook.posts("/truncated");
    assert_eq!(truncated.len(), 2, "{truncated:#?}");
    assert_eq!(truncated[1]["truncatedAlerts"], 1);
    assert_eq!(truncated[1]["alerts"].as_array().unwrap().len(), 1);

    set("b", 5.0);
    let m3 = nth_message(&hook, 3, plenty, "b resolves").await;
    assert_eq!(summary(&m3), (vec!["a".into()], vec!["b".into()]));
    assert_eq!(m3["alerts"][1]["status"], "resolved");
    assert_ne!(m3["alerts"][1]["endsAt"], "0001-01-01T00:00:00Z");
    // Real Alertmanager told its webhook the same, in the same words.
    for (i, ours) in [&m1, &m2, &m3].into_iter().enumerate() {
        let theirs = wait_for_message(&am_hook, &summary(ours), "Alertmanager's webhook").await;
        assert_eq!(comparable(&theirs), comparable(ours), "message {}", i + 1);
    }
    // Without send_resolved nothing new is due there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.posts("/truncated").len(), 2);

    // az-b knows what az-a sent, and left every due flush to it.
    let log = get_json(&format!("{}/api/v1/notifications/log", b.base()), &[]).await;
    let entry = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["integration"] == 0)
        .unwrap()
        .clone();
    assert_eq!(entry["groupKey"], "{}:{alertname=\"HighLoad\"}");
    assert_eq!(entry["firing"].as_array().unwrap().len(), 1);
    let metrics_b = get_text(&format!("{}/metrics", b.base())).await;
    assert!(metrics_b.contains("strata_webhook_sender{az=\"az-b\"} 0"));
    let metrics_a = get_text(&format!("{}/metrics", a.base())).await;
    assert!(metrics_a.contains("strata_webhook_sender{az=\"az-a\"} 1"));
    assert!(
        metrics_a
            .contains("strata_webhook_notifications_total{az=\"az-a\",receiver=\"team.hook\"} 5"),
        "{metrics_a}"
    );
    assert!(
        !metrics_a.contains("strata_webhook_request_errors_total{az=\"az-a\"} 0"),
        "the refused first attempt is counted"
    );

    // The sender stops: az-b takes over and tells what changed, nothing twice.
    a.kill();
    set("c", 40.0);
    let killed = Instant::now();
    let m4 = nth_message(&hook, 4, plenty, "c fires with az-a down").await;
    assert_eq!(summary(&m4).0, vec!["a".to_string(), "c".to_string()]);
    // One group interval (5 s), two failed peer checks (6 s), an evaluation (1 s), and room
    // for a loaded machine.
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed.elapsed()
    );
    assert!(is_sender(&b.base()).await);

    // az-a comes back: it reads az-b's log and sends again once az-b has stopped; nothing
    // already sent is sent again.
    let mut a = start_az(dir.path(), "az-a", ports_a, &rules, &notify, &am.base()).await;
    wait_sender(&a.base(), "az-a back").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_sender(&b.base()).await {
        assert!(Instant::now() < deadline, "az-b still sends with az-a back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than a group interval: a notification sent again would be here.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(hook.posts("/hook").len(), 4, "{:#?}", hook.posts("/hook"));

    // The other AZ stops: az-a alone sends the resolution.
    b.kill();
    set("c", 5.0);
    let m5 = nth_message(&hook, 5, plenty, "c resolves with az-b down").await;
    let (firing, resolved) = summary(&m5);
    assert_eq!(firing, vec!["a".to_string()]);
    assert!(resolved.contains(&"c".to_string()), "{m5:#}");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(hook.posts("/hook").len(), 5, "{:#?}", hook.posts("/hook"));

    // Every message of the group came in an interval of its own (the first one was retried
    // 500 ms into its interval, so it is left out). Flushes are due a group interval (5 s)
    // after the one before started, and a late delivery shortens the next gap, so the gap
    // checked is half of it.
    let times: Vec<f64> = hook.timed_posts("/hook").iter().map(|(t, _)| *t).collect();
    for pair in times[1..].windows(2) {
        assert!(
            pair[1] - pair[0] >= 2.5,
            "two notifications in one interval: {times:?}"
        );
    }
    a.terminate();
}
