//! The environment matrix: every OpenTelemetry variable spanflow reads is honoured, an empty
//! value counts as unset, and each one's bad value is an error naming the variable.
//!
//! The facade (`spanflow`) and the relay (`spanflow-relay`) both call this parser; their own
//! tests check that they report the same error for the same bad value.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use spanflow_export::env::{EnvError, OtelEnv, OtlpEnv, TracesExporter};
use spanflow_export::{Compression, ExportBuildError, ExporterConfig, Protocol, SinkConfig};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn otlp(pairs: &[(&str, &str)]) -> ExporterConfig {
    OtlpEnv::from_env(env(pairs))
        .unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
        .exporter_config()
}

fn error(pairs: &[(&str, &str)]) -> EnvError {
    match OtelEnv::from_env(env(pairs)) {
        Ok(ok) => panic!("{pairs:?} was accepted: {ok:?}"),
        Err(e) => e,
    }
}

#[test]
fn no_variables_mean_otlp_grpc_to_the_spec_default() {
    let otel = OtelEnv::from_env(env(&[])).unwrap();
    assert!(!otel.sdk_disabled && !otel.export_disabled());
    assert_eq!(otel.traces_exporters, [TracesExporter::Otlp]);
    let sinks = otel.sinks();
    assert_eq!(sinks.len(), 1);
    let SinkConfig::Otlp(config) = &sinks[0].1 else {
        panic!("{sinks:?}");
    };
    assert_eq!(config, &ExporterConfig::default());
    assert_eq!(config.resolved_endpoint(), "http://localhost:4317");
    let http = otlp(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
    assert_eq!(http.resolved_endpoint(), "http://localhost:4318/v1/traces");
}

#[test]
fn empty_values_count_as_unset() {
    let names = [
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_INSECURE",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    ];
    for blank in ["", "  "] {
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (*n, blank)).collect();
        let otel = OtelEnv::from_env(env(&pairs)).unwrap();
        assert_eq!(otel, OtelEnv::from_env(env(&[])).unwrap(), "{blank:?}");
    }
}

#[test]
fn protocol_is_honoured_and_the_traces_form_wins() {
    for (value, want) in [
        ("grpc", Protocol::Grpc),
        ("http/protobuf", Protocol::HttpProtobuf),
        ("http/json", Protocol::HttpJson),
    ] {
        assert_eq!(
            otlp(&[("OTEL_EXPORTER_OTLP_PROTOCOL", value)]).protocol,
            want
        );
    }
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ]);
    assert_eq!(c.protocol, Protocol::HttpJson);
}

#[test]
fn endpoints_follow_the_spec_path_rules() {
    let grpc = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
    assert_eq!(grpc.resolved_endpoint(), "http://c:4317");
    for base in ["http://c:4318", "http://c:4318/", "https://c/base/"] {
        let http = otlp(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base),
        ]);
        let want = format!("{}/v1/traces", base.trim_end_matches('/'));
        assert_eq!(http.resolved_endpoint(), want);
    }
    // The signal-specific endpoint is used as it is, and wins.
    let both = otlp(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://d:9/custom"),
    ]);
    assert_eq!(both.resolved_endpoint(), "https://d:9/custom");
}

#[test]
fn insecure_decides_the_scheme_of_a_grpc_endpoint_without_one() {
    let endpoint = |pairs: &[(&str, &str)]| otlp(pairs).resolved_endpoint();
    let bare = ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317");
    assert_eq!(endpoint(&[bare]), "https://collector:4317");
    assert_eq!(
        endpoint(&[bare, ("OTEL_EXPORTER_OTLP_INSECURE", "false")]),
        "https://collector:4317"
    );
    assert_eq!(
        endpoint(&[bare, ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE")]),
        "http://collector:4317"
    );
    assert_eq!(
        endpoint(&[
            bare,
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "false"),
        ]),
        "https://collector:4317"
    );
    // A scheme, when given, decides.
    assert_eq!(
        endpoint(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]),
        "https://collector:4317"
    );
}

#[test]
fn headers_merge_and_the_traces_form_wins_per_key() {
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=1, b=2,api-key=x%20y"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=3"),
    ]);
    assert_eq!(c.headers["a"], "1");
    assert_eq!(c.headers["b"], "3");
    assert_eq!(c.headers["api-key"], "x y");
    assert_eq!(c.headers.len(), 3);
}

#[test]
fn compression_is_honoured() {
    for (value, want) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
        ("GZIP", Compression::Gzip),
    ] {
        assert_eq!(
            otlp(&[("OTEL_EXPORTER_OTLP_COMPRESSION", value)]).compression,
            want
        );
    }
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
    ]);
    assert_eq!(c.compression, Compression::Zstd);
}

#[test]
fn timeout_is_milliseconds() {
    let c = otlp(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]);
    assert_eq!(c.timeout, Duration::from_millis(2500));
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
    ]);
    assert_eq!(c.timeout, Duration::from_millis(250));
}

#[test]
fn certificate_and_client_identity_are_honoured() {
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/client.key"),
    ]);
    assert_eq!(c.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(c.client_certificate, Some(PathBuf::from("/etc/client.pem")));
    assert_eq!(c.client_key, Some(PathBuf::from("/etc/client.key")));
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "/etc/traces-ca.pem",
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/etc/t.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/etc/t.key"),
    ]);
    assert_eq!(c.ca_file, Some(PathBuf::from("/etc/traces-ca.pem")));
    assert_eq!(c.client_certificate, Some(PathBuf::from("/etc/t.pem")));
    assert_eq!(c.client_key, Some(PathBuf::from("/etc/t.key")));
}

#[test]
fn a_missing_certificate_file_is_a_build_error_naming_the_path() {
    let c = otlp(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/spanflow-ca.pem",
        ),
    ]);
    let err = c.build().unwrap_err();
    assert!(
        matches!(&err, ExportBuildError::File { path, .. } if path.contains("spanflow-ca.pem"))
    );
}

#[test]
fn sdk_disabled_and_traces_exporter_choose_the_sinks() {
    let sinks = |pairs: &[(&str, &str)]| OtelEnv::from_env(env(pairs)).unwrap().sinks();
    let names = |pairs: &[(&str, &str)]| -> Vec<String> {
        sinks(pairs).into_iter().map(|(name, _)| name).collect()
    };
    assert!(sinks(&[("OTEL_SDK_DISABLED", "true")]).is_empty());
    assert!(
        sinks(&[
            ("OTEL_SDK_DISABLED", "True"),
            ("OTEL_TRACES_EXPORTER", "otlp")
        ])
        .is_empty()
    );
    assert_eq!(names(&[("OTEL_SDK_DISABLED", "false")]), ["otlp"]);
    assert!(sinks(&[("OTEL_TRACES_EXPORTER", "none")]).is_empty());
    assert!(
        OtelEnv::from_env(env(&[("OTEL_TRACES_EXPORTER", "none")]))
            .unwrap()
            .export_disabled()
    );
    assert_eq!(names(&[("OTEL_TRACES_EXPORTER", "otlp")]), ["otlp"]);
    let console = sinks(&[("OTEL_TRACES_EXPORTER", "console")]);
    assert!(matches!(&console[..], [(name, SinkConfig::Stdout)] if name == "console"));
    assert_eq!(names(&[("OTEL_TRACES_EXPORTER", "logging")]), ["console"]);
    assert_eq!(
        names(&[("OTEL_TRACES_EXPORTER", "otlp, console,otlp")]),
        ["otlp", "console"]
    );
}

/// Each variable with a bad value: the error names it and shows the value.
#[test]
fn every_bad_value_is_an_error_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("OTEL_SDK_DISABLED", "yes"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_TRACES_EXPORTER", "none,otlp"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c:21"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://bad host/"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "1"),
        ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "maybe"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "lz4"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1"),
    ];
    for (variable, value) in cases {
        let err = error(&[(variable, value)]);
        assert_eq!(err.variable(), *variable, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(variable) && text.contains(&format!("{value:?}")),
            "{variable}={value}: {text}"
        );
    }
    // An HTTP endpoint needs a scheme (INSECURE applies to gRPC only).
    let err = error(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ]);
    assert_eq!(err.variable(), "OTEL_EXPORTER_OTLP_ENDPOINT");
}

#[test]
fn a_bad_header_is_an_error_that_hides_the_value() {
    for variable in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        for value in ["api-key=ok,s3cret", "=s3cret", "k=s3cret%zz"] {
            let err = error(&[(variable, value)]);
            assert_eq!(err.variable(), variable);
            let text = err.to_string();
            assert!(!text.contains("s3cret"), "{text}");
        }
    }
}

#[test]
fn a_client_key_without_its_certificate_is_an_error() {
    for (set, missing) in [
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ),
    ] {
        let err = error(&[(set, "/etc/x.pem")]);
        assert_eq!(err.variable(), set);
        assert!(err.to_string().contains(missing), "{err}");
    }
}

#[test]
fn exporter_config_from_env_reports_the_same_error() {
    let get = env(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")]);
    let via_config = ExporterConfig::from_env_with(&get).unwrap_err();
    let via_env = OtlpEnv::from_env(&get).unwrap_err();
    assert!(matches!(via_config, ExportBuildError::Environment(_)));
    assert_eq!(via_config.to_string(), via_env.to_string());
}
