//! The report as a terminal table, Markdown, JSON or a self-contained HTML page with charts.
//!
//! The table and Markdown list the decisions most urgent first, then every cell resource
//! sorted by how soon its p90 forecast reaches the headroom line, then what needs a look and
//! the clusters whose tier should change or that carry a flag.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::chart::{self, Links};
use crate::plan::{
    Decision, Forecasted, Report, ResourceReport, SplitProposal, Urgency, human, label,
};

/// Terminal colours, only when writing to a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn days(d: Option<f64>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{d:.1}"))
}

fn pct(u: Option<f64>) -> String {
    u.map_or_else(|| "-".into(), |u| format!("{:.1}%", u * 100.0))
}

/// Resources sorted by the p10 time to the headroom line, those without one last.
fn by_urgency(report: &Report) -> Vec<(&str, &str, &ResourceReport)> {
    let mut rows: Vec<(&str, &str, &ResourceReport)> = report
        .cells
        .iter()
        .flat_map(|c| {
            c.resources
                .iter()
                .map(move |r| (c.region.as_str(), c.cell.as_str(), r))
        })
        .collect();
    let key = |r: &ResourceReport| {
        (
            r.headroom
                .as_ref()
                .and_then(|h| h.p10_days)
                .unwrap_or(f64::INFINITY),
            -r.utilisation.unwrap_or(0.0),
        )
    };
    rows.sort_by(|a, b| {
        key(a.2)
            .partial_cmp(&key(b.2))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then((a.1, &a.2.resource, &a.2.pool).cmp(&(b.1, &b.2.resource, &b.2.pool)))
    });
    rows
}

fn resource_cells(region: &str, cell: &str, r: &ResourceReport) -> Vec<String> {
    let h = r.headroom.as_ref();
    let e = r.exhaustion.as_ref();
    vec![
        region.to_string(),
        cell.to_string(),
        label(&r.resource, r.pool.as_deref()),
        format!(
            "{} / {}",
            human(r.current),
            r.limit.map_or_else(|| "-".into(), human)
        ),
        pct(r.utilisation),
        r.growth_per_day.map_or_else(|| "-".into(), human),
        r.trend.unwrap_or("-").to_string(),
        format!(
            "{} / {} / {}",
            days(h.and_then(|h| h.p10_days)),
            days(h.and_then(|h| h.p50_days)),
            days(h.and_then(|h| h.p90_days))
        ),
        days(e.and_then(|e| e.p50_days)),
        match (&r.change_point, r.status) {
            (_, crate::plan::ResourceStatus::TooLittleHistory) => "too little history".into(),
            (_, crate::plan::ResourceStatus::NoLimit) => "no limit".into(),
            (Some(c), _) => format!("change {}", &c[..10]),
            (None, _) => String::new(),
        },
    ]
}

const RESOURCE_HEADER: [&str; 10] = [
    "REGION",
    "CELL",
    "RESOURCE",
    "PEAK / LIMIT",
    "USED",
    "GROWTH/DAY",
    "TREND",
    "HEADROOM p10/p50/p90 d",
    "LIMIT p50 d",
    "NOTE",
];

fn urgency_word(d: &Decision) -> &'static str {
    match d.urgency {
        Urgency::ActNow => "ACT NOW",
        Urgency::Planned => "planned",
    }
}

fn headline(report: &Report) -> String {
    let s = &report.summary;
    format!(
        "{} cells, {} cell resources, {} clusters · headroom {:.0}% · lead time {} days · {} act now, {} planned ({} splits, {} promotions, {} demotions) · {} too little history · {} queries, {} samples",
        s.cells,
        s.cell_resources,
        s.clusters,
        report.settings.headroom * 100.0,
        report.settings.lead_time_days,
        s.act_now,
        s.planned,
        s.splits,
        s.promotions,
        s.demotions,
        s.too_little_history,
        report.cost.queries,
        report.cost.samples,
    )
}

/// Aligned columns; the first row is the header, `paint_row(i)` colours data row `i`.
fn columns(
    rows: &[Vec<String>],
    style: Style,
    paint_row: impl Fn(usize) -> Option<&'static str>,
) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let line = line.join("  ").trim_end().to_string();
        let line = if n == 0 {
            style.paint("1", &line)
        } else {
            match paint_row(n - 1) {
                Some(code) => style.paint(code, &line),
                None => line,
            }
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The terminal table.
pub fn table(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        style.paint(
            "1",
            &format!(
                "strata planner report at {} from {}",
                report.at, report.source
            )
        )
    );
    let _ = writeln!(out, "{}\n", headline(report));
    if report.decisions.is_empty() {
        let _ = writeln!(
            out,
            "No decisions: every cell keeps its headroom within the horizon and every cluster fits its tier.\n"
        );
    } else {
        let mut rows = vec![vec![
            "URGENCY".to_string(),
            "ACT BY".into(),
            "DECISION".into(),
        ]];
        for d in &report.decisions {
            rows.push(vec![
                urgency_word(d).into(),
                d.act_by[..10].to_string(),
                d.summary.clone(),
            ]);
        }
        out += &columns(&rows, style, |n| match report.decisions[n].urgency {
            Urgency::ActNow => Some("31"),
            Urgency::Planned => None,
        });
        for d in report.decisions.iter().filter(|d| d.split.is_some()) {
            if let Some(s) = &d.split {
                let _ = writeln!(
                    out,
                    "\nproposed split of {} into {} parts ({} at {}):",
                    d.cell,
                    s.parts.len(),
                    if s.keeps_headroom {
                        "every part keeps its headroom"
                    } else {
                        "NOT ENOUGH: some part stays over the headroom line even at 8 parts"
                    },
                    &s.evaluated_at[..10]
                );
                for (i, p) in s.parts.iter().enumerate() {
                    let worst = p.highest();
                    let _ = writeln!(
                        out,
                        "  {} {} clusters{}: {}",
                        if i == 0 { "stays:" } else { "moves:" },
                        p.clusters.len(),
                        worst.map_or(String::new(), |(r, u)| format!(
                            " (highest: {r} {:.0}%)",
                            u * 100.0
                        )),
                        p.clusters.join(", ")
                    );
                }
            }
        }
        out.push('\n');
    }
    let mut rows = vec![
        RESOURCE_HEADER
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    let resources = by_urgency(report);
    let lead = report.settings.lead_time_days;
    rows.extend(
        resources
            .iter()
            .map(|(region, cell, r)| resource_cells(region, cell, r)),
    );
    out += &columns(&rows, style, |n| {
        let p10 = resources[n].2.headroom.as_ref().and_then(|h| h.p10_days)?;
        if p10 <= lead {
            Some("31")
        } else if p10 <= 2.0 * lead + 30.0 {
            Some("33")
        } else {
            None
        }
    });
    notes(
        &mut out,
        report,
        ["\nneeds a look:", "\nclusters flagged:"],
        "",
        |a, b, c| format!("  {a} {b}: {c}"),
    );
    out
}

/// The resources without a forecast and the flagged clusters, each under its heading, one
/// line per item from `line(cell, what, message)`.
fn notes(
    out: &mut String,
    report: &Report,
    headings: [&str; 2],
    end: &str,
    line: impl Fn(&str, &str, &str) -> String,
) {
    let attention = report
        .attention
        .iter()
        .map(|a| line(&a.cell, &a.resource, &a.message));
    let flagged = report
        .clusters
        .iter()
        .filter(|c| !c.flags.is_empty())
        .map(|c| line(&c.cell, &c.cluster, &c.flags.join("; ")));
    for (heading, lines) in headings
        .into_iter()
        .zip([attention.collect::<Vec<_>>(), flagged.collect::<Vec<_>>()])
    {
        if !lines.is_empty() {
            let _ = writeln!(out, "{heading}");
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            out.push_str(end);
        }
    }
}

const NO_DECISIONS: &str =
    "None: every cell keeps its headroom within the horizon and every cluster fits its tier.";

fn split_verdict(s: &SplitProposal) -> &'static str {
    if s.keeps_headroom {
        "every part keeps its headroom"
    } else {
        "some part stays over the headroom line even at 8 parts"
    }
}

fn escape_md(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The report in GitHub-flavoured Markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Capacity plan at {}\n", report.at);
    let _ = writeln!(out, "Source: `{}`. {}.\n", report.source, headline(report));
    let _ = writeln!(out, "## Decisions\n");
    if report.decisions.is_empty() {
        let _ = writeln!(out, "{NO_DECISIONS}\n");
    } else {
        let _ = writeln!(
            out,
            "| urgency | act by | decision | evidence |\n|---|---|---|---|"
        );
        for d in &report.decisions {
            let evidence: Vec<String> = d
                .evidence
                .iter()
                .map(|e| {
                    format!(
                        "`{}`: {} of {} ({:.1}%)",
                        escape_md(&e.query),
                        human(e.current),
                        human(e.limit),
                        e.utilisation * 100.0
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                urgency_word(d),
                &d.act_by[..10],
                escape_md(&d.summary),
                evidence.join("<br>")
            );
        }
        for d in &report.decisions {
            if let Some(s) = &d.split {
                let _ = writeln!(out, "\n### Proposed split of {}\n", d.cell);
                let _ = writeln!(
                    out,
                    "{} parts, forecast for {}: {}.\n",
                    s.parts.len(),
                    &s.evaluated_at[..10],
                    split_verdict(s)
                );
                let _ = writeln!(
                    out,
                    "| part | clusters | highest utilisation |\n|---|---|---|"
                );
                for (i, p) in s.parts.iter().enumerate() {
                    let worst = p.highest();
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} |",
                        if i == 0 {
                            "stays".to_string()
                        } else {
                            format!("new cell {i}")
                        },
                        p.clusters.join(", "),
                        worst.map_or(String::new(), |(r, u)| format!("{r} {:.1}%", u * 100.0))
                    );
                }
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Cell resources\n");
    let _ = writeln!(
        out,
        "| {} |\n|{}",
        RESOURCE_HEADER.join(" | ").to_lowercase(),
        "---|".repeat(RESOURCE_HEADER.len())
    );
    for (region, cell, r) in by_urgency(report) {
        let cells: Vec<String> = resource_cells(region, cell, r)
            .iter()
            .map(|c| escape_md(c))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    notes(
        &mut out,
        report,
        ["\n## Needs a look\n", "\n## Clusters flagged\n"],
        "",
        |a, b, c| format!("- **{a}** {b}: {c}"),
    );
    out
}

/// The report as pretty JSON (schema `strata.planner.report/v1`).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Charts drawn into an HTML page, at most: a fleet-wide report stays a page a browser opens.
const MAX_HTML_CHARTS: usize = 50;

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}\
th{background:#f4f4f4}tr.act_now td:first-child{color:#b00;font-weight:bold}\
code{font-size:12px;background:#f6f6f6}figure{margin:1em 0}figcaption{font-size:13px;color:#555}";

/// The chart of `f` inside the page, with links to the served files when there are any.
fn html_chart(out: &mut String, report: &Report, f: &Forecasted, links: Links) {
    let s = &f.series;
    let svg = chart::draw(
        f,
        report.at_ms,
        report.settings.headroom,
        report.settings.horizon_days,
        chart::Format::Svg,
    )
    .map(|b| String::from_utf8_lossy(&b).into_owned());
    let _ = writeln!(out, "<figure>");
    match svg {
        Ok(svg) => out.push_str(&svg),
        Err(e) => {
            let _ = write!(out, "<p>{}</p>", escape_html(&e.to_string()));
        }
    }
    let name = escape_html(&format!(
        "{} {}",
        s.cell,
        label(&s.resource, s.pool.as_deref())
    ));
    if links == Links::Served {
        let (path, query) = chart::path(f);
        let _ = writeln!(
            out,
            "<figcaption>{name}: <a href=\"{path}.svg{query}\">SVG</a> · <a href=\"{path}.png{query}\">PNG</a></figcaption>",
            path = escape_html(&path),
            query = escape_html(&query)
        );
    } else {
        let _ = writeln!(out, "<figcaption>{name}</figcaption>");
    }
    let _ = writeln!(out, "</figure>");
}

/// The report as one self-contained HTML page: the decisions with their evidence and charts,
/// every cell resource, and what needs a look.
pub fn html(report: &Report, forecasts: &[Forecasted], links: Links) -> String {
    let mut out = String::new();
    let title = format!("Capacity plan at {}", report.at);
    let _ = writeln!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n<p>Source: <code>{}</code>. {}.</p>",
        escape_html(&report.source),
        escape_html(&headline(report)),
        t = escape_html(&title),
    );
    // Forecasts by cell and resource label (`pod_ips (pool-a)`), as decisions and rows name them.
    let by_label: BTreeMap<(&str, String), &Forecasted> = forecasts
        .iter()
        .map(|f| {
            let s = &f.series;
            ((s.cell.as_str(), label(&s.resource, s.pool.as_deref())), f)
        })
        .collect();
    let mut charted: BTreeSet<(&str, String)> = BTreeSet::new();
    let _ = writeln!(out, "<h2>Decisions</h2>");
    if report.decisions.is_empty() {
        let _ = writeln!(out, "<p>{NO_DECISIONS}</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><tr><th>urgency</th><th>act by</th><th>decision</th><th>evidence</th></tr>"
        );
        for d in &report.decisions {
            let evidence: Vec<String> = d
                .evidence
                .iter()
                .map(|e| {
                    format!(
                        "{}<br><code>{}</code>",
                        escape_html(&e.describe()),
                        escape_html(&e.query)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<tr id=\"{}\" class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&d.anchor()),
                if d.urgency == Urgency::ActNow {
                    "act_now"
                } else {
                    "planned"
                },
                urgency_word(d),
                escape_html(&d.act_by[..10]),
                escape_html(&d.summary),
                evidence.join("<br>")
            );
        }
        let _ = writeln!(out, "</table>");
        for d in report.decisions.iter().filter(|d| d.split.is_some()) {
            let _ = writeln!(out, "<h3>Split {}</h3>", escape_html(&d.cell));
            let binding = report
                .cells
                .iter()
                .find(|c| c.cell == d.cell)
                .and_then(|c| c.binding.as_deref());
            if let Some(key) = binding.map(|b| (d.cell.as_str(), b.to_string()))
                && let Some(f) = by_label.get(&key)
                && charted.len() < MAX_HTML_CHARTS
            {
                html_chart(&mut out, report, f, links);
                charted.insert(key);
            }
            if let Some(s) = &d.split {
                let _ = writeln!(
                    out,
                    "<p>{} parts, forecast for {}: {}.</p>\n<table><tr><th>part</th><th>clusters</th><th>highest utilisation</th></tr>",
                    s.parts.len(),
                    escape_html(&s.evaluated_at[..10]),
                    split_verdict(s)
                );
                for (i, p) in s.parts.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        if i == 0 {
                            "stays".to_string()
                        } else {
                            format!("new cell {i}")
                        },
                        escape_html(&p.clusters.join(", ")),
                        p.highest()
                            .map_or(String::new(), |(r, u)| escape_html(&format!(
                                "{r} {:.1}%",
                                u * 100.0
                            )))
                    );
                }
                let _ = writeln!(out, "</table>");
            }
        }
    }
    let _ = writeln!(out, "<h2>Cell resources</h2>\n<table><tr>");
    for h in RESOURCE_HEADER {
        let _ = write!(out, "<th>{}</th>", escape_html(&h.to_lowercase()));
    }
    let _ = writeln!(out, "</tr>");
    let rows = by_urgency(report);
    for (region, cell, r) in &rows {
        let _ = write!(out, "<tr>");
        for c in resource_cells(region, cell, r) {
            let _ = write!(out, "<td>{}</td>", escape_html(&c));
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
    let soonest: Vec<&Forecasted> = rows
        .iter()
        .filter(|(_, _, r)| r.headroom.as_ref().is_some_and(|h| h.p10_days.is_some()))
        .map(|(_, cell, r)| (*cell, label(&r.resource, r.pool.as_deref())))
        .filter(|key| !charted.contains(key))
        .filter_map(|key| by_label.get(&key).copied())
        .take(MAX_HTML_CHARTS.saturating_sub(charted.len()))
        .collect();
    if !soonest.is_empty() {
        let _ = writeln!(out, "<h2>Soonest to reach the headroom line</h2>");
        for f in soonest {
            html_chart(&mut out, report, f, links);
        }
    }
    notes(
        &mut out,
        report,
        [
            "<h2>Needs a look</h2>\n<ul>",
            "<h2>Clusters flagged</h2>\n<ul>",
        ],
        "</ul>\n",
        |a, b, c| {
            format!(
                "<li><b>{}</b> {}: {}</li>",
                escape_html(a),
                escape_html(b),
                escape_html(c)
            )
        },
    );
    let _ = writeln!(out, "</body></html>");
    out
}
