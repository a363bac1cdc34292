//! The alert generator compliance cases of the Prometheus community (prometheus/compliance
//! `alert_generator`: PendingAndFiringAndResolved, PendingAndResolved_AlwaysInactive,
//! ZeroFor_SmallFor and NewAlerts_OrderCheck) against strata central, with its alerts going
//! to an Alertmanager API recorder (as the suite's own server receives them) and to a real
//! Alertmanager 0.25 from Debian.
//!
//! Time runs 7.5 times faster than in the suite so the cases take minutes, not an hour: a
//! sample every 2 s (15 s), groups every 4 s (30 s), `for` and the resend delay (1 m → 8 s),
//! resolved alerts re-sent for 120 s (15 m) and a 40 s lookback (5 m). (Faster still leaves
//! a pending alert a second short of its `for`: a stall of a loaded machine would fire it.) The suite's rules,
//! samples, labels, annotations and templates are kept as they are. What is checked, with
//! one group interval and 1 s of slack for timing:
//! - `/api/v1/alerts` and the `ALERTS` series follow pending → firing → inactive at the
//!   samples the suite names;
//! - every alert sent is expected: firing ones from when they fire (`startsAt`), re-sent
//!   every resend delay with `endsAt` four resend delays ahead, with the annotations of the
//!   moment; resolved ones (`endsAt` when they resolved) until the resolved retention ends
//!   or the alert comes back; alerts that never fire are never sent;
//! - the real Alertmanager took them: its webhook receiver saw each firing and resolved
//!   phase with the same labels, annotations, `startsAt` and `endsAt`.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use strata_wire::{Label, Sample, TimeSeries, WriteRequest};
use support::{get_json, start_alerting};

/// Real seconds per sample (15 s in the suite); every duration is scaled alike.
const STEP: f64 = 2.0;
const INTERVAL: f64 = 4.0;
const RESEND: f64 = 8.0;
const RETENTION: f64 = 120.0;
/// Timing slack on top of one group interval.
const SLACK: f64 = 1.0;
/// Slack for sends, which are timed when the recorder receives them: on top of the
/// evaluation's own delay, the write of the sample and the delivery of the alert.
const SEND_SLACK: f64 = 2.0;
/// Samples written (the last case's resolved retention ends before).
const STEPS: usize = 200;

const RULES: &str = r#"groups:
- name: PendingAndFiringAndResolved
  interval: 4s
  rules:
  - alert: PendingAndFiringAndResolved_SimpleAlert
    expr: '{__name__="alert_generator_test_suite", alertname="PendingAndFiringAndResolved_SimpleAlert", rulegroup="PendingAndFiringAndResolved"} > 10'
    for: 48s
    labels: {foo: bar, rulegroup: PendingAndFiringAndResolved}
    annotations:
      description: SimpleAlert is firing
      summary: 'The value is {{$value}} {{.Value}}'
- name: PendingAndResolved_AlwaysInactive
  interval: 4s
  rules:
  - alert: PendingAndResolved_AlwaysInactive_PendingAlert
    expr: '{__name__="alert_generator_test_suite", alertname="PendingAndResolved_AlwaysInactive_PendingAlert", rulegroup="PendingAndResolved_AlwaysInactive"} > 10'
    for: 24s
    labels: {foo: bar, rulegroup: PendingAndResolved_AlwaysInactive}
    annotations: {description: SimpleAlert is firing}
  - alert: PendingAndResolved_AlwaysInactive_InactiveAlert
    expr: '{__name__="alert_generator_test_suite", alertname="PendingAndResolved_AlwaysInactive_InactiveAlert", rulegroup="PendingAndResolved_AlwaysInactive"} > 99'
    for: 24s
    labels: {ba_dum: tss, rulegroup: PendingAndResolved_AlwaysInactive}
    annotations: {description: This should never fire}
- name: ZeroFor_SmallFor
  interval: 4s
  rules:
  - alert: ZeroFor_SmallFor_ZeroFor
    expr: '{__name__="alert_generator_test_suite", alertname="ZeroFor_SmallFor_ZeroFor", rulegroup="ZeroFor_SmallFor"} > 10'
    labels: {foo: bar, rulegroup: ZeroFor_SmallFor}
    annotations:
      description: This should immediately fire
      template_test: '{{humanize 1048576}} {{humanize1024 1048576}} {{humanizeDuration 135.3563}} {{humanizePercentage 0.959}} {{humanizeTimestamp 1643114203}}'
      template_query_test: '{{ define "testtemplate" }}Args are: {{.arg0}} {{.arg1}} {{.arg2}}. {{ with query "alert_generator_test_suite{rulegroup=''ZeroFor_SmallFor'',for=''template''}" }}first_id:{{ . | sortByLabel "id" | first | label "id"}},{{ range $v := sortByLabel "id" .}}{{ . | label "id" }}:{{ . | value }},{{end}}{{end}}{{ end }}{{ template "testtemplate" (args "foo" "bar" 99) }}'
  - alert: ZeroFor_SmallFor_SmallFor
    expr: '{__name__="alert_generator_test_suite", alertname="ZeroFor_SmallFor_SmallFor", rulegroup="ZeroFor_SmallFor"} > 13'
    for: 2s
    labels: {ba_dum: tss, rulegroup: ZeroFor_SmallFor}
    annotations:
      description: This should fire after an interval
      template_test: '{{title "this part"}} {{toUpper "is testing"}} {{toLower "THE STRINGS"}}. {{ stripPort "[::1]:6006"}} {{ stripPort "127.0.0.1:4004"}}. {{parseDuration "2h10m15s"}}. {{if match "[0-9]+" "1234"}}{{reReplaceAll "r.*d" "replaced" "rpld text"}}{{end}}. {{if match "[0-9]+$" "1234a"}}WRONG{{end}}.'
- name: NewAlerts_OrderCheck
  interval: 4s
  rules:
  - alert: NewAlerts_OrderCheck_Rule1
    expr: '{__name__="alert_generator_test_suite", alertname="NewAlerts_OrderCheck_Rule1", rulegroup="NewAlerts_OrderCheck"} > 10'
    for: 24s
    labels: {foo: bar, rulegroup: NewAlerts_OrderCheck}
    annotations: {description: This should produce more alerts later}
  - alert: NewAlerts_OrderCheck_Rule2
    expr: '(ALERTS{alertstate="firing", alertname="NewAlerts_OrderCheck_Rule1", foo="bar", rulegroup="NewAlerts_OrderCheck", variant="one"} + ignoring(variant) ALERTS{alertstate="firing", alertname="NewAlerts_OrderCheck_Rule1", foo="bar", rulegroup="NewAlerts_OrderCheck", variant="two"}) == 2'
    labels: {foo: baz, ba_dum: tss, rulegroup: NewAlerts_OrderCheck}
    annotations: {description: 'Based on ALERTS. Old alertname was {{$labels.alertname}}. foo was {{.Labels.foo}}.'}
"#;

/// The suite's sample notation: `V` is a value, `AxB` is B more samples each adding A.
fn samples(spec: &str) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for part in spec.split(',') {
        match part.split_once('x') {
            Some((add, times)) => {
                let add: f64 = add.parse().unwrap();
                for _ in 0..times.parse::<usize>().unwrap() {
                    out.push(out.last().unwrap() + add);
                }
            }
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// The series the cases write: labels and values by step (the last value holds after).
fn series() -> Vec<(Vec<Label>, Vec<f64>)> {
    let source = |alertname: &str, group: &str, extra: &[(&str, &str)], spec: &str| {
        let mut labels = vec![
            Label::new("__name__", "alert_generator_test_suite"),
            Label::new("alertname", alertname),
            Label::new("rulegroup", group),
        ];
        labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        (labels, samples(spec))
    };
    let pfr = "3,5,0x2,9,0x3,11,0x12,15,0x11,0x20,19,0x15,9,0x19,15,0x24,0x20,8,0x15";
    let inactive = "3,5,0x2,9,0x3,11,0x10,9";
    let zero_for = "3,5,0x2,9,0x3,15,0x12,9,0x71,11,0x12,9";
    let mut out = vec![
        source(
            "PendingAndFiringAndResolved_SimpleAlert",
            "PendingAndFiringAndResolved",
            &[],
            pfr,
        ),
        source(
            "PendingAndResolved_AlwaysInactive_PendingAlert",
            "PendingAndResolved_AlwaysInactive",
            &[],
            inactive,
        ),
        source(
            "PendingAndResolved_AlwaysInactive_InactiveAlert",
            "PendingAndResolved_AlwaysInactive",
            &[],
            inactive,
        ),
        source(
            "ZeroFor_SmallFor_ZeroFor",
            "ZeroFor_SmallFor",
            &[],
            zero_for,
        ),
        source(
            "ZeroFor_SmallFor_SmallFor",
            "ZeroFor_SmallFor",
            &[],
            zero_for,
        ),
        source(
            "NewAlerts_OrderCheck_Rule1",
            "NewAlerts_OrderCheck",
            &[("variant", "one")],
            "1,0x7,11,0x64,9,0x20",
        ),
        source(
            "NewAlerts_OrderCheck_Rule1",
            "NewAlerts_OrderCheck",
            &[("variant", "two")],
            "1,0x31,11,0x32,9,0x20",
        ),
    ];
    for i in 1..=3 {
        let mut labels = vec![
            Label::new("__name__", "alert_generator_test_suite"),
            Label::new("for", "template"),
            Label::new("id", format!("10{i}")),
            Label::new("rulegroup", "ZeroFor_SmallFor"),
        ];
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        out.push((labels, samples(&format!("{i},0x27,{},0x10", 2 * i))));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inactive,
    Pending,
    Firing,
}

/// What one alert must do: its labels, its states from each time on (seconds after the first
/// sample), and its annotations from each time on.
struct Expected {
    labels: BTreeMap<String, String>,
    states: Vec<(f64, State)>,
    annotations: Vec<(f64, BTreeMap<String, String>)>,
}

impl Expected {
    fn state(&self, t: f64) -> State {
        self.states
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or(State::Inactive, |s| s.1)
    }

    fn annotations(&self, t: f64) -> &BTreeMap<String, String> {
        &self
            .annotations
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .unwrap_or(&self.annotations[0])
            .1
    }
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn at(step: usize) -> f64 {
    step as f64 * STEP
}

fn expected() -> Vec<Expected> {
    use State::*;
    let summary = |v: &str| {
        kv(&[
            ("description", "SimpleAlert is firing"),
            ("summary", &format!("The value is {v} {v}")),
        ])
    };
    let zero_for = |ids: &str| {
        kv(&[
            ("description", "This should immediately fire"),
            (
                "template_test",
                "1.049M 1Mi 2m 15s 95.9% 2022-01-25 12:36:43 +0000 UTC",
            ),
            (
                "template_query_test",
                &format!("Args are: foo bar 99. first_id:101,{ids}"),
            ),
        ])
    };
    let rule1 = |variant: &str| {
        kv(&[
            ("alertname", "NewAlerts_OrderCheck_Rule1"),
            ("foo", "bar"),
            ("rulegroup", "NewAlerts_OrderCheck"),
            ("variant", variant),
        ])
    };
    let rule1_annotations = vec![(
        0.0,
        kv(&[("description", "This should produce more alerts later")]),
    )];
    vec![
        Expected {
            labels: kv(&[
                ("alertname", "PendingAndFiringAndResolved_SimpleAlert"),
                ("foo", "bar"),
                ("rulegroup", "PendingAndFiringAndResolved"),
            ]),
            states: vec![
                (at(8), Pending),
                (at(32), Firing),
                (at(69), Inactive),
                (at(89), Pending),
                (at(113), Firing),
                (at(134), Inactive),
            ],
            annotations: vec![
                (0.0, summary("11")),
                (at(21), summary("15")),
                (at(53), summary("19")),
                (at(69), summary("9")),
                (at(89), summary("15")),
            ],
        },
        Expected {
            labels: kv(&[
                (
                    "alertname",
                    "PendingAndResolved_AlwaysInactive_PendingAlert",
                ),
                ("foo", "bar"),
                ("rulegroup", "PendingAndResolved_AlwaysInactive"),
            ]),
            states: vec![(at(8), Pending), (at(19), Inactive)],
            annotations: vec![(0.0, kv(&[("description", "SimpleAlert is firing")]))],
        },
        Expected {
            labels: kv(&[
                (
                    "alertname",
                    "PendingAndResolved_AlwaysInactive_InactiveAlert",
                ),
                ("ba_dum", "tss"),
                ("rulegroup", "PendingAndResolved_AlwaysInactive"),
            ]),
            states: vec![],
            annotations: vec![(0.0, kv(&[("description", "This should never fire")]))],
        },
        Expected {
            labels: kv(&[
                ("alertname", "ZeroFor_SmallFor_ZeroFor"),
                ("foo", "bar"),
                ("rulegroup", "ZeroFor_SmallFor"),
            ]),
            states: vec![
                (at(8), Firing),
                (at(21), Inactive),
                (at(93), Firing),
                (at(106), Inactive),
            ],
            annotations: vec![
                (0.0, zero_for("101:1,102:2,103:3,")),
                (at(28), zero_for("101:2,102:4,103:6,")),
            ],
        },
        Expected {
            labels: kv(&[
                ("alertname", "ZeroFor_SmallFor_SmallFor"),
                ("ba_dum", "tss"),
                ("rulegroup", "ZeroFor_SmallFor"),
            ]),
            states: vec![
                (at(8), Pending),
                (at(8) + INTERVAL, Firing),
                (at(21), Inactive),
            ],
            annotations: vec![(
                0.0,
                kv(&[
                    ("description", "This should fire after an interval"),
                    (
                        "template_test",
                        "This Part IS TESTING the strings. ::1 127.0.0.1. 7815. replaced text. .",
                    ),
                ]),
            )],
        },
        Expected {
            labels: rule1("one"),
            states: vec![(at(8), Pending), (at(20), Firing), (at(73), Inactive)],
            annotations: rule1_annotations.clone(),
        },
        Expected {
            labels: rule1("two"),
            states: vec![(at(32), Pending), (at(44), Firing), (at(65), Inactive)],
            annotations: rule1_annotations,
        },
        Expected {
            labels: kv(&[
                ("alertname", "NewAlerts_OrderCheck_Rule2"),
                ("alertstate", "firing"),
                ("ba_dum", "tss"),
                ("foo", "baz"),
                ("rulegroup", "NewAlerts_OrderCheck"),
            ]),
            states: vec![(at(44), Firing), (at(65), Inactive)],
            annotations: vec![(
                0.0,
                kv(&[(
                    "description",
                    "Based on ALERTS. Old alertname was NewAlerts_OrderCheck_Rule1. foo was bar.",
                )]),
            )],
        },
    ]
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn unix(text: &str) -> f64 {
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One poll: when it was sent and when its answer came (seconds after the first sample),
/// then the labels and state of each alert. The store may answer for any moment in between.
type Poll = ((f64, f64), Vec<(BTreeMap<String, String>, State)>);

/// What was seen while the cases ran: polls of `/api/v1/alerts` and of `ALERTS`.
#[derive(Default)]
struct Seen {
    api: Vec<Poll>,
    series: Vec<Poll>,
}

fn state_of(s: &str) -> State {
    match s {
        "pending" => State::Pending,
        "firing" => State::Firing,
        other => panic!("unexpected state {other}"),
    }
}

/// Whether `seen` is a state `e` should have had at some time from one interval and the
/// slack before the poll was sent (a sample takes effect at the next evaluation) until its
/// answer came.
fn plausible(e: &Expected, (sent, answered): (f64, f64), seen: State) -> bool {
    let from = sent - INTERVAL - SLACK;
    seen == e.state(from)
        || e.states
            .iter()
            .any(|(at, s)| *at > from && *at <= answered && *s == seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_generator_compliance_cases_pass() {
    let setup = start_alerting(
        RULES,
        "['...']",
        &[
            "--rules-resend-delay",
            "8s",
            "--rules-resolved-retention",
            "120s",
            "--query-lookback-delta",
            "40s",
        ],
    )
    .await;
    let (central, api, hook) = (&setup.central, &setup.api, &setup.hook);
    let port = central.port;
    let base = central.base();
    let series = series();
    let zero = now() + 1.0;
    let zero_instant = Instant::now() + Duration::from_secs(1);
    let writer = tokio::spawn(async move {
        let url = format!("http://127.0.0.1:{port}/api/v1/write");
        for step in 0..STEPS {
            tokio::time::sleep_until((zero_instant + Duration::from_secs_f64(at(step))).into())
                .await;
            let timestamp = strata_wire::clock::now_ms();
            let body = WriteRequest {
                timeseries: series
                    .iter()
                    .map(|(labels, values)| TimeSeries {
                        labels: labels.clone(),
                        samples: vec![Sample {
                            value: values[step.min(values.len() - 1)],
                            timestamp,
                        }],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            }
            .encode_snappy()
            .unwrap();
            let (status, text) = support::post_write(&url, None, body).await;
            assert!(
                (200..300).contains(&status),
                "write refused: {status} {text}"
            );
        }
    });

    let mut seen = Seen::default();
    while !writer.is_finished() {
        let sent = now() - zero;
        let alerts = get_json(&format!("{base}/api/v1/alerts"), &[]).await;
        let list = alerts["data"]["alerts"].as_array().unwrap();
        seen.api.push((
            (sent, now() - zero),
            list.iter()
                .map(|a| {
                    (
                        labels_of(&a["labels"]),
                        state_of(a["state"].as_str().unwrap()),
                    )
                })
                .collect(),
        ));
        let sent = now() - zero;
        let r = get_json(
            &format!("{base}/api/v1/query"),
            &[("query", "ALERTS".to_string())],
        )
        .await;
        seen.series.push((
            (sent, now() - zero),
            r["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let mut labels = labels_of(&s["metric"]);
                    labels.remove("__name__");
                    let state = state_of(&labels.remove("alertstate").unwrap());
                    // Rule2 carries the alertstate of the ALERTS it is computed from.
                    if labels["alertname"] == "NewAlerts_OrderCheck_Rule2" {
                        labels.insert("alertstate".into(), "firing".into());
                    }
                    (labels, state)
                })
                .collect(),
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    writer.await.unwrap();

    let mut failures = Vec::new();
    let expected = expected();
    // States in the API and in the ALERTS series.
    for (what, polls) in [("/api/v1/alerts", &seen.api), ("ALERTS", &seen.series)] {
        for (t, list) in polls {
            for e in &expected {
                let state = list
                    .iter()
                    .find(|(l, _)| *l == e.labels)
                    .map_or(State::Inactive, |s| s.1);
                if !plausible(e, *t, state) {
                    failures.push(format!(
                        "{what} at {:.1}-{:.1}s: {} is {state:?}, want {:?}",
                        t.0,
                        t.1,
                        e.labels["alertname"],
                        e.state(t.1)
                    ));
                }
            }
            for (labels, _) in list {
                if !expected.iter().any(|e| e.labels == *labels) {
                    failures.push(format!(
                        "{what} at {:.1}-{:.1}s: unexpected alert {labels:?}",
                        t.0, t.1
                    ));
                }
            }
        }
    }
    // What was sent to the Alertmanager API.
    let sent: Vec<(f64, Value)> = api
        .timed_posts("/api/v2/alerts")
        .into_iter()
        .flat_map(|(t, body)| {
            body.as_array()
                .unwrap()
                .iter()
                .map(|a| (t - zero, a.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for e in &expected {
        check_sent(e, &sent, zero, &mut failures);
    }
    for (_, a) in &sent {
        let labels = labels_of(&a["labels"]);
        if !expected.iter().any(|e| e.labels == labels) {
            failures.push(format!("unexpected alert sent: {labels:?}"));
        }
    }
    // The real Alertmanager's webhook saw every phase.
    let messages = hook.posts("/hook");
    for e in &expected {
        check_alertmanager(e, &sent, zero, &messages, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The firing phases of an alert: (fired, resolved, back-to-pending-or-firing after).
fn phases(e: &Expected) -> Vec<(f64, f64, Option<f64>)> {
    let mut out = Vec::new();
    for (i, (t, s)) in e.states.iter().enumerate() {
        if *s != State::Firing {
            continue;
        }
        let resolved = e.states[i + 1..]
            .iter()
            .find(|(_, s)| *s == State::Inactive)
            .map(|x| x.0)
            .unwrap();
        let back = e.states[i + 1..]
            .iter()
            .find(|(at, s)| *at > resolved && *s != State::Inactive)
            .map(|x| x.0);
        out.push((*t, resolved, back));
    }
    out
}

fn check_sent(e: &Expected, sent: &[(f64, Value)], zero: f64, failures: &mut Vec<String>) {
    let name = &e.labels["alertname"];
    let mine: Vec<&(f64, Value)> = sent
        .iter()
        .filter(|(_, a)| labels_of(&a["labels"]) == e.labels)
        .collect();
    let mut matched = 0;
    let late = INTERVAL + SEND_SLACK;
    for (fired, resolved, back) in phases(e) {
        let phase: Vec<&&(f64, Value)> = mine
            .iter()
            .filter(|(_, a)| {
                let starts = unix(a["startsAt"].as_str().unwrap()) - zero;
                starts >= fired - SLACK && starts <= fired + late
            })
            .collect();
        let is_firing = |(t, a): &(f64, Value)| unix(a["endsAt"].as_str().unwrap()) - zero > *t;
        let firing: Vec<f64> = phase.iter().filter(|x| is_firing(x)).map(|x| x.0).collect();
        let resolved_at: Vec<(f64, f64)> = phase
            .iter()
            .filter(|x| !is_firing(x))
            .map(|(t, a)| (*t, unix(a["endsAt"].as_str().unwrap()) - zero))
            .collect();
        matched += phase.len();
        let mut fail = |m: String| failures.push(format!("{name} fired at {fired:.0}s: {m}"));
        match firing.first() {
            None => fail("no firing alert sent".into()),
            Some(first) if *first > fired + late => {
                fail(format!("first sent late, at {first:.1}s"))
            }
            Some(_) => {}
        }
        for w in firing.windows(2) {
            let gap = w[1] - w[0];
            // A send delayed shortens the gap after it, yet never to one interval (4 s): an
            // alert re-sent at every evaluation still fails.
            if !(RESEND - SEND_SLACK - 1.0..=RESEND + late).contains(&gap) {
                fail(format!("re-sent after {gap:.1}s at {:.1}s", w[1]));
            }
        }
        if let Some(last) = firing.last()
            && (*last < resolved - RESEND - late || *last > resolved + late)
        {
            fail(format!(
                "last firing send at {last:.1}s, resolved at {resolved:.0}s"
            ));
        }
        for (t, a) in phase.iter().map(|x| (x.0, &x.1)) {
            let got = labels_of(&a["annotations"]);
            if is_firing(&(t, a.clone())) {
                let ends = unix(a["endsAt"].as_str().unwrap()) - zero;
                if (ends - t - 4.0 * RESEND).abs() > late {
                    fail(format!("endsAt {ends:.1}s when sent at {t:.1}s"));
                }
                if got != *e.annotations(t) && got != *e.annotations(t - late) {
                    fail(format!("annotations at {t:.1}s: {got:?}"));
                }
            } else if got != *e.annotations(resolved - STEP) {
                fail(format!("resolved annotations {got:?}"));
            }
        }
        let until = back.map_or(resolved + RETENTION, |b| b.min(resolved + RETENTION));
        match (resolved_at.first(), resolved_at.last()) {
            (Some((first, ends)), Some((last, _))) => {
                if *first > resolved + late || (*ends - resolved).abs() > late {
                    fail(format!(
                        "resolved sent at {first:.1}s with endsAt {ends:.1}s"
                    ));
                }
                if *last < until - RESEND - late || *last > until + late {
                    fail(format!(
                        "resolved re-sent until {last:.1}s, want until {until:.1}s"
                    ));
                }
            }
            _ => fail("never sent resolved".into()),
        }
    }
    if matched != mine.len() {
        failures.push(format!(
            "{name}: {} alerts sent outside its firing phases",
            mine.len() - matched
        ));
    }
}

/// Each firing phase reached the real Alertmanager's receiver: firing with our `startsAt`
/// and first annotations, then resolved with our `endsAt`.
fn check_alertmanager(
    e: &Expected,
    sent: &[(f64, Value)],
    zero: f64,
    messages: &[Value],
    failures: &mut Vec<String>,
) {
    let name = &e.labels["alertname"];
    let theirs: Vec<&Value> = messages
        .iter()
        .flat_map(|m| m["alerts"].as_array().unwrap().iter())
        .filter(|a| labels_of(&a["labels"]) == e.labels)
        .collect();
    let ours: Vec<&Value> = sent
        .iter()
        .map(|(_, a)| a)
        .filter(|a| labels_of(&a["labels"]) == e.labels)
        .collect();
    if ours.is_empty() && !theirs.is_empty() {
        failures.push(format!("{name}: Alertmanager notified an alert never sent"));
    }
    let mut starts: Vec<&str> = ours
        .iter()
        .map(|a| a["startsAt"].as_str().unwrap())
        .collect();
    starts.dedup();
    for start in starts {
        let first = ours.iter().find(|a| a["startsAt"] == start).unwrap();
        let fired = theirs.iter().any(|a| {
            a["status"] == "firing"
                && unix(a["startsAt"].as_str().unwrap()) == unix(start)
                && labels_of(&a["annotations"]) == labels_of(&first["annotations"])
        });
        if !fired {
            failures.push(format!(
                "{name}: Alertmanager never notified it firing from {start}"
            ));
        }
        // Resolved: sent with an end no later than when it was sent.
        let Some((_, resolved)) = sent.iter().find(|(t, a)| {
            labels_of(&a["labels"]) == e.labels
                && a["startsAt"] == start
                && unix(a["endsAt"].as_str().unwrap()) - zero <= *t
        }) else {
            continue;
        };
        let ends = unix(resolved["endsAt"].as_str().unwrap());
        let notified = theirs
            .iter()
            .any(|a| a["status"] == "resolved" && unix(a["endsAt"].as_str().unwrap()) == ends);
        if !notified {
            failures.push(format!(
                "{name}: Alertmanager never notified it resolved at {}",
                resolved["endsAt"]
            ));
        }
    }
}
