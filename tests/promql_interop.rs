//! Interop of the query API with real Prometheus 2.42 (Debian): Prometheus scrapes a real node
//! exporter and itself and remote-writes every sample into a strata central; dashboard and
//! alerting queries evaluated on both at the same timestamps must agree within float
//! tolerance. Where Prometheus 2.x and 3.x (whose semantics strata implements) differ, the
//! case is named and the difference itself is checked. `promtool query` runs against the
//! central too.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Instant queries of the kinds dashboards and alert rules use.
const QUERIES: &[&str] = &[
    "up",
    "sum(up)",
    "count by (job) (up)",
    "rate(node_cpu_seconds_total[30s])",
    "sum by (mode) (rate(node_cpu_seconds_total[30s]))",
    "1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[30s]))",
    "irate(node_cpu_seconds_total{mode=\"user\"}[30s])",
    "increase(node_network_receive_bytes_total[30s])",
    "sum by (device) (rate(node_network_receive_bytes_total[30s]))",
    "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
    "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "node_filesystem_avail_bytes{fstype!=\"tmpfs\"} / node_filesystem_size_bytes{fstype!=\"tmpfs\"}",
    "predict_linear(node_memory_MemFree_bytes[30s], 3600)",
    "deriv(node_memory_MemFree_bytes[30s])",
    "topk(3, rate(node_cpu_seconds_total[30s]))",
    "bottomk(2, node_filesystem_size_bytes)",
    "histogram_quantile(0.99, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[30s])))",
    "histogram_quantile(0.5, sum by (le, handler) (rate(prometheus_http_request_duration_seconds_bucket[30s])))",
    "histogram_quantile(0.9, rate(prometheus_http_response_size_bytes_bucket[30s]))",
    "rate(prometheus_http_request_duration_seconds_sum[30s]) / rate(prometheus_http_request_duration_seconds_count[30s])",
    "absent(up{job=\"missing\"})",
    "absent(up{job=\"node\"})",
    "absent_over_time(up{job=\"missing\"}[1m])",
    "max_over_time(node_load1[30s])",
    "min_over_time(node_memory_MemFree_bytes[30s])",
    "avg_over_time(node_memory_MemFree_bytes[30s])",
    "stddev_over_time(node_memory_MemFree_bytes[30s])",
    "quantile_over_time(0.9, process_resident_memory_bytes[30s])",
    "changes(process_start_time_seconds[1m])",
    "resets(node_cpu_seconds_total[1m])",
    "last_over_time(up[30s])",
    "present_over_time(up[30s])",
    "sum(rate(prometheus_tsdb_head_samples_appended_total[30s]))",
    "max_over_time(rate(node_cpu_seconds_total{mode=\"system\"}[10s])[30s:5s])",
    "avg_over_time(sum(rate(node_network_transmit_bytes_total[10s]))[30s:2s])",
    "up * on (instance, job) group_left (nodename, release) node_uname_info",
    "rate(node_cpu_seconds_total[30s]) * on (instance) group_left (nodename) node_uname_info",
    "up == 1",
    "up == bool 1",
    "node_load1 >= 0",
    "up unless up{job=\"node\"}",
    "up or vector(0)",
    "up and on (job) up{job=\"prometheus\"}",
    "count(count by (cpu) (node_cpu_seconds_total))",
    "count_values(\"value\", up)",
    "quantile(0.5, rate(node_cpu_seconds_total[30s]))",
    "stddev(rate(node_cpu_seconds_total[30s]))",
    "stdvar by (mode) (rate(node_cpu_seconds_total[30s]))",
    "sum without (cpu) (rate(node_cpu_seconds_total[30s]))",
    "avg without (mode, cpu) (rate(node_cpu_seconds_total[30s]))",
    "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
    "label_join(up, \"id\", \"/\", \"job\", \"instance\")",
    "time() - process_start_time_seconds",
    "clamp_min(rate(node_network_receive_bytes_total[30s]), 1)",
    "clamp_max(node_load1, 0.5)",
    "round(node_memory_MemFree_bytes / 1024 / 1024)",
    "abs(deriv(node_memory_MemFree_bytes[30s]))",
    "ln(node_memory_MemTotal_bytes)",
    "sort_desc(sum by (mode) (rate(node_cpu_seconds_total[30s])))",
    "timestamp(up)",
    "scalar(sum(up)) * 2",
    "vector(scalar(count(up)))",
    "group by (job) (up)",
    "max by (job) (scrape_duration_seconds)",
    "min(scrape_samples_scraped)",
    "sum by (job) (scrape_samples_scraped)",
    "hour(vector(time()))",
    "delta(node_memory_MemFree_bytes[30s])",
    "idelta(node_memory_MemFree_bytes[30s])",
    "rate(node_cpu_seconds_total[30s] offset 10s)",
    "sum(rate(node_cpu_seconds_total[20s] @ end()))",
    "rate(prometheus_http_requests_total[30s]) > 0",
];

/// Range queries compared over the last 30 s at a 5 s step.
const RANGE_QUERIES: &[&str] = &[
    "up",
    "sum by (mode) (rate(node_cpu_seconds_total[20s]))",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[20s])))",
    "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
    "topk(2, rate(node_network_receive_bytes_total[20s]))",
    "max_over_time(node_load1[20s])",
    "absent(up{job=\"missing\"})",
    "count(up == 1)",
];

/// Result of a query as `metric → values`, plus its type; the metric keys keep result order.
type Answer = (String, Vec<(String, Vec<f64>)>);

fn value(v: &Value) -> f64 {
    strata_wire::api::parse_value(v[1].as_str().unwrap()).unwrap()
}

async fn ask(base: &str, path: &str, params: &[(&str, String)]) -> Answer {
    let resp = get_json(&format!("{base}/api/v1/{path}"), params).await;
    assert_eq!(resp["status"], "success", "{base} {params:?}: {resp}");
    let data = &resp["data"];
    let kind = data["resultType"].as_str().unwrap().to_string();
    let series = match kind.as_str() {
        "scalar" => vec![(String::new(), vec![value(&data["result"])])],
        _ => data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let metric: BTreeMap<String, String> =
                    serde_json::from_value(s["metric"].clone()).unwrap();
                let values = match s.get("values") {
                    Some(v) => v.as_array().unwrap().iter().map(value).collect(),
                    None => vec![value(&s["value"])],
                };
                (format!("{metric:?}"), values)
            })
            .collect(),
    };
    (kind, series)
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Compares two answers: same type, same series, values within tolerance; in order where
/// `ordered`.
fn same(query: &str, prom: &Answer, strata: &Answer, ordered: bool) -> Result<(), String> {
    if prom.0 != strata.0 {
        return Err(format!(
            "{query}: result type {} from Prometheus, {} from strata",
            prom.0, strata.0
        ));
    }
    let sorted = |a: &Answer| {
        let mut s = a.1.clone();
        if !ordered {
            s.sort_by(|x, y| x.0.cmp(&y.0));
        }
        s
    };
    let (p, s) = (sorted(prom), sorted(strata));
    let keys = |v: &[(String, Vec<f64>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    if keys(&p) != keys(&s) {
        return Err(format!(
            "{query}: series differ\n  prometheus: {:?}\n  strata:     {:?}",
            keys(&p),
            keys(&s)
        ));
    }
    for ((m, pv), (_, sv)) in p.iter().zip(&s) {
        if pv.len() != sv.len() || pv.iter().zip(sv).any(|(a, b)| !close(*a, *b)) {
            return Err(format!("{query}: {m}: prometheus {pv:?}, strata {sv:?}"));
        }
    }
    Ok(())
}

fn instant(q: &str, t: f64) -> Vec<(&'static str, String)> {
    vec![("query", q.to_string()), ("time", format!("{t:.3}"))]
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(peer_binary("promtool", "prometheus"))
        .args(["query"])
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool query {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_central_agree_on_dashboard_queries() {
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(dir.path(), "central", free_port(), &[]).await;
    let node_port = free_port();
    let mut node = Command::new(peer_binary(
        "prometheus-node-exporter",
        "prometheus-node-exporter",
    ));
    node.arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut node = Proc {
        child: node.spawn().unwrap(),
        port: node_port,
        name: "node exporter",
    };
    wait_ready(
        &format!("http://127.0.0.1:{node_port}/metrics"),
        &mut node.child,
        "node exporter",
    )
    .await;
    let prom_port = free_port();
    let prom = start_prometheus_at(
        dir.path(),
        &format!(
            "scrape_configs:
  - job_name: node
    scrape_interval: 1s
    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]
  - job_name: prometheus
    scrape_interval: 1s
    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]
remote_write:
  - url: {}/api/v1/write
    queue_config: {{batch_send_deadline: 500ms}}
    metadata_config: {{send_interval: 5s}}
",
            central.base()
        ),
        prom_port,
    )
    .await;
    // 45 s of scrapes, then queries at a time both stores have complete data for.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let t = (now - 5.0).floor() + 0.5;
    let all = "{job=~\".+\"}[40s]";
    // Both are asked again until they agree: a stalled Prometheus may still be appending
    // scrapes before t, and remote-write may still be delivering them to the central.
    until_ok(Duration::from_secs(60), || async {
        let want = ask(&prom.base(), "query", &instant(all, t)).await;
        let got = ask(&central.base(), "query", &instant(all, t)).await;
        same(all, &want, &got, false)
            .map_err(|e| format!("the central holds every sample Prometheus scraped: {e}"))
    })
    .await;

    // 2.x/3.x difference: 2.x drops the metric name inside `count_over_time`, so the series of
    // different metrics collide before `sum` sees them; 3.x drops names at the end.
    let collide = "sum(count_over_time({job=\"node\"}[30s]))";
    let p = get_json(
        &format!("{}/api/v1/query", prom.base()),
        &instant(collide, t),
    )
    .await;
    assert_eq!(
        p["error"], "vector cannot contain metrics with the same labelset",
        "{p}"
    );
    ask(&central.base(), "query", &instant(collide, t)).await;

    let mut failures = Vec::new();
    let mut empty = Vec::new();
    for q in QUERIES {
        let p = ask(&prom.base(), "query", &instant(q, t)).await;
        let s = ask(&central.base(), "query", &instant(q, t)).await;
        if p.1.is_empty() {
            empty.push(*q);
        }
        if let Err(e) = same(q, &p, &s, q.starts_with("sort")) {
            failures.push(e);
        }
    }
    for q in RANGE_QUERIES {
        let params = vec![
            ("query", q.to_string()),
            ("start", format!("{:.3}", t - 30.0)),
            ("end", format!("{t:.3}")),
            ("step", "5".to_string()),
        ];
        let p = ask(&prom.base(), "query_range", &params).await;
        let s = ask(&central.base(), "query_range", &params).await;
        if let Err(e) = same(q, &p, &s, false) {
            failures.push(format!("range {e}"));
        }
    }
    // Only the `absent` of a present series and the `unless` of everything answer nothing.
    assert_eq!(
        empty,
        ["absent(up{job=\"node\"})"],
        "queries with empty answers prove nothing"
    );
    assert!(
        failures.is_empty(),
        "{} of {} queries differ:\n{}",
        failures.len(),
        QUERIES.len() + RANGE_QUERIES.len(),
        failures.join("\n")
    );

    // 2.x/3.x difference: `holt_winters` of 2.x is `double_exponential_smoothing` in 3.x.
    let hw = "holt_winters(node_memory_MemFree_bytes[30s], 0.5, 0.5)";
    let des = "double_exponential_smoothing(node_memory_MemFree_bytes[30s], 0.5, 0.5)";
    let p = ask(&prom.base(), "query", &instant(hw, t)).await;
    let s = ask(&central.base(), "query", &instant(des, t)).await;
    same(des, &p, &s, false).unwrap();

    // 2.x/3.x difference: 2.x range windows include their left edge, 3.x's do not. At a time
    // exactly 30 s after a sample (one old enough that both stores hold the whole window),
    // Prometheus 2.42 counts one more sample in a 30 s window.
    let ts = ask(
        &prom.base(),
        "query",
        &instant("timestamp(up{job=\"node\"})", t - 31.0),
    )
    .await;
    let edge = ts.1[0].1[0] + 30.0;
    let count = "count_over_time(up{job=\"node\"}[30s])";
    let p = ask(&prom.base(), "query", &instant(count, edge)).await;
    let s = ask(&central.base(), "query", &instant(count, edge)).await;
    assert_eq!(p.1[0].1[0], s.1[0].1[0] + 1.0, "left edge: {p:?} {s:?}");

    // Metric metadata arrives with remote-write.
    let meta = get_json(
        &format!("{}/api/v1/metadata", central.base()),
        &[("metric", "node_cpu_seconds_total".to_string())],
    )
    .await;
    assert_eq!(
        meta["data"]["node_cpu_seconds_total"][0]["type"], "counter",
        "{meta}"
    );

    // Label names and the values of every label agree (Grafana's label browser). Prometheus
    // keeps scraping itself, so a label value it just created (the status code of a query
    // above) may still be on its way to the central: compare until both agree, for 30 s.
    let agree = |path: String| {
        let (ours, theirs) = (central.base(), prom.base());
        async move {
            let mut pair = (Value::Null, Value::Null);
            for _ in 0..120 {
                pair = (
                    get_json(&format!("{ours}{path}"), &[]).await["data"].clone(),
                    get_json(&format!("{theirs}{path}"), &[]).await["data"].clone(),
                );
                if pair.0 == pair.1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            pair
        }
    };
    let (ours, theirs) = agree("/api/v1/labels".into()).await;
    assert_eq!(ours, theirs);
    for name in ours.as_array().unwrap() {
        let path = format!("/api/v1/label/{}/values", name.as_str().unwrap());
        let (ours, theirs) = agree(path).await;
        assert_eq!(ours, theirs, "values of {name}");
    }

    // promtool against the central.
    let base = central.base();
    let out = promtool(&["instant", &base, "count by (job) (up)"]);
    assert!(
        out.contains("{job=\"node\"} => 1") && out.contains("{job=\"prometheus\"} => 1"),
        "{out}"
    );
    let (start, end) = (format!("{:.0}", t - 10.0), format!("{t:.0}"));
    let out = promtool(&[
        "range", "--start", &start, "--end", &end, "--step", "5s", &base, "sum(up)",
    ]);
    assert!(
        out.contains("{} =>") && out.matches(" @[").count() == 3,
        "{out}"
    );
    let out = promtool(&["series", "--match", "up", &base]);
    assert!(
        out.contains("job=\"node\"") && out.contains("job=\"prometheus\""),
        "{out}"
    );
    let out = promtool(&["labels", &base, "job"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["node", "prometheus"],
        "{out}"
    );
}
