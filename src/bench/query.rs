//! `strata bench query`: repeats one PromQL query against any Prometheus-compatible HTTP API
//! and reports min / median / max latency.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use strata_wire::api::{Envelope, QueryData, Status};

#[derive(Args)]
pub struct QueryArgs {
    /// Base URL of the query API, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    url: String,
    /// PromQL expression.
    #[arg(long)]
    expr: String,
    /// Run a range query over this much history ending now (e.g. 1h); instant query if absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    range: Option<Duration>,
    /// Resolution of a range query.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    step: Duration,
    /// How many times to run the query.
    #[arg(long, default_value_t = 10)]
    repeat: usize,
}

/// What one query took and returned.
pub struct Timed {
    /// From sending the request until its whole body is read.
    pub latency: Duration,
    pub series: usize,
    pub points: usize,
}

/// Runs one query (`path` is `/api/v1/query` or `/api/v1/query_range`) and times it; a failed
/// query is an error carrying Prometheus's error type and message.
pub async fn timed(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let resp = client
        .get(format!("{base}{path}"))
        .query(params)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}; is the server running?"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let latency = started.elapsed();
    let env: Envelope<QueryData> = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{status}: not a Prometheus API response: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if env.status != Status::Success {
        bail!(
            "query failed ({status}, {}): {}",
            env.error_type.map_or("unknown", |t| t.as_str()),
            env.error.unwrap_or_default()
        );
    }
    let (series, points) = match env.data {
        Some(QueryData::Matrix(m)) => (m.len(), m.iter().map(|s| s.values.len()).sum()),
        Some(QueryData::Vector(v)) => (v.len(), v.len()),
        Some(QueryData::Scalar(_) | QueryData::String(_)) => (1, 1),
        None => (0, 0),
    };
    Ok(Timed {
        latency,
        series,
        points,
    })
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if args.step.is_zero() {
        bail!("--step must be positive, e.g. 15s");
    }
    let base = args.url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut latencies = Vec::with_capacity(args.repeat);
    let mut series = 0;
    let mut points = 0;
    for _ in 0..args.repeat {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs_f64();
        let mut params = vec![("query", args.expr.clone())];
        let path = match args.range {
            Some(range) => {
                params.push(("start", format!("{:.3}", now - range.as_secs_f64())));
                params.push(("end", format!("{now:.3}")));
                params.push(("step", format!("{}", args.step.as_secs_f64())));
                "/api/v1/query_range"
            }
            None => {
                params.push(("time", format!("{now:.3}")));
                "/api/v1/query"
            }
        };
        let timed = timed(&client, base, path, &params).await?;
        latencies.push(timed.latency);
        (series, points) = (timed.series, timed.points);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "strata bench query: {} runs of {:?} ({}): {series} series, {points} points",
        args.repeat,
        args.expr,
        match args.range {
            Some(r) => format!(
                "range {} step {}",
                humantime::format_duration(r),
                humantime::format_duration(args.step)
            ),
            None => "instant".into(),
        }
    );
    println!(
        "latency min {:.2} ms   median {:.2} ms   max {:.2} ms",
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    );
    Ok(())
}
