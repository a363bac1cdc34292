//! PromQL conformance: every script in `tests/promql/` (Prometheus's own test format, see its
//! README) run against the strata engine, with the pass rate per file printed. Run with
//! `cargo test -p strata-central --test promql_conformance -- --nocapture` to see the table;
//! set `PROMQL_FAILURES=1` to list every failure with its reason.
//!
//! Evals that need native histograms (see `script`) are counted apart. Every other eval must
//! pass unless `promql_known_failures.txt` lists it with a reason, and a listed eval that
//! passes fails the test until its line is deleted, so the list only shrinks.

use std::collections::BTreeMap;
use std::path::Path;

use strata_central::promql::script::{self, Outcome};

/// Files of features current Prometheus keeps behind feature flags; reported apart.
const EXPERIMENTAL: &[&str] = &[
    "duration_expression",
    "extended_vectors",
    "fill-modifier",
    "info",
    "type_and_unit",
];

#[test]
fn promql_test_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/promql exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    let known = known_failures(&dir.join("../promql_known_failures.txt"));
    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    let mut totals = [(0usize, 0usize); 2];
    println!(
        "{:<28} {:>6} {:>6} {:>7}",
        "file", "pass", "evals", "native"
    );
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let results = script::run(&text);
        let native = results
            .iter()
            .filter(|r| r.outcome == Outcome::Native)
            .count();
        let counted: Vec<_> = results
            .iter()
            .filter(|r| r.outcome != Outcome::Native)
            .collect();
        let passed = counted
            .iter()
            .filter(|r| r.outcome == Outcome::Pass)
            .count();
        println!("{name:<28} {passed:>6} {:>6} {native:>7}", counted.len());
        let list_all = std::env::var_os("PROMQL_FAILURES").is_some();
        for r in &counted {
            let key = format!("{name}.test:{}", r.line);
            match (&r.outcome, known.contains_key(&key)) {
                (Outcome::Fail(why), listed) => {
                    if list_all {
                        println!("  {key} {} -- {why}", r.query);
                    }
                    if !listed {
                        unexpected.push(format!("{key} {} -- {why}", r.query));
                    }
                }
                (_, true) => fixed.push(key),
                _ => {}
            }
        }
        let t = &mut totals[usize::from(EXPERIMENTAL.contains(&name.as_str()))];
        t.0 += passed;
        t.1 += counted.len();
    }
    for (label, (p, n)) in ["stable", "experimental"].iter().zip(totals) {
        println!(
            "{label}: {p} of {n} evals pass ({:.1}%)",
            100.0 * p as f64 / n.max(1) as f64
        );
    }
    assert!(
        unexpected.is_empty(),
        "evals failing that promql_known_failures.txt does not list:\n{}",
        unexpected.join("\n")
    );
    assert!(
        fixed.is_empty(),
        "listed in promql_known_failures.txt but passing now; delete their lines: {fixed:?}"
    );
}

/// `file.test:line` → reason, from the known-failures list.
fn known_failures(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).expect("promql_known_failures.txt exists");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, reason) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("known failure without a reason: {l:?}"));
            assert!(
                !reason.trim().is_empty(),
                "known failure without a reason: {l:?}"
            );
            (key.to_string(), reason.to_string())
        })
        .collect()
}
