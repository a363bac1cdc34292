//! Alert notifications in Alertmanager's formats.
//!
//! - [`WebhookMessage`]: the body Alertmanager's `webhook_config` receiver POSTs, version
//!   "4" (Alertmanager's `notify/webhook` package and its documentation of the webhook
//!   receiver). Chat bots, paging and ticketing bridges already read it.
//! - [`PostableAlert`]: one element of the JSON array Alertmanager's API takes on
//!   `POST /api/v2/alerts` (its OpenAPI specification, `postableAlerts`).
//! - [`fingerprint`]: Alertmanager's identity of an alert, the FNV-1a 64 hash of its sorted
//!   labels (`model.LabelSet.Fingerprint` of prometheus/common), printed as 16 hex digits.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Labels or annotations, sorted by name.
pub type KV = BTreeMap<String, String>;

/// The webhook payload version this module writes.
pub const WEBHOOK_VERSION: &str = "4";

/// Whether alerts are firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// The webhook receiver's body (version "4").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub version: String,
    /// Identifies the group of alerts, for deduplication by the receiver.
    pub group_key: String,
    /// Alerts left out because of the receiver's `max_alerts`.
    pub truncated_alerts: u64,
    /// `firing` when at least one alert fires.
    pub status: Status,
    pub receiver: String,
    pub group_labels: KV,
    /// Labels every alert of the message has.
    pub common_labels: KV,
    /// Annotations every alert of the message has.
    pub common_annotations: KV,
    /// Where the sender can be reached, for links back.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of a [`WebhookMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: Status,
    /// `endsAt` is Go's zero time, [`NOT_ENDED`], while the alert fires.
    #[serde(flatten)]
    pub alert: PostableAlert,
    pub fingerprint: String,
}

/// `endsAt` of an alert that has not ended: Go's zero `time.Time`, as Alertmanager writes it.
pub const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

impl WebhookMessage {
    /// A message for one group of alerts; the common labels and annotations are computed.
    pub fn new(
        receiver: &str,
        group_key: String,
        group_labels: KV,
        external_url: &str,
        alerts: Vec<WebhookAlert>,
    ) -> Self {
        let status = if alerts.iter().any(|a| a.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        };
        Self {
            version: WEBHOOK_VERSION.into(),
            group_key,
            truncated_alerts: 0,
            status,
            receiver: receiver.into(),
            group_labels,
            common_labels: common(alerts.iter().map(|a| &a.alert.labels)),
            common_annotations: common(alerts.iter().map(|a| &a.alert.annotations)),
            external_url: external_url.into(),
            alerts,
        }
    }
}

/// The pairs every map has.
fn common<'a>(mut maps: impl Iterator<Item = &'a KV>) -> KV {
    let Some(first) = maps.next() else {
        return KV::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// The group key Alertmanager gives a group of its root route: the route's matchers (`{}`
/// for the root) and the group's labels, `{}:{alertname="X", cell="c01"}`.
pub fn group_key(group_labels: &KV) -> String {
    format!("{{}}:{}", label_set_string(group_labels))
}

/// Labels as prometheus/common's `LabelSet.String()` writes them: `{a="b", c="d"}`, sorted,
/// values quoted as Go's `%q` does for printable text.
pub fn label_set_string(labels: &KV) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{k}={v:?}");
    }
    out.push('}');
    out
}

/// One alert for `POST /api/v2/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: KV,
    pub annotations: KV,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339: when Alertmanager considers the alert resolved unless it is sent again.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Alertmanager's fingerprint of an alert's labels (16 lower-case hex digits).
pub fn fingerprint(labels: &KV) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    const SEPARATOR: u8 = 0xff;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[SEPARATOR]);
        add(v.as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> KV {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn fingerprint_is_fnv1a_of_sorted_labels() {
        // FNV-1a 64 of the empty input is its offset basis.
        assert_eq!(fingerprint(&KV::new()), "cbf29ce484222325");
        // Order of insertion does not matter, values do.
        let a = kv(&[("alertname", "X"), ("cell", "c01")]);
        let b = kv(&[("cell", "c01"), ("alertname", "X")]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&kv(&[("alertname", "X")])));
        assert_eq!(fingerprint(&a).len(), 16);
    }

    #[test]
    fn message_has_common_labels_and_the_group_key_of_the_root_route() {
        let alert = |cell: &str, status| WebhookAlert {
            status,
            alert: PostableAlert {
                labels: kv(&[("alertname", "Split"), ("cell", cell)]),
                annotations: kv(&[("summary", cell)]),
                starts_at: "2026-11-22T00:00:00Z".into(),
                ends_at: NOT_ENDED.into(),
                generator_url: String::new(),
            },
            fingerprint: String::new(),
        };
        let group = kv(&[("alertname", "Split")]);
        let m = WebhookMessage::new(
            "planner",
            group_key(&group),
            group,
            "http://planner",
            vec![alert("c01", Status::Resolved), alert("c02", Status::Firing)],
        );
        assert_eq!(m.status, Status::Firing);
        assert_eq!(m.group_key, r#"{}:{alertname="Split"}"#);
        assert_eq!(m.common_labels, kv(&[("alertname", "Split")]));
        assert!(m.common_annotations.is_empty());
        let json = serde_json::to_value(&m).unwrap_or_default();
        for key in [
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert_eq!(json["alerts"][0]["generatorURL"], "");
        assert_eq!(json["status"], "firing");
    }
}
