//! Wire decode throughput: samples per second for a 2000-sample remote-write 1.0 request
//! with realistic labels (series captured from a real Prometheus, see tests/fixtures/README.md,
//! repeated for four cells so the request carries 2000 samples).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use strata_wire::protocol::CONTENT_TYPE_V2;
use strata_wire::validate::{self, Validated};
use strata_wire::view::WriteView;
use strata_wire::{Label, WriteRequest, v2};

fn request() -> WriteRequest {
    let body = include_bytes!("../tests/fixtures/prometheus-2.42-rw1-samples.bin");
    let captured = WriteRequest::decode_snappy(body, 1 << 20).expect("fixture decodes");
    let mut req = WriteRequest::default();
    for cell in 0..4 {
        for ts in &captured.timeseries {
            let mut ts = ts.clone();
            for l in &mut ts.labels {
                if l.name == "cell" {
                    *l = Label::new("cell", format!("hz-{cell:02}"));
                }
            }
            req.timeseries.push(ts);
        }
    }
    assert_eq!(req.sample_count(), 2000);
    req
}

fn decode(c: &mut Criterion) {
    let req = request();
    let v1 = req.encode_snappy().expect("encodes");
    let v2 = v2::Request::from_v1(&req).encode_snappy().expect("encodes");
    let mut group = c.benchmark_group("decode_2000_samples");
    group.throughput(Throughput::Elements(2000));
    group.bench_function("rw1_snappy_protobuf", |b| {
        b.iter(|| WriteRequest::decode_snappy(black_box(&v1), 64 << 20).expect("decodes"))
    });
    group.bench_function("rw1_decode_and_validate", |b| {
        b.iter(|| {
            let req = WriteRequest::decode_snappy(black_box(&v1), 64 << 20).expect("decodes");
            Validated::split(req)
        })
    });
    group.bench_function("rw1_zero_copy_view_and_validate", |b| {
        b.iter(|| {
            let (version, raw) =
                validate::decompress_write(None, black_box(&v1), 64 << 20).expect("decompresses");
            WriteView::decode(version, &raw)
                .expect("decodes")
                .validate()
                .accepted_len()
        })
    });
    group.bench_function("rw2_zero_copy_view_and_validate", |b| {
        b.iter(|| {
            let (version, raw) =
                validate::decompress_write(Some(CONTENT_TYPE_V2), black_box(&v2), 64 << 20)
                    .expect("decompresses");
            WriteView::decode(version, &raw)
                .expect("decodes")
                .validate()
                .accepted_len()
        })
    });
    group.bench_function("rw2_snappy_protobuf_to_internal", |b| {
        b.iter(|| v2::Request::decode_snappy_to_v1(black_box(&v2), 64 << 20).expect("decodes"))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
