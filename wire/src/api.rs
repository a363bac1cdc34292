//! JSON types of the Prometheus HTTP API (`/api/v1/...`), as Prometheus writes them
//! (<https://prometheus.io/docs/prometheus/latest/querying/api/>).
//!
//! Every response is an envelope `{"status", "data", "errorType", "error", "warnings", "infos"}`.
//! Sample values are strings (so `NaN` and `±Inf` survive JSON) formatted like Go's
//! `strconv.FormatFloat` as Prometheus's `jsonutil.MarshalFloat` does; timestamps are float
//! seconds with millisecond precision.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// `status` of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
}

/// The `error` Prometheus answers (with `errorType` `execution`) when a query would load more
/// samples than `--query.max-samples` allows (`promql.ErrTooManySamples`).
pub const TOO_MANY_SAMPLES: &str =
    "query processing would load too many samples into memory in query execution";

/// `errorType` values, with the HTTP status code Prometheus answers each with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    Timeout,
    Canceled,
    Execution,
    BadData,
    Internal,
    Unavailable,
    NotFound,
    NotAcceptable,
}

impl ErrorType {
    /// The `errorType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Execution => "execution",
            ErrorType::BadData => "bad_data",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
            ErrorType::NotFound => "not_found",
            ErrorType::NotAcceptable => "not_acceptable",
        }
    }

    /// The status code Prometheus's API (`web/api/v1/api.go`, `respondError`) uses.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorType::BadData => 400,
            ErrorType::Execution => 422,
            ErrorType::Canceled => 499,
            ErrorType::Timeout => 503,
            ErrorType::Internal => 500,
            ErrorType::Unavailable => 503,
            ErrorType::NotFound => 404,
            ErrorType::NotAcceptable => 406,
        }
    }
}

/// The response envelope of every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub status: Status,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(rename = "errorType", default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub infos: Vec<String>,
}

impl<T> Envelope<T> {
    /// A successful response.
    pub fn success(data: T) -> Self {
        Self {
            status: Status::Success,
            data: Some(data),
            error_type: None,
            error: None,
            warnings: Vec::new(),
            infos: Vec::new(),
        }
    }

    /// An error response.
    pub fn error(error_type: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status: Status::Error,
            data: None,
            error_type: Some(error_type),
            error: Some(message.into()),
            warnings: Vec::new(),
            infos: Vec::new(),
        }
    }
}

/// A label set as JSON: `{"__name__": "up", "job": "node"}`.
pub type Metric = BTreeMap<String, String>;

/// `data` of `/api/v1/query` and `/api/v1/query_range`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
pub enum QueryData {
    Matrix(Vec<RangeSeries>),
    Vector(Vec<InstantSample>),
    Scalar(Point),
    String(StringPoint),
}

/// One element of a vector result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstantSample {
    pub metric: Metric,
    pub value: Point,
}

/// One element of a matrix result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeSeries {
    pub metric: Metric,
    pub values: Vec<Point>,
}

/// `[<unix seconds>, "<value>"]`.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub value: f64,
}

impl PartialEq for Point {
    /// Bit-exact, so that NaN equals NaN in tests.
    fn eq(&self, other: &Self) -> bool {
        self.timestamp_ms == other.timestamp_ms && self.value.to_bits() == other.value.to_bits()
    }
}

/// `[<unix seconds>, "<string>"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StringPoint {
    pub timestamp_ms: i64,
    pub value: String,
}

/// One entry of `/api/v1/metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataEntry {
    #[serde(rename = "type")]
    pub metric_type: String,
    pub help: String,
    pub unit: String,
}

/// `data` of `/api/v1/status/buildinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: String,
    pub revision: String,
    pub branch: String,
    pub build_user: String,
    pub build_date: String,
    pub go_version: String,
    /// Prometheus 3's feature list; Grafana reads it when present.
    #[serde(default)]
    pub features: BTreeMap<String, String>,
}

/// Formats a sample value as Prometheus does: Go's `'f'` format with the shortest
/// representation, `'e'` below 1e-6 or from 1e21 on, and `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes `1.5e-7`; Go writes `1.5e-07`: a signed exponent of at least two digits.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{v}")
}

/// Parses a value string as Prometheus writes it (also accepting Go's other spellings).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn serialize_timestamp<S: SerializeTuple>(t: &mut S, ms: i64) -> Result<(), S::Error> {
    if ms % 1000 == 0 {
        t.serialize_element(&(ms / 1000))
    } else {
        t.serialize_element(&(ms as f64 / 1000.0))
    }
}

fn timestamp_from_seconds(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        serialize_timestamp(&mut t, self.timestamp_ms)?;
        t.serialize_element(&format_value(self.value))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (secs, value): (f64, String) = Deserialize::deserialize(d)?;
        let value = parse_value(&value)
            .ok_or_else(|| de::Error::custom(format!("invalid sample value {value:?}")))?;
        Ok(Point {
            timestamp_ms: timestamp_from_seconds(secs),
            value,
        })
    }
}

impl Serialize for StringPoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        serialize_timestamp(&mut t, self.timestamp_ms)?;
        t.serialize_element(&self.value)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for StringPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (secs, value): (f64, String) = Deserialize::deserialize(d)?;
        Ok(StringPoint {
            timestamp_ms: timestamp_from_seconds(secs),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_format_like_go() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(1e-6), "0.000001");
        assert_eq!(format_value(1.5e-7), "1.5e-07");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(123456789.125), "123456789.125");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e300), "1e+300");
    }

    #[test]
    fn vector_envelope_matches_prometheus() {
        let env = Envelope::success(QueryData::Vector(vec![InstantSample {
            metric: Metric::from([
                ("__name__".into(), "up".into()),
                ("job".into(), "node".into()),
            ]),
            value: Point {
                timestamp_ms: 1_435_781_451_781,
                value: 1.0,
            },
        }]));
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(
            json,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"node"},"value":[1435781451.781,"1"]}]}}"#
        );
        let back: Envelope<QueryData> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn matrix_scalar_string_and_errors() {
        let m = Envelope::success(QueryData::Matrix(vec![RangeSeries {
            metric: Metric::new(),
            values: vec![
                Point {
                    timestamp_ms: 1000,
                    value: f64::NAN,
                },
                Point {
                    timestamp_ms: 16_000,
                    value: 2.5,
                },
            ],
        }]));
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(r#""values":[[1,"NaN"],[16,"2.5"]]"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<Envelope<QueryData>>(&json).unwrap(),
            m
        );

        let s = Envelope::success(QueryData::Scalar(Point {
            timestamp_ms: 1500,
            value: 3.0,
        }));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#
        );
        let st = Envelope::success(QueryData::String(StringPoint {
            timestamp_ms: 2000,
            value: "hi".into(),
        }));
        assert_eq!(
            serde_json::to_string(&st).unwrap(),
            r#"{"status":"success","data":{"resultType":"string","result":[2,"hi"]}}"#
        );

        let e: Envelope<QueryData> = Envelope::error(ErrorType::BadData, "parse error");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#
        );
        assert_eq!(ErrorType::BadData.http_status(), 400);
        assert_eq!(
            serde_json::to_string(&ErrorType::NotAcceptable).unwrap(),
            format!("\"{}\"", ErrorType::NotAcceptable.as_str())
        );
        assert_eq!(ErrorType::Execution.http_status(), 422);
    }

    #[test]
    fn decodes_real_prometheus_response() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"localhost:9090","job":"prometheus"},"values":[[1700000000,"1"],[1700000015.5,"+Inf"]]}]},"warnings":["w"]}"#;
        let env: Envelope<QueryData> = serde_json::from_str(body).unwrap();
        assert_eq!(env.warnings, vec!["w".to_string()]);
        let Some(QueryData::Matrix(series)) = env.data else {
            panic!("matrix expected")
        };
        assert_eq!(
            series[0].values[1],
            Point {
                timestamp_ms: 1_700_000_015_500,
                value: f64::INFINITY
            }
        );
    }

    proptest! {
        #[test]
        fn value_round_trip(v in any::<f64>()) {
            let back = parse_value(&format_value(v)).unwrap();
            prop_assert!(back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()));
        }
    }
}
