//! A client of any Prometheus-compatible query API (Prometheus, VictoriaMetrics, Thanos,
//! Mimir, strata central): `POST /api/v1/query` and `/api/v1/query_range` with form-encoded
//! parameters, as the Prometheus HTTP API documents them. It counts the queries it issues and
//! the samples it receives, which the scale benchmark reports, and has at most so many of them
//! in flight at once, so a report is quick without crowding the store's other users.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_wire::api::{Envelope, Metric, QueryData, Status, TOO_MANY_SAMPLES};
use tokio::sync::Semaphore;

use crate::{Error, Result};

/// One series of a range answer: labels and `(ms, value)` points in time order.
pub type Series = (Metric, Vec<(i64, f64)>);

/// Queries issued and samples received so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub queries: u64,
    pub samples: u64,
}

#[derive(Debug, Clone)]
pub struct Source {
    base: String,
    client: reqwest::Client,
    bearer_token: Option<String>,
    queries: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    /// One permit per query in flight.
    permits: Arc<Semaphore>,
}

/// Queries a source has in flight at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl Source {
    /// `url` is the API's base, e.g. `http://127.0.0.1:9090` (without `/api/v1`).
    pub fn new(url: &str, timeout: Duration, bearer_token: Option<String>) -> Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            Error::Config(format!(
                "--source {url:?} is not a URL ({e}); give e.g. http://127.0.0.1:9090"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "--source {url:?} is not http or https"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            client,
            bearer_token,
            queries: Arc::default(),
            samples: Arc::default(),
            permits: Arc::new(Semaphore::new(DEFAULT_CONCURRENCY)),
        })
    }

    /// The same source (counting into the same totals) with at most `queries` in flight.
    pub fn with_concurrency(&self, queries: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(queries.max(1))),
            ..self.clone()
        }
    }

    /// The same source with its counts of queries and samples starting from zero, to
    /// measure one report among many.
    pub fn counting_anew(&self) -> Self {
        Self {
            queries: Arc::default(),
            samples: Arc::default(),
            ..self.clone()
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub fn stats(&self) -> Stats {
        Stats {
            queries: self.queries.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
        }
    }

    /// An instant query at `at_ms`: each series' labels and value.
    pub async fn instant(&self, query: &str, at_ms: i64) -> Result<Vec<(Metric, f64)>> {
        let time = seconds(at_ms);
        let data = self
            .post("/api/v1/query", query, &[("query", query), ("time", &time)])
            .await?;
        match data {
            QueryData::Vector(v) => {
                self.samples.fetch_add(v.len() as u64, Ordering::Relaxed);
                Ok(v.into_iter().map(|s| (s.metric, s.value.value)).collect())
            }
            QueryData::Scalar(p) => {
                self.samples.fetch_add(1, Ordering::Relaxed);
                Ok(vec![(Metric::new(), p.value)])
            }
            other => Err(self.bad(query, format!("expected a vector, got {}", kind(&other)))),
        }
    }

    /// Each series' newest value within `lookback_ms` before `at_ms`, so a value is found
    /// however sparse the samples are (an instant query looks back only 5 minutes).
    pub async fn latest(
        &self,
        query: &str,
        at_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(Metric, f64)>> {
        let step = (lookback_ms / 12).max(1000);
        let series = self
            .range(query, at_ms - lookback_ms, at_ms, step, lookback_ms + step)
            .await?;
        Ok(series
            .into_iter()
            .filter_map(|(m, points)| {
                let last = points.iter().rev().find(|p| p.1.is_finite())?.1;
                Some((m, last))
            })
            .collect())
    }

    /// A range query from `start_ms` to `end_ms` every `step_ms`, asked for in pieces of at
    /// most `max_span_ms` so that no single query makes the store load too much; pieces of
    /// the same series are joined. A piece the store refuses for the samples it would load
    /// is asked for again in halves (and so are the pieces after it).
    pub async fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        max_span_ms: i64,
    ) -> Result<Vec<Series>> {
        let mut joined: BTreeMap<Metric, Vec<(i64, f64)>> = BTreeMap::new();
        let mut per_piece = (max_span_ms / step_ms).max(1);
        let mut from = start_ms;
        while from <= end_ms {
            let to = (from + (per_piece - 1) * step_ms).min(end_ms);
            let (start, end, step) = (seconds(from), seconds(to), seconds(step_ms));
            let answer = self
                .post(
                    "/api/v1/query_range",
                    query,
                    &[
                        ("query", query),
                        ("start", &start),
                        ("end", &end),
                        ("step", &step),
                    ],
                )
                .await;
            let data = match answer {
                Err(Error::QueryFailed { message, .. })
                    if message.contains(TOO_MANY_SAMPLES) && to > from =>
                {
                    per_piece = ((to - from) / step_ms + 1) / 2;
                    continue;
                }
                other => other?,
            };
            let QueryData::Matrix(series) = data else {
                return Err(self.bad(query, format!("expected a matrix, got {}", kind(&data))));
            };
            for s in series {
                self.samples
                    .fetch_add(s.values.len() as u64, Ordering::Relaxed);
                joined
                    .entry(s.metric)
                    .or_default()
                    .extend(s.values.into_iter().map(|p| (p.timestamp_ms, p.value)));
            }
            from = to + step_ms;
        }
        Ok(joined.into_iter().collect())
    }

    async fn post(&self, path: &str, query: &str, form: &[(&str, &str)]) -> Result<QueryData> {
        let url = format!("{}{path}", self.base);
        // The semaphore is never closed.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        self.queries.fetch_add(1, Ordering::Relaxed);
        let body = serde_urlencoded::to_string(form)
            .map_err(|e| self.bad(query, format!("cannot encode the form: {e}")))?;
        let mut request = self
            .client
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| Error::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Error::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        // Prometheus answers errors with the same envelope and a 4xx/5xx status.
        let envelope: Envelope<QueryData> = serde_json::from_str(&text).map_err(|e| {
            self.bad(
                query,
                format!(
                    "HTTP {status}: {e}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            )
        })?;
        match (envelope.status, envelope.data) {
            (Status::Success, Some(data)) => Ok(data),
            (_, _) => Err(Error::QueryFailed {
                url,
                query: query.to_string(),
                error_type: envelope
                    .error_type
                    .map_or_else(|| format!("HTTP {status}"), |t| t.as_str().to_string()),
                message: envelope.error.unwrap_or_default(),
            }),
        }
    }

    fn bad(&self, query: &str, message: String) -> Error {
        Error::BadAnswer {
            url: self.base.clone(),
            query: query.to_string(),
            message,
        }
    }
}

fn kind(data: &QueryData) -> &'static str {
    match data {
        QueryData::Matrix(_) => "a matrix",
        QueryData::Vector(_) => "a vector",
        QueryData::Scalar(_) => "a scalar",
        QueryData::String(_) => "a string",
    }
}

/// The API's time format: seconds since the epoch, with milliseconds.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that refuses range queries of more than `max_steps` steps as Prometheus does,
    /// and otherwise answers one series whose value at each step is its time in seconds.
    async fn store(max_steps: i64) -> String {
        let app = axum::Router::new().route(
            "/api/v1/query_range",
            axum::routing::post(move |body: String| async move {
                let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap();
                let number = |k: &str| form[k].parse::<f64>().unwrap() as i64;
                let (start, end, step) = (number("start"), number("end"), number("step"));
                if (end - start) / step + 1 > max_steps {
                    return (
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            r#"{{"status":"error","errorType":"execution","error":"{TOO_MANY_SAMPLES}"}}"#
                        ),
                    );
                }
                let values: Vec<String> = (0..=(end - start) / step)
                    .map(|i| format!(r#"[{0},"{0}"]"#, start + i * step))
                    .collect();
                (
                    axum::http::StatusCode::OK,
                    format!(
                        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"cell":"c1"}},"values":[{}]}}]}}}}"#,
                        values.join(",")
                    ),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_range_the_store_finds_too_big_is_asked_for_in_halves() {
        let source = Source::new(&store(7).await, Duration::from_secs(10), None).unwrap();
        let day = 86_400_000;
        // 30 daily steps in one piece of 30: refused, then pieces of 15, 7 and 3 days.
        let series = source.range("q", 0, 29 * day, day, 30 * day).await.unwrap();
        assert_eq!(series.len(), 1);
        let times: Vec<i64> = series[0].1.iter().map(|p| p.0).collect();
        assert_eq!(times, (0..30).map(|d| d * day).collect::<Vec<_>>());
        assert!(series[0].1.iter().all(|&(t, v)| v == (t / 1000) as f64));
        // 30 → 15 → 7 refused twice; then 7 + 7 + 7 + 7 + 2 answered.
        assert_eq!(source.stats().queries, 2 + 5);

        let strict = Source::new(&store(0).await, Duration::from_secs(10), None).unwrap();
        let refused = strict.range("q", 0, 2 * day, day, 3 * day).await;
        assert!(
            matches!(&refused, Err(Error::QueryFailed { message, .. }) if message.contains(TOO_MANY_SAMPLES)),
            "a single step the store refuses is an error: {refused:?}"
        );
    }
}
