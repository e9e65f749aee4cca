//! OTLP/JSON round trips and the specification's example.
#![cfg(all(not(loom), feature = "json"))]

mod common;

use proptest::prelude::*;
use spanflow_otlp::{AnyValueView, Encoder, TraceRequest, json};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn json_round_trips(original in common::request()) {
        let request = TraceRequest::from_proto(&original);
        let text = json::to_json(&request).unwrap();
        let back = json::from_json(&text).unwrap();
        prop_assert_eq!(back.to_proto().unwrap(), original);
    }
}

#[test]
fn encoded_spans_round_trip_through_json() {
    let spans = spanflow_otlp::testing::span_batch(40, 11);
    let request = Encoder::new().encode(&spans, &spanflow_otlp::testing::resource());
    let back = json::from_json(&json::to_json(&request).unwrap()).unwrap();
    assert_eq!(back.as_bytes(), request.as_bytes());
}

/// The example from opentelemetry-proto's `examples/trace.json` (OTLP 1.x).
const SPEC_EXAMPLE: &str = r#"{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          { "key": "service.name", "value": { "stringValue": "my.service" } }
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              { "key": "my.scope.attribute", "value": { "stringValue": "some scope attribute" } }
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": 1544712661000000000,
              "kind": 2,
              "flags": 257,
              "attributes": [
                { "key": "my.span.attr", "value": { "stringValue": "some value" } },
                { "key": "count", "value": { "intValue": "42" } },
                { "key": "ratio", "value": { "doubleValue": 0.5 } },
                { "key": "ok", "value": { "boolValue": true } },
                { "key": "blob", "value": { "bytesValue": "AQID" } },
                { "key": "list", "value": { "arrayValue": { "values": [ { "intValue": 1 }, { "stringValue": "x" } ] } } }
              ],
              "events": [ { "timeUnixNano": "1544712660500000000", "name": "ev" } ],
              "status": { "code": 2, "message": "boom" }
            }
          ]
        }
      ]
    }
  ]
}"#;

#[test]
fn spec_example_decodes_to_the_expected_span() {
    let request = json::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(request.span_count(), 1);
    let span = request.span(0).unwrap();
    assert_eq!(
        hex::encode(span.trace_id()),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(hex::encode(span.span_id()), "eee19b7ec3c1b174");
    assert_eq!(
        span.parent_span_id().map(hex::encode).as_deref(),
        Some("eee19b7ec3c1b173")
    );
    assert_eq!(span.name(), "I'm a server span");
    assert_eq!(span.kind(), 2);
    assert_eq!(span.flags(), 257);
    assert_eq!(span.start_time_unix_nano(), 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano(), 1_544_712_661_000_000_000);
    assert_eq!(span.status_code(), 2);
    assert_eq!(span.status_message(), "boom");
    assert_eq!(span.event_count(), 1);
    assert_eq!(
        span.attribute("my.span.attr"),
        Some(AnyValueView::String("some value"))
    );
    assert_eq!(span.attribute("count"), Some(AnyValueView::Int(42)));
    assert_eq!(span.attribute("ratio"), Some(AnyValueView::Double(0.5)));
    assert_eq!(span.attribute("ok"), Some(AnyValueView::Bool(true)));
    assert_eq!(
        span.attribute("blob"),
        Some(AnyValueView::Bytes(&[1, 2, 3]))
    );
    match span.attribute("list") {
        Some(AnyValueView::Array(a)) => {
            let values: Vec<_> = a.iter().collect();
            assert_eq!(values, [AnyValueView::Int(1), AnyValueView::String("x")]);
        }
        other => panic!("not an array: {other:?}"),
    }
    assert_eq!(span.resource().service_name(), Some("my.service"));
    assert_eq!(span.scope().name(), "my.library");
    assert_eq!(span.scope().version(), "1.0.0");
}

#[test]
fn output_follows_the_json_mapping() {
    let request = json::from_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    let text = String::from_utf8(json::to_json(&request).unwrap()).unwrap();
    for needle in [
        r#""resourceSpans":["#,
        r#""scopeSpans":["#,
        r#""traceId":"5b8efff798038103d269b633813fc60c""#,
        r#""spanId":"eee19b7ec3c1b174""#,
        r#""startTimeUnixNano":"1544712660000000000""#,
        r#""kind":2"#,
        r#""intValue":"42""#,
        r#""bytesValue":"AQID""#,
        r#""code":2"#,
    ] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
}

#[test]
fn malformed_json_is_an_error() {
    assert!(json::from_json(b"{").is_err());
    assert!(
        json::from_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#)
            .is_err()
    );
    assert_eq!(json::from_json(b"{}").unwrap().span_count(), 0);
}
