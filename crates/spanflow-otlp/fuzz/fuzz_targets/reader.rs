//! Fuzzes `TraceRequest::parse` and everything built on it (views, select, split, merge,
//! rewrite, JSON) against prost as the oracle for what is valid.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spanflow_otlp::testing::exercise_reader(data);
});
