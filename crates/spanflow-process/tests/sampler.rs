//! The probabilistic sampler decides exactly as opentelemetry_sdk's
//! `TraceIdRatioBased`, keeps whole traces, and keeps the configured ratio.
#![cfg(not(loom))]

mod common;

use common::*;
use opentelemetry::trace::{SpanKind as OtelKind, TraceId};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use rand::{Rng, SeedableRng};
use spanflow_process::*;

fn sdk_keeps(ratio: f64, id: [u8; 16]) -> bool {
    let result = Sampler::TraceIdRatioBased(ratio).should_sample(
        None,
        TraceId::from_bytes(id),
        "span",
        &OtelKind::Internal,
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

#[test]
fn decisions_equal_the_sdk_trace_id_ratio_based_sampler() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for ratio in [0.0, 1e-9, 0.001, 0.1, 0.25, 0.5, 0.75, 0.999_999, 1.0] {
        let ours = ProbabilisticSampler::new(ratio).expect("valid ratio");
        let mut ids: Vec<[u8; 16]> = (0..20_000)
            .map(|_| rng.random::<u128>().to_be_bytes())
            .collect();
        // Edge ids around the threshold and the extremes.
        let bound = (ratio * (1u64 << 63) as f64) as u64;
        for low in [
            0,
            1,
            u64::MAX,
            bound.saturating_mul(2),
            bound.saturating_mul(2).saturating_sub(1),
            bound.saturating_mul(2) | 1,
        ] {
            let mut id = [7u8; 16];
            id[8..].copy_from_slice(&low.to_be_bytes());
            ids.push(id);
        }
        for id in ids {
            assert_eq!(
                ours.keeps_trace(&id),
                sdk_keeps(ratio, id),
                "ratio {ratio}, id {id:02x?}"
            );
        }
    }
}

#[test]
fn observed_ratio_is_within_tolerance() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = 200_000u32;
    for ratio in [0.01, 0.1, 0.5, 0.9] {
        let s = ProbabilisticSampler::new(ratio).expect("valid ratio");
        let kept = (0..n)
            .filter(|_| s.keeps_trace(&rng.random::<u128>().to_be_bytes()))
            .count() as f64;
        let expected = ratio * f64::from(n);
        // 5 standard deviations of a binomial: flaky with probability ~1e-6.
        let tolerance = 5.0 * (f64::from(n) * ratio * (1.0 - ratio)).sqrt();
        assert!(
            (kept - expected).abs() <= tolerance,
            "ratio {ratio}: kept {kept}, expected {expected}"
        );
    }
}

#[test]
fn a_trace_is_kept_or_dropped_whole_across_batches_and_instances() {
    // 400 traces of 5 spans each, spread round-robin over 10 batches, processed
    // by two independently built samplers (as two processes would).
    let traces: Vec<Vec<u8>> = (0..400u64)
        .map(|t| {
            trace_id(
                t.wrapping_mul(0x9e37_79b9),
                t.wrapping_mul(0xd1b5_4a32_d192_ed03),
            )
        })
        .collect();
    let mut batches: Vec<Vec<_>> = vec![Vec::new(); 10];
    for (t, id) in traces.iter().enumerate() {
        for k in 0..5 {
            batches[(t * 5 + k) % 10].push(span(&format!("t{t}")).trace(id.clone()));
        }
    }
    let a = ProbabilisticSampler::new(0.3).expect("valid");
    let b = ProbabilisticSampler::from_config(&SamplerConfig {
        name: Some("other-process".into()),
        ratio: 0.3,
    })
    .expect("valid");
    let mut kept_spans = std::collections::HashMap::<String, usize>::new();
    for (i, spans) in batches.into_iter().enumerate() {
        let sampler: &dyn Processor = if i % 2 == 0 { &a } else { &b };
        let out = sampler
            .process(request("svc", spans), &Context::sequential())
            .expect("processes");
        for name in names(&out) {
            *kept_spans.entry(name).or_default() += 1;
        }
    }
    assert!(!kept_spans.is_empty() && kept_spans.len() < 400);
    for (trace, count) in &kept_spans {
        assert_eq!(*count, 5, "trace {trace} half kept");
    }
}

#[test]
fn ratio_one_passes_the_batch_through_untouched() {
    let req = realistic_request(100, 3);
    let s = ProbabilisticSampler::new(1.0).expect("valid");
    let out = s
        .process(req.clone(), &Context::sequential())
        .expect("processes");
    assert_eq!(out.as_bytes(), req.as_bytes());
    let none = ProbabilisticSampler::new(0.0).expect("valid");
    let out = none
        .process(req, &Context::sequential())
        .expect("processes");
    assert_eq!(out.span_count(), 0);
}
