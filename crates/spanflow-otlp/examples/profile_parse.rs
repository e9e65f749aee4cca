//! A fixed workload for instruction-count profiling of parsing, e.g.
//! `valgrind --tool=callgrind --toggle-collect='*profile_parse::run*' <binary> read`:
//! parses (and reads or splits) the 512-span bench request a fixed number of times.
//! Modes: `parse`, `read`, `split`, and `prost_read` (prost's decode plus the same reads,
//! the peer of `otlp/read_512`) for comparing instruction counts.
#![allow(missing_docs)]

use std::hint::black_box;

use prost::Message;
use spanflow_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use spanflow_otlp::proto::common::v1::any_value;
use spanflow_otlp::{AnyValueView, Encoder, TraceRequest};

#[inline(never)]
fn run_read(bytes: &bytes::Bytes) -> usize {
    let request = TraceRequest::parse(black_box(bytes).clone()).expect("valid");
    let mut acc = 0usize;
    for span in request.spans() {
        acc = acc.wrapping_add(span.name().len());
        for kv in span.attributes() {
            acc = acc.wrapping_add(kv.key.len()).wrapping_add(match kv.value {
                AnyValueView::String(s) => s.len(),
                AnyValueView::Int(i) => i as usize,
                AnyValueView::Array(a) => a.iter().count(),
                _ => 1,
            });
        }
    }
    acc
}

#[inline(never)]
fn run_prost_read(bytes: &bytes::Bytes) -> usize {
    let request = ExportTraceServiceRequest::decode(&black_box(bytes)[..]).expect("valid");
    let mut acc = 0usize;
    for span in request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        acc = acc.wrapping_add(span.name.len());
        for kv in &span.attributes {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            acc = acc.wrapping_add(kv.key.len()).wrapping_add(match value {
                Some(any_value::Value::StringValue(s)) => s.len(),
                Some(any_value::Value::IntValue(i)) => *i as usize,
                Some(any_value::Value::ArrayValue(a)) => a.values.len(),
                _ => 1,
            });
        }
    }
    acc
}

#[inline(never)]
fn run_parse(bytes: &bytes::Bytes) -> usize {
    TraceRequest::parse(black_box(bytes).clone())
        .expect("valid")
        .span_count()
}

#[inline(never)]
fn run_split(bytes: &bytes::Bytes) -> usize {
    let request = TraceRequest::parse(black_box(bytes).clone()).expect("valid");
    request.split(128, 0).len()
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "read".into());
    let iters: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let spans = spanflow_otlp::testing::span_batch(512, 2024);
    let resource = spanflow_otlp::testing::resource();
    let bytes = Encoder::new().encode(&spans, &resource).into_bytes();
    let mut acc = 0;
    for _ in 0..iters {
        acc += match what.as_str() {
            "parse" => run_parse(&bytes),
            "split" => run_split(&bytes),
            "prost_read" => run_prost_read(&bytes),
            _ => run_read(&bytes),
        };
    }
    println!("{what} x{iters}: {acc} ({} bytes)", bytes.len());
}
