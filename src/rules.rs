//! `strata rules`: rule files in Prometheus's format.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use strata_central::rules;

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Check rule files as `promtool check rules` does: YAML, groups, rules, PromQL
    /// expressions, label and annotation names and templates, and duplicate rules.
    #[command(
        after_help = "Example:\n  strata rules check deploy/rules/*.yml\n\nEach file gets `SUCCESS: N rules found` or `FAILED:` with one line per error naming the file,\ngroup, rule and reason. The exit code is 1 when any file has an error (or, with --lint-fatal,\na duplicate rule)."
    )]
    Check(CheckArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lint {
    /// Report rules with the same name and labels in one file.
    DuplicateRules,
    None,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Rule files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Lint checks to run.
    #[arg(long, value_enum, default_value_t = Lint::DuplicateRules)]
    lint: Lint,
    /// Fail when a lint check finds something.
    #[arg(long)]
    lint_fatal: bool,
}

pub fn run(cmd: RulesCommand) -> anyhow::Result<()> {
    let RulesCommand::Check(args) = cmd;
    for file in &args.files {
        if !file.exists() {
            bail!(
                "path '{}' does not exist; give existing rule files",
                file.display()
            );
        }
        if file.is_dir() {
            bail!(
                "'{}' is a directory; give rule files, e.g. {}/*.yml",
                file.display(),
                file.display()
            );
        }
    }
    let (mut failed, mut linted) = (0, 0);
    for file in &args.files {
        println!("Checking {}", file.display());
        let checked = rules::check_file(file);
        let duplicates = match args.lint {
            Lint::DuplicateRules => checked.duplicates.as_slice(),
            Lint::None => &[],
        };
        if checked.errors.is_empty() && duplicates.is_empty() {
            println!("  SUCCESS: {} rules found\n", checked.rules);
            continue;
        }
        println!();
        eprintln!("  FAILED:");
        for e in &checked.errors {
            eprintln!("{e}");
        }
        if !checked.errors.is_empty() {
            failed += 1;
            continue;
        }
        linted += 1;
        eprintln!("lint error {} duplicate rule(s) found.", duplicates.len());
        for d in duplicates {
            eprintln!("Metric: {}\nLabel(s):", d.name);
            for (k, v) in &d.labels {
                eprintln!("\t{k}: {v}");
            }
        }
        eprintln!("Might cause inconsistency while recording expressions");
    }
    if failed > 0 {
        bail!(
            "{failed} of {} rule files have errors (listed above); fix them and check again",
            args.files.len()
        );
    }
    if args.lint_fatal && linted > 0 {
        bail!("{linted} rule files have duplicate rules (--lint-fatal)");
    }
    Ok(())
}
