//! `strata rules check` against real `promtool check rules` (Prometheus 2.42): every file in
//! `tests/rules/` gets the same verdict from both, and each error names the file, group and
//! rule. `tests/rules/expected.tsv` records promtool's verdict and a distinctive part of its
//! message per file; `EXPECTED.md` its verbatim output.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (file, promtool's exit code, part of its message).
fn cases() -> Vec<(String, i32, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/expected.tsv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let file = f.next().unwrap().to_string();
            let code = f.next().unwrap().parse().unwrap();
            (file, code, f.next().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn every_file_gets_the_verdict_promtool_gives() {
    let promtool = support::peer_binary("promtool", "prometheus");
    let strata = env!("CARGO_BIN_EXE_strata");
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (file, recorded, _) in &cases {
        let theirs = run(&promtool, &["check", "rules", file]);
        assert_eq!(
            theirs.status.code(),
            Some(*recorded),
            "promtool on {file}: {}",
            text(&theirs)
        );
        let ours = run(strata, &["rules", "check", file]);
        let out = text(&ours);
        assert_eq!(
            ours.status.code(),
            Some(*recorded),
            "strata on {file}:\n{out}"
        );
        if *recorded != 0 {
            assert!(
                out.contains(file.as_str()),
                "{file}: the error names the file:\n{out}"
            );
        }
    }
}

/// Where strata words an error as rulefmt does, the reason is promtool's.
#[test]
fn reasons_are_worded_as_promtool_words_them() {
    let strata = env!("CARGO_BIN_EXE_strata");
    for (file, _, message) in cases() {
        let worded_alike = [
            "must be set",
            "invalid",
            "Groupname",
            "is repeated",
            "template:",
            "not a valid duration",
            "duplicate rule(s) found",
        ];
        if !worded_alike.iter().any(|w| message.contains(w)) {
            continue;
        }
        // promtool prefixes positions (`5:17:`) that strata does not know; compare from the group.
        let mut reason = message
            .find("group ")
            .map_or(message.as_str(), |i| &message[i..]);
        while let Some((position, rest)) = reason.split_once(": ")
            && position.split(':').all(|n| n.parse::<u32>().is_ok())
        {
            reason = rest;
        }
        let out = text(&run(strata, &["rules", "check", &file]));
        assert!(out.contains(reason), "{file}: want {reason:?} in\n{out}");
    }
}

#[test]
fn several_files_are_checked_in_order_and_any_error_fails() {
    let strata = env!("CARGO_BIN_EXE_strata");
    let o = run(
        strata,
        &[
            "rules",
            "check",
            "good-recording.yml",
            "bad-missing-expr.yml",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let (a, b) = (
        out.find("Checking good-recording.yml").unwrap(),
        out.find("Checking bad-missing-expr.yml").unwrap(),
    );
    assert!(a < b && out.contains("SUCCESS: 1 rules found"), "{out}");
    let o = run(
        strata,
        &[
            "rules",
            "check",
            "--lint",
            "none",
            "good-duplicate-rules.yml",
        ],
    );
    assert!(text(&o).contains("SUCCESS: 2 rules found"), "{}", text(&o));
    let o = run(
        strata,
        &["rules", "check", "--lint-fatal", "good-duplicate-rules.yml"],
    );
    assert_ne!(o.status.code(), Some(0));
}
