//! The relabelling golden table, `tests/data/relabel_golden.json`: relabel configs and input
//! label sets, each with what real Prometheus 2.42 made of them as a scrape target — its
//! labels and scrape URL, `"dropped"` (in `droppedTargets`), or `"invalid"` (refused, so in
//! neither list).
//!
//! - `strata_relabels_as_the_golden_table_says` checks strata's target relabelling against it.
//! - `the_golden_table_is_what_prometheus_does` runs Prometheus over the table's cases and
//!   compares. To add a case, append it to the table with `"expected": null` and regenerate:
//!
//!   STRATA_REGENERATE_RELABEL_GOLDEN=1 cargo test --test edge_relabel the_golden_table

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_edge::config::Config;
use strata_edge::target::{self, Populated};
use support::*;

fn table_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/relabel_golden.json")
}

fn table() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(table_path()).unwrap()).unwrap()
}

/// The cases as `scrape_configs`, one job per case (JSON is YAML).
fn scrape_configs(cases: &[Value]) -> String {
    let jobs: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut labels = c["labels"].as_object().unwrap().clone();
            let address = labels.remove("__address__").unwrap();
            json!({
                "job_name": c["name"],
                "scrape_interval": "1h",
                "static_configs": [{ "targets": [address], "labels": labels }],
                "relabel_configs": c["relabel_configs"],
            })
        })
        .collect();
    format!("scrape_configs: {}\n", Value::Array(jobs))
}

#[test]
fn strata_relabels_as_the_golden_table_says() {
    let cases = table();
    let config = Config::parse(&scrape_configs(&cases)).unwrap();
    let mut failures = Vec::new();
    for (case, sc) in cases.iter().zip(&config.scrape_configs) {
        let (t, g) = &target::static_targets(sc)[0];
        let got = match target::populate(sc, t, g) {
            Ok(Populated::Scrape(t)) => {
                let labels: BTreeMap<String, String> = t
                    .series_labels()
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect();
                json!({ "labels": labels, "scrapeUrl": t.url() })
            }
            Ok(Populated::Dropped { .. }) => json!("dropped"),
            Err(_) => json!("invalid"),
        };
        if got != case["expected"] {
            failures.push(format!(
                "{}: strata {got}, Prometheus {}",
                case["name"], case["expected"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_golden_table_is_what_prometheus_does() {
    let mut cases = table();
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus_with(dir.path(), &scrape_configs(&cases)).await;
    // Discovery reaches the scrape manager a few seconds after start (its updates are sent
    // every 5 s); wait until the answer holds targets and stops changing for longer than that.
    let mut answer = Value::Null;
    let mut stable_since = Instant::now();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let now = get_json(
            &format!("{}/api/v1/targets", prom.base()),
            &[("state", "any".to_string())],
        )
        .await["data"]
            .clone();
        if now != answer {
            answer = now;
            stable_since = Instant::now();
        } else if started.elapsed() > Duration::from_secs(8)
            && stable_since.elapsed() > Duration::from_secs(6)
            && ["activeTargets", "droppedTargets"]
                .iter()
                .any(|k| answer[k].as_array().is_some_and(|a| !a.is_empty()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut observed: BTreeMap<String, Value> = BTreeMap::new();
    for t in answer["activeTargets"].as_array().unwrap() {
        observed.insert(
            t["scrapePool"].as_str().unwrap().to_string(),
            json!({ "labels": t["labels"], "scrapeUrl": t["scrapeUrl"] }),
        );
    }
    for t in answer["droppedTargets"].as_array().unwrap() {
        let job = t["discoveredLabels"]["job"].as_str().unwrap().to_string();
        observed.insert(job, json!("dropped"));
    }
    let mut failures = Vec::new();
    for case in &mut cases {
        let name = case["name"].as_str().unwrap().to_string();
        let prometheus = observed.remove(&name).unwrap_or(json!("invalid"));
        if case["expected"] != prometheus {
            failures.push(format!(
                "{name}: table {}, Prometheus {prometheus}",
                case["expected"]
            ));
            case["expected"] = prometheus;
        }
    }
    if std::env::var_os("STRATA_REGENERATE_RELABEL_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&cases).unwrap();
        std::fs::write(table_path(), text + "\n").unwrap();
        eprintln!(
            "rewrote {} ({} cases changed)",
            table_path().display(),
            failures.len()
        );
    } else {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
