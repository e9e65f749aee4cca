//! Priority handling with a `biased` select: a forwarding task takes encoded requests from two
//! channels — urgent (error traces) and bulk — and always drains the urgent one first, while
//! respecting the pipeline's backpressure (`Full { retry_after }`) without dropping anything.
//!
//! This is the shape of a relay's intake: the pipeline never blocks the async task; the task
//! waits asynchronously when the memory budget says so.
//!
//! `cargo run -p spanflow --example priority`

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use spanflow::export::OtlpGrpcExporter;
use spanflow::otlp::{Encoder, TraceRequest};
use spanflow::{Pipeline, SubmitError};
use tokio::sync::mpsc;

const REQUESTS_PER_CLASS: u64 = 200;
const SPANS_PER_REQUEST: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Urgent,
    Bulk,
}

/// Submits `request`, waiting asynchronously while the pipeline is full; false if closed (or
/// the request could never fit).
async fn submit(pipeline: &Pipeline, mut request: TraceRequest) -> bool {
    loop {
        match pipeline.try_submit(request) {
            Ok(()) => return true,
            Err(SubmitError::Full {
                request: back,
                retry_after,
            }) => {
                request = back;
                tokio::time::sleep(retry_after).await;
            }
            Err(SubmitError::Closed { .. } | SubmitError::TooLarge { .. }) => return false,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sink = common::Sink::start();
    let exporter = OtlpGrpcExporter::builder()
        .endpoint(sink.endpoint())
        .build()?;
    let pipeline = Pipeline::builder()
        .exporter("collector", exporter)
        .build()?;

    // Both queues are full before the forwarder starts, so the order it submits in shows the
    // priority: every urgent request goes before any bulk one.
    let (urgent_tx, mut urgent) = mpsc::channel::<TraceRequest>(REQUESTS_PER_CLASS as usize);
    let (bulk_tx, mut bulk) = mpsc::channel::<TraceRequest>(REQUESTS_PER_CLASS as usize);
    let mut encoder = Encoder::new();
    let resource = spanflow::otlp::testing::resource();
    let mut total_spans = 0u64;
    for seed in 0..REQUESTS_PER_CLASS {
        for tx in [&urgent_tx, &bulk_tx] {
            let request = encoder.encode(
                &spanflow::otlp::testing::span_batch(SPANS_PER_REQUEST, seed),
                &resource,
            );
            total_spans += request.span_count() as u64;
            tx.send(request).await?;
        }
    }
    drop((urgent_tx, bulk_tx));

    let forwarder = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let mut order = Vec::new();
            loop {
                let (class, request) = tokio::select! {
                    // `biased`: branches are polled top to bottom, so urgent always wins a tie.
                    biased;
                    Some(request) = urgent.recv() => (Class::Urgent, request),
                    Some(request) = bulk.recv() => (Class::Bulk, request),
                    else => break,
                };
                if !submit(&pipeline, request).await {
                    break;
                }
                order.push(class);
            }
            order
        })
    };
    let order = forwarder.await?;

    // `shutdown` blocks this (the runtime's only) thread while the pipeline's own threads and
    // runtime finish the exports: no deadlock, because none of that work needs this runtime.
    let stats = pipeline.shutdown(Duration::from_secs(20))?;
    let first_bulk = order
        .iter()
        .position(|c| *c == Class::Bulk)
        .unwrap_or(order.len());
    let last_urgent = order.iter().rposition(|c| *c == Class::Urgent).unwrap_or(0);
    println!(
        "submitted {} requests: urgent ones first (last urgent at #{last_urgent}, first bulk at #{first_bulk}); \
         exported {} of {total_spans} spans, receiver counted {}",
        order.len(),
        stats.exported,
        sink.spans()
    );
    let ok = last_urgent < first_bulk
        && order.len() as u64 == 2 * REQUESTS_PER_CLASS
        && stats.exported == total_spans
        && sink.spans() == total_spans;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
