//! The notification configuration (`strata central --notify-config FILE`): the `route` and
//! `receivers` sections of an Alertmanager 0.25 configuration file, with `webhook_configs`
//! receivers, so operators can reuse the routing tree they already have.
//!
//! ```yaml
//! route:
//!   receiver: ops
//!   group_by: [alertname, cell]
//!   group_wait: 30s
//!   group_interval: 5m
//!   repeat_interval: 4h
//!   routes:
//!     - matchers: ['severity="page"']
//!       receiver: pager
//! receivers:
//!   - name: ops
//!     webhook_configs:
//!       - url: http://chatops.example:8080/alerts
//!   - name: pager
//!     webhook_configs:
//!       - url: http://pager.example/hook
//!         send_resolved: false
//!         max_alerts: 20
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strata_relay::remote_write::{Authorization, BasicAuth, HttpClient};
use strata_relay::tls::TlsConfig;
use strata_wire::alert::KV;
use strata_wire::duration::parse_duration_ms;
use strata_wire::labels::is_valid_label_name;

use crate::index::{MatchOp, Matcher, parse_matcher};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    route: RouteFile,
    #[serde(default)]
    receivers: Vec<ReceiverFile>,
    /// Alertmanager's `global` section: its settings are for other receiver types, and
    /// `resolve_timeout` does not apply (every alert strata routes has an end).
    #[serde(default, rename = "global")]
    _global: Option<serde::de::IgnoredAny>,
    /// Alertmanager's notification templates, used by other receiver types only.
    #[serde(default, rename = "templates")]
    _templates: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "match")]
    match_equal: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverFile {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<WebhookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    #[serde(default = "send_resolved_default")]
    send_resolved: bool,
    #[serde(default)]
    max_alerts: u64,
    timeout: Option<String>,
    #[serde(default)]
    http_config: HttpConfigFile,
}

/// Alertmanager's `http_config` of a webhook: how it authenticates and its TLS settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfigFile {
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<TlsConfig>,
}

fn send_resolved_default() -> bool {
    true
}

/// Which labels make an alert's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    Labels(BTreeSet<String>),
    /// `group_by: ['...']`: every label, one group per alert.
    All,
}

/// What a group of a route is sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    /// The route's place in the tree (`0`, `0/1`, ...): routes with the same matchers keep
    /// separate groups, as Alertmanager keeps them per route.
    pub id: String,
    /// Alertmanager's route key: `{}` for the root, `PARENT/{matchers}` below it.
    pub key: String,
    pub receiver: String,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

/// A node of the routing tree, with the settings it inherited filled in.
#[derive(Debug, Clone)]
pub struct Route {
    pub options: GroupOptions,
    pub group_by: GroupBy,
    matchers: Vec<Matcher>,
    continue_matching: bool,
    routes: Vec<Route>,
}

/// One webhook of a receiver (Alertmanager's `webhook_config`).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// Whether resolved alerts are sent (default true, as Alertmanager's webhooks).
    pub send_resolved: bool,
    /// Most alerts per message; 0 is all of them.
    pub max_alerts: u64,
    /// Per request; retries go on until the group's next interval.
    pub timeout: Duration,
    /// Authentication (secret files are read at each request) and TLS.
    pub http: HttpClient,
    /// A client with the TLS settings of `http`.
    pub client: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub route: Route,
    /// Webhooks by receiver name.
    pub receivers: BTreeMap<String, Vec<Webhook>>,
}

/// Alertmanager's defaults for the root route.
const GROUP_WAIT: Duration = Duration::from_secs(30);
const GROUP_INTERVAL: Duration = Duration::from_secs(300);
const REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl NotifyConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: FileConfig = serde_norway::from_str(text).map_err(|e| {
            format!(
                "{e} (strata takes Alertmanager's `route` and `receivers` with webhook_configs)"
            )
        })?;
        let mut receivers = BTreeMap::new();
        for r in file.receivers {
            if r.name.is_empty() {
                return Err("a receiver has no name".into());
            }
            let mut hooks = Vec::new();
            for w in r.webhook_configs {
                let url = reqwest::Url::parse(&w.url)
                    .map_err(|e| format!("receiver {:?}: webhook url {:?}: {e}", r.name, w.url))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!(
                        "receiver {:?}: webhook url {:?} must be http or https",
                        r.name, w.url
                    ));
                }
                let timeout = match &w.timeout {
                    Some(t) => {
                        positive(t, "timeout").map_err(|e| format!("receiver {:?}: {e}", r.name))?
                    }
                    None => WEBHOOK_TIMEOUT,
                };
                let h = w.http_config;
                let http = HttpClient {
                    basic_auth: h.basic_auth,
                    authorization: h.authorization,
                    bearer_token: h.bearer_token,
                    bearer_token_file: h.bearer_token_file,
                    tls_config: h.tls_config,
                };
                let http_error = |e: String| format!("receiver {:?}: http_config: {e}", r.name);
                http.check().map_err(http_error)?;
                http.authorization_header().map_err(http_error)?;
                let client = http.build().map_err(http_error)?;
                hooks.push(Webhook {
                    url: w.url,
                    send_resolved: w.send_resolved,
                    max_alerts: w.max_alerts,
                    timeout,
                    http,
                    client,
                });
            }
            if receivers.insert(r.name.clone(), hooks).is_some() {
                return Err(format!("receiver {:?} is defined twice", r.name));
            }
        }
        let root = &file.route;
        if root.receiver.is_none() {
            return Err("the root route must name a receiver".into());
        }
        if !root.matchers.is_empty() || !root.match_equal.is_empty() || !root.match_re.is_empty() {
            return Err("the root route must not have any matchers".into());
        }
        if root.continue_matching {
            return Err("the root route cannot have continue set".into());
        }
        let inherited = Route {
            options: GroupOptions {
                id: String::new(),
                key: String::new(),
                receiver: String::new(),
                group_wait: GROUP_WAIT,
                group_interval: GROUP_INTERVAL,
                repeat_interval: REPEAT_INTERVAL,
            },
            group_by: GroupBy::Labels(BTreeSet::new()),
            matchers: Vec::new(),
            continue_matching: false,
            routes: Vec::new(),
        };
        let route = build(root, &inherited, "0", true, &receivers)?;
        Ok(Self { route, receivers })
    }
}

fn positive(text: &str, what: &str) -> Result<Duration, String> {
    match parse_duration_ms(text) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
        Ok(_) => Err(format!("{what} must be greater than zero")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A route with its parent's settings where it has none of its own.
fn build(
    file: &RouteFile,
    parent: &Route,
    id: &str,
    root: bool,
    receivers: &BTreeMap<String, Vec<Webhook>>,
) -> Result<Route, String> {
    let mut matchers = Vec::new();
    for m in &file.matchers {
        matchers.push(parse_matcher(m)?);
    }
    for (name, value) in &file.match_equal {
        matchers.push(Matcher::new(MatchOp::Equal, name, value).map_err(|e| e.to_string())?);
    }
    for (name, value) in &file.match_re {
        matchers.push(Matcher::new(MatchOp::Regex, name, value).map_err(|e| e.to_string())?);
    }
    matchers.sort_by(|a, b| (&a.name, &a.value, a.op as u8).cmp(&(&b.name, &b.value, b.op as u8)));
    let set = matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let key = if root {
        "{}".to_string()
    } else {
        format!("{}/{{{set}}}", parent.options.key)
    };
    let receiver = file
        .receiver
        .clone()
        .unwrap_or_else(|| parent.options.receiver.clone());
    if !receivers.contains_key(&receiver) {
        return Err(format!(
            "route {key}: receiver {receiver:?} is not defined under receivers"
        ));
    }
    let group_by = match &file.group_by {
        None => parent.group_by.clone(),
        Some(names) if names.iter().any(|n| n == "...") => {
            if names.len() > 1 {
                return Err(format!(
                    "route {key}: group_by '...' groups by every label and must be alone"
                ));
            }
            GroupBy::All
        }
        Some(names) => {
            let mut set = BTreeSet::new();
            for n in names {
                if !is_valid_label_name(n) {
                    return Err(format!("route {key}: {n:?} is not a valid label name"));
                }
                if !set.insert(n.clone()) {
                    return Err(format!("route {key}: duplicated label {n:?} in group_by"));
                }
            }
            GroupBy::Labels(set)
        }
    };
    let duration = |text: &Option<String>, what: &str, inherited: Duration| match text {
        Some(t) => positive(t, what).map_err(|e| format!("route {key}: {e}")),
        None => Ok(inherited),
    };
    let inherited = &parent.options;
    let mut route = Route {
        options: GroupOptions {
            group_wait: duration(&file.group_wait, "group_wait", inherited.group_wait)?,
            group_interval: duration(
                &file.group_interval,
                "group_interval",
                inherited.group_interval,
            )?,
            repeat_interval: duration(
                &file.repeat_interval,
                "repeat_interval",
                inherited.repeat_interval,
            )?,
            id: id.to_string(),
            key,
            receiver,
        },
        group_by,
        matchers,
        continue_matching: file.continue_matching,
        routes: Vec::new(),
    };
    for (i, child) in file.routes.iter().enumerate() {
        let built = build(child, &route, &format!("{id}/{i}"), false, receivers)?;
        route.routes.push(built);
    }
    Ok(route)
}

impl Route {
    /// The routes an alert with `labels` goes to (Alertmanager's `Route.Match`): the deepest
    /// matching routes, stopping at the first matching child unless it has `continue`.
    pub fn matching(&self, labels: &KV) -> Vec<&Route> {
        let all_match = self
            .matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)));
        if !all_match {
            return Vec::new();
        }
        let mut out = Vec::new();
        for child in &self.routes {
            let found = child.matching(labels);
            let matched = !found.is_empty();
            out.extend(found);
            if matched && !child.continue_matching {
                break;
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// The labels that make the alert's group on this route.
    pub fn group_labels(&self, labels: &KV) -> KV {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => labels
                .iter()
                .filter(|(k, _)| names.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
route:
  receiver: ops
  group_by: [alertname]
  routes:
    - matchers: ['severity="page"', "team=~db|web"]
      receiver: pager
      group_wait: 1s
    - match: {team: db}
      receiver: db
      continue: true
      routes:
        - match_re: {cell: "c0.*"}
          group_by: ['...']
    - match: {team: db}
      receiver: ops
      repeat_interval: 1h
receivers:
  - name: ops
    webhook_configs: [{url: "http://127.0.0.1:1/ops"}]
  - name: pager
    webhook_configs: [{url: "http://127.0.0.1:1/page", send_resolved: false, max_alerts: 3}]
  - name: db
"#;

    fn labels(pairs: &[(&str, &str)]) -> KV {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn routes_match_as_alertmanager_routes_do() {
        let c = NotifyConfig::parse(CONFIG).unwrap();
        let keys = |l: &KV| -> Vec<(String, String)> {
            c.route
                .matching(l)
                .iter()
                .map(|r| (r.options.key.clone(), r.options.receiver.clone()))
                .collect()
        };
        assert_eq!(
            keys(&labels(&[("alertname", "X")])),
            [("{}".to_string(), "ops".to_string())]
        );
        let page = labels(&[("alertname", "X"), ("severity", "page"), ("team", "db")]);
        assert_eq!(
            keys(&page),
            [(
                "{}/{severity=\"page\",team=~\"db|web\"}".to_string(),
                "pager".to_string()
            )]
        );
        let db = labels(&[("alertname", "X"), ("team", "db"), ("cell", "c01")]);
        assert_eq!(
            keys(&db),
            [
                (
                    "{}/{team=\"db\"}/{cell=~\"c0.*\"}".to_string(),
                    "db".to_string()
                ),
                ("{}/{team=\"db\"}".to_string(), "ops".to_string()),
            ]
        );
        let routes = c.route.matching(&db);
        assert_eq!(routes[0].group_labels(&db), db);
        assert_eq!(routes[1].options.repeat_interval, Duration::from_secs(3600));
        assert_eq!(
            (routes[0].options.id.as_str(), routes[1].options.id.as_str()),
            ("0/1/0", "0/2")
        );
        assert_eq!(routes[1].group_labels(&db), labels(&[("alertname", "X")]));
        let pager = c.route.matching(&page)[0];
        assert_eq!(pager.options.group_wait, Duration::from_secs(1));
        assert_eq!(pager.options.group_interval, GROUP_INTERVAL);
        let hook = &c.receivers["pager"][0];
        assert_eq!(
            (
                hook.url.as_str(),
                hook.send_resolved,
                hook.max_alerts,
                hook.timeout
            ),
            ("http://127.0.0.1:1/page", false, 3, WEBHOOK_TIMEOUT)
        );
        assert_eq!(hook.http.authorization_header(), Ok(None));
    }

    #[test]
    fn webhooks_authenticate_as_alertmanager_http_config_says() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let text = format!(
            "route: {{receiver: x}}\nreceivers:\n- name: x\n  webhook_configs:\n  - url: http://127.0.0.1:1/\n    http_config: {{authorization: {{credentials_file: {}}}}}\n  - url: http://127.0.0.1:1/\n    http_config: {{basic_auth: {{username: am, password: pw}}}}\n",
            token.display()
        );
        let c = NotifyConfig::parse(&text).unwrap();
        let headers: Vec<_> = c.receivers["x"]
            .iter()
            .map(|h| h.http.authorization_header().unwrap().unwrap())
            .collect();
        assert_eq!(headers, ["Bearer s3cret", "Basic YW06cHc="]);
        let both = "route: {receiver: x}\nreceivers: [{name: x, webhook_configs: [{url: 'http://a/', http_config: {bearer_token: t, basic_auth: {username: u}}}]}]\n";
        let err = NotifyConfig::parse(both).unwrap_err();
        assert!(err.contains("http_config: at most one of"), "{err}");
    }

    #[test]
    fn alertmanager_sections_for_other_receivers_are_ignored() {
        let text = "global: {resolve_timeout: 5m, smtp_from: a@b}\ntemplates: ['*.tmpl']\nroute: {receiver: x}\nreceivers: [{name: x}]\n";
        assert_eq!(NotifyConfig::parse(text).unwrap().receivers.len(), 1);
    }

    #[test]
    fn wrong_configurations_say_what_is_wrong() {
        let cases = [
            ("route: {}\n", "must name a receiver"),
            (
                "route: {receiver: x}\nreceivers: [{name: y}]\n",
                "receiver \"x\" is not defined",
            ),
            (
                "route: {receiver: x, matchers: ['a=b']}\nreceivers: [{name: x}]\n",
                "must not have any matchers",
            ),
            (
                "route: {receiver: x, group_by: ['...', a]}\nreceivers: [{name: x}]\n",
                "must be alone",
            ),
            (
                "route: {receiver: x, group_wait: 0s}\nreceivers: [{name: x}]\n",
                "greater than zero",
            ),
            (
                "route: {receiver: x}\nreceivers: [{name: x, slack_configs: []}]\n",
                "unknown field `slack_configs`",
            ),
            (
                "route: {receiver: x}\nreceivers: [{name: x, webhook_configs: [{url: 'ftp://a'}]}]\n",
                "must be http or https",
            ),
            (
                "route: {receiver: x, routes: [{matchers: ['a=~(']}]}\nreceivers: [{name: x}]\n",
                "invalid matcher",
            ),
            (
                "route: {receiver: x}\nreceivers: [{name: x}, {name: x}]\n",
                "defined twice",
            ),
            (
                "route: {receiver: x}\nreceivers: [{name: x}]\ninhibit_rules: []\n",
                "unknown field `inhibit_rules`",
            ),
        ];
        for (text, want) in cases {
            let err = NotifyConfig::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
