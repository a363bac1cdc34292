//! The planner end to end, on a fixed seeded fleet: `strata sim backfill` writes the same
//! history into strata central, real Prometheus 2.42 and real VictoriaMetrics; `strata planner
//! report` gives the same report from each, and the central's table and JSON match the golden
//! files in `tests/golden/` (set `STRATA_UPDATE_GOLDEN=1` to rewrite them after a deliberate
//! change, and review the diff).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::path::Path;
use std::process::Command;

use support::{start_central, start_prometheus, start_victoria_metrics, until_ok};

const AT: &str = "2026-11-01T00:00:00Z";
const FLEET: [&str; 10] = [
    "--seed",
    "7",
    "--regions",
    "1",
    "--cells-per-region",
    "3",
    "--clusters-per-cell",
    "5",
    "--anchor",
    AT,
];

fn strata(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "strata {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn report(base: &str, format: &str) -> String {
    strata(&[
        "planner", "report", "--source", base, "--at", AT, "--format", format,
    ])
    .replace(base, "SOURCE")
}

/// Compares with a golden file, or rewrites it when asked to.
fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("STRATA_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with STRATA_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        want == got,
        "{name} differs from the golden file; if the change is deliberate, run with STRATA_UPDATE_GOLDEN=1 and review the diff\n--- got ---\n{got}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_history_gives_the_same_report_from_central_prometheus_and_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(dir.path(), "central", support::free_port(), &[]).await;
    let prometheus = start_prometheus(dir.path()).await;
    let vm = start_victoria_metrics(dir.path()).await;
    let targets: Vec<String> = [&central, &prometheus, &vm]
        .iter()
        .map(|p| format!("{}/api/v1/write", p.base()))
        .collect();
    let mut args = vec![
        "sim",
        "backfill",
        "--days",
        "35",
        "--step",
        "1h",
        "--end",
        AT,
        "--jobs",
        "kube-state-metrics,ipam,aws-cni,hypershift,etcd,apiserver,hosted-apiserver,hosted-etcd",
    ];
    args.extend(FLEET);
    for t in &targets {
        args.extend(["--to", t.as_str()]);
    }
    strata(&args);

    let table = report(&central.base(), "table");
    let json = report(&central.base(), "json");
    assert!(table.contains("cell resources"), "{table}");
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["schema"], "strata.planner.report/v1");
    assert_eq!(parsed["summary"]["cells"], 3, "{json}");
    assert_eq!(parsed["summary"]["clusters"], 15, "{json}");
    golden("planner-report.txt", &table);
    golden("planner-report.json", &json);

    // What the report says, without what it cost to read (stores answer with different
    // numbers of points for the same queries).
    let decisions = |json: &str| {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        v.as_object_mut().unwrap().remove("cost");
        serde_json::to_string_pretty(&v).unwrap()
    };
    let json = decisions(&json);
    // VictoriaMetrics makes what it took searchable when it next flushes its buffers, seconds
    // later on a busy machine: the reports are compared until they agree, for a minute.
    for (name, peer) in [("Prometheus", &prometheus), ("VictoriaMetrics", &vm)] {
        let (json, decisions) = (&json, &decisions);
        until_ok(std::time::Duration::from_secs(60), || async move {
            let other = decisions(&report(&peer.base(), "json"));
            let differences: Vec<String> = json
                .lines()
                .zip(other.lines())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| format!("line {}: central {a:?}, {name} {b:?}", i + 1))
                .collect();
            if differences.is_empty() && json.lines().count() == other.lines().count() {
                Ok(())
            } else {
                Err(format!(
                    "{name} gives another report than central from the same history:\n{}",
                    differences.join("\n")
                ))
            }
        })
        .await;
    }
    strata(&[
        "planner",
        "report",
        "--source",
        &central.base(),
        "--at",
        AT,
        "--format",
        "markdown",
    ]);
}
