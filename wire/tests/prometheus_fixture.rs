//! Decodes remote-write bodies captured from a real Prometheus 2.42 (Debian's package); see
//! tests/fixtures/README.md for how they were made and where the expected numbers come from.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use prost::Message;
use strata_wire::prompb::MetricType;
use strata_wire::{Label, LabelSet, WriteRequest, v2, validate::Validated};

const LIMIT: usize = 32 << 20;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn samples_request_from_prometheus() {
    let req =
        WriteRequest::decode_snappy(&fixture("prometheus-2.42-rw1-samples.bin"), LIMIT).unwrap();
    assert_eq!(req.timeseries.len(), 500);
    assert_eq!(req.sample_count(), 500);
    assert_eq!(req.metadata.len(), 0);
    assert_eq!(
        req.timeseries.iter().map(|t| t.labels.len()).sum::<usize>(),
        2890
    );
    let first = &req.timeseries[0];
    assert_eq!(
        first.labels,
        vec![
            Label::new("__name__", "prometheus_http_response_size_bytes_bucket"),
            Label::new("cell", "test-cell"),
            Label::new("handler", "/metrics"),
            Label::new("instance", "127.0.0.1:19312"),
            Label::new("job", "prometheus"),
            Label::new("le", "100"),
            Label::new("region", "test-region"),
        ]
    );
    assert_eq!(first.samples[0].value, 0.0);
    assert_eq!(first.samples[0].timestamp, 1_795_266_749_437);
    assert_eq!(req.timeseries[2].samples[0].value, 8.0);
    let last = &req.timeseries[499];
    assert_eq!(
        LabelSet::new(last.labels.clone()).unwrap().metric_name(),
        "node_netstat_UdpLite_InErrors"
    );
    assert_eq!(last.samples[0].timestamp, 1_795_266_749_733);
    let nans = req
        .timeseries
        .iter()
        .filter(|t| t.samples[0].value.is_nan())
        .count();
    assert_eq!(nans, 14);
    assert!(
        req.timeseries
            .iter()
            .all(|t| !strata_wire::is_stale_nan(t.samples[0].value))
    );

    // Every series Prometheus sends is valid and already sorted.
    // (Compared as encoded bytes: the NaN samples make `==` false.)
    let v = Validated::split(req.clone());
    assert!(v.rejected.is_empty(), "{:?}", v.rejection_message());
    assert_eq!(v.accepted.encode_to_vec(), req.encode_to_vec());

    // Re-encoding as 2.0 and decoding again gives the same series.
    let body = v2::Request::from_v1(&req).encode_snappy().unwrap();
    let back = v2::Request::decode_snappy_to_v1(&body, LIMIT).unwrap();
    assert_eq!(back.encode_to_vec(), req.encode_to_vec());
}

#[test]
fn metadata_request_from_prometheus() {
    let req =
        WriteRequest::decode_snappy(&fixture("prometheus-2.42-rw1-metadata.bin"), LIMIT).unwrap();
    assert_eq!(req.timeseries.len(), 0);
    assert_eq!(req.metadata.len(), 449);
    let count = |t: MetricType| req.metadata.iter().filter(|m| m.r#type == t as i32).count();
    assert_eq!(count(MetricType::Gauge), 227);
    assert_eq!(count(MetricType::Counter), 157);
    assert_eq!(count(MetricType::Unknown), 47);
    assert_eq!(count(MetricType::Summary), 10);
    assert_eq!(count(MetricType::Histogram), 8);
    assert_eq!(
        req.metadata[0].metric_family_name,
        "prometheus_target_scrapes_exceeded_sample_limit_total"
    );
    assert_eq!(
        req.metadata[0].help,
        "Total number of scrapes that hit the sample limit and were rejected."
    );
    assert_eq!(
        req.metadata[448].metric_family_name,
        "node_timex_loop_time_constant"
    );
}

#[test]
fn truncated_bodies_are_errors() {
    let body = fixture("prometheus-2.42-rw1-samples.bin");
    for cut in [1, 10, body.len() / 2, body.len() - 1] {
        assert!(
            WriteRequest::decode_snappy(&body[..cut], LIMIT).is_err(),
            "cut at {cut}"
        );
    }
    assert!(
        WriteRequest::decode_snappy(&body, 1000)
            .unwrap_err()
            .to_string()
            .contains("exceeds the limit")
    );
}
