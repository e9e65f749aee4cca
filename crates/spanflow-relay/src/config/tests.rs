use super::*;
use spanflow::export::SinkConfig;
use spanflow::export::env::OtlpEnv;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn embedded_default_is_valid_and_writes_files_under_the_data_dir() {
    let cfg = RelayConfig::load(None, no_env, &Overrides::default()).expect("valid default");
    assert_eq!(
        cfg.receivers.grpc.endpoint,
        "127.0.0.1:4317".parse().unwrap()
    );
    assert_eq!(
        cfg.receivers.http.endpoint,
        "127.0.0.1:4318".parse().unwrap()
    );
    assert_eq!(cfg.pipeline.exporters.len(), 1);
    let SinkConfig::File(file) = &cfg.pipeline.exporters[0].sink else {
        panic!("default exporter is not a file exporter");
    };
    assert_eq!(
        file.path,
        Path::new("./spanflow-data").join(DEFAULT_DATA_FILE)
    );
    assert_eq!(cfg.pipeline.memory.budget_bytes, DEFAULT_MEMORY_BUDGET);
}

#[test]
fn unknown_key_is_named() {
    let err = RelayConfig::from_toml_str("[receivers.grpc]\nmax_mesage_size = 5\n").unwrap_err();
    assert!(err.to_string().contains("max_mesage_size"), "{err}");
    let err = RelayConfig::from_toml_str("[pipeline.batch]\nmax_spanz = 5\n").unwrap_err();
    assert!(err.to_string().contains("max_spanz"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let err = RelayConfig::from_toml_str("[receivers.http]\nmax_body_size = \"12 parsecs\"\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("max_body_size") && text.contains("parsecs"),
        "{text}"
    );
    let err = RelayConfig::from_toml_str("[pipeline.batch]\nmax_spans = \"many\"\n").unwrap_err();
    assert!(err.to_string().contains("max_spans"), "{err}");
}

#[test]
fn processors_and_fan_out_exporters_are_the_facade_types() {
    let cfg = RelayConfig::from_toml_str(
        r#"
[[pipeline.processors]]
type = "probabilistic_sampler"
ratio = 0.5

[[pipeline.exporters]]
name = "collector"
sink = { type = "otlp", protocol = "grpc", endpoint = "http://127.0.0.1:4317" }

[[pipeline.exporters]]
name = "spill"
role = "fallback"
sink = { type = "file", path = "spill/spans.jsonl" }

[[pipeline.exporters]]
name = "debug"
sink = { type = "stdout" }
"#,
    );
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.pipeline.processors.len(), 1);
    assert_eq!(cfg.pipeline.exporters.len(), 3);
    assert_eq!(
        cfg.pipeline.exporters[1].role,
        spanflow::BackendRole::Fallback
    );
}

#[test]
fn precedence_is_cli_then_env_then_file() {
    let dir = std::env::temp_dir().join(format!("spanflow-relay-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        "[receivers.grpc]\nendpoint = \"127.0.0.1:1000\"\n[receivers.http]\nendpoint = \"127.0.0.1:2000\"\n[telemetry]\nmetrics_endpoint = \"127.0.0.1:3000\"\n[pipeline.batch]\nmax_spans = 10\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        "SPANFLOW_HTTP_ENDPOINT" => Some("127.0.0.1:2001".to_owned()),
        "SPANFLOW_METRICS_ENDPOINT" => Some("127.0.0.1:3001".to_owned()),
        "SPANFLOW_BATCH_MAX_SPANS" => Some("20".to_owned()),
        _ => None,
    };
    let cli = Overrides {
        metrics_endpoint: Some("127.0.0.1:3002".parse().unwrap()),
        ..Overrides::default()
    };
    let cfg = RelayConfig::load(Some(&file), env, &cli).unwrap();
    assert_eq!(cfg.receivers.grpc.endpoint.port(), 1000);
    assert_eq!(cfg.receivers.http.endpoint.port(), 2001);
    assert_eq!(cfg.telemetry.metrics_endpoint.port(), 3002);
    assert_eq!(cfg.pipeline.batch.max_spans, 20);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_env_value_names_the_variable() {
    let env = |k: &str| (k == "SPANFLOW_MEMORY_BUDGET").then(|| "lots".to_owned());
    let err = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("SPANFLOW_MEMORY_BUDGET"), "{err}");
    let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "carrier-pigeon".to_owned());
    let err = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
    assert!(
        err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
        "{err}"
    );
}

#[test]
fn otel_env_turns_the_default_exporter_into_otlp() {
    let env = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_owned()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_owned()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=s3cret, x=y".to_owned()),
        _ => None,
    };
    let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
    let SinkConfig::Otlp(e) = &cfg.pipeline.exporters[0].sink else {
        panic!("default exporter is not otlp");
    };
    assert_eq!(
        e.endpoint.as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(e.headers.get("api-key").map(String::as_str), Some("s3cret"));
}

#[test]
fn otel_env_reaches_the_sink_through_the_shared_parser() {
    let env = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("collector:4317".to_owned()),
        "OTEL_EXPORTER_OTLP_INSECURE" => Some("true".to_owned()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("a=1,b=2".to_owned()),
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => Some("b=3".to_owned()),
        "OTEL_EXPORTER_OTLP_COMPRESSION" => Some("zstd".to_owned()),
        "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("1500".to_owned()),
        "OTEL_EXPORTER_OTLP_CERTIFICATE" => Some("/etc/ca.pem".to_owned()),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => Some("/etc/client.pem".to_owned()),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY" => Some("/etc/client.key".to_owned()),
        // The relay is not an SDK: these are not its business.
        "OTEL_SDK_DISABLED" => Some("true".to_owned()),
        "OTEL_TRACES_EXPORTER" => Some("none".to_owned()),
        _ => None,
    };
    let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
    let SinkConfig::Otlp(e) = &cfg.pipeline.exporters[0].sink else {
        panic!("default exporter is not otlp");
    };
    let shared = OtlpEnv::from_env(env).unwrap().exporter_config();
    assert_eq!(e, &shared);
    assert_eq!(e.endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(e.compression, spanflow::export::Compression::Zstd);
    assert_eq!(e.headers.get("b").map(String::as_str), Some("3"));
    assert_eq!(e.timeout, Duration::from_millis(1500));
    assert!(e.client_key.is_some() && e.ca_file.is_some());
}

/// The relay, the facade and the shared parser say the same thing about the same bad value.
#[test]
fn bad_otel_values_read_as_in_the_facade() {
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "1"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
    ] {
        let env = move |k: &str| (k == name).then(|| value.to_owned());
        let relay = RelayConfig::load(None, env, &Overrides::default()).unwrap_err();
        assert!(matches!(relay, ConfigError::Environment(_)), "{relay:?}");
        let facade = spanflow::Pipeline::builder()
            .from_env_with(env)
            .build()
            .unwrap_err();
        let shared = OtlpEnv::from_env(env).unwrap_err();
        assert_eq!(relay.to_string(), shared.to_string());
        assert_eq!(facade.to_string(), shared.to_string());
        assert!(relay.to_string().contains(name), "{relay}");
    }
}

#[test]
fn effective_config_round_trips_through_toml() {
    let cfg = RelayConfig::load(None, no_env, &Overrides::default()).unwrap();
    let text = cfg.to_toml();
    let again = RelayConfig::from_toml_str(&text).unwrap();
    assert_eq!(cfg, again, "{text}");
}

#[test]
fn sizes_and_durations_parse() {
    assert_eq!("4MiB".parse::<ByteSize>(), Ok(ByteSize(4 << 20)));
    assert_eq!("512 KiB".parse::<ByteSize>(), Ok(ByteSize(512 << 10)));
    assert_eq!("100".parse::<ByteSize>(), Ok(ByteSize(100)));
    assert!("4 parsecs".parse::<ByteSize>().is_err());
    assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
    assert_eq!(
        "200ms".parse::<HumanDuration>(),
        Ok(HumanDuration(Duration::from_millis(200)))
    );
    assert_eq!(
        "2m".parse::<HumanDuration>(),
        Ok(HumanDuration(Duration::from_secs(120)))
    );
    assert_eq!(HumanDuration(Duration::from_secs(5)).to_string(), "5s");
}

#[test]
fn printed_config_redacts_exporter_headers() {
    let env = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".to_owned()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=s3cret,authorization=Bearer abc".to_owned()),
        _ => None,
    };
    let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
    let text = cfg.to_toml();
    assert!(!text.contains("s3cret") && !text.contains("abc"), "{text}");
    assert!(
        text.contains("api-key") && text.contains(REDACTED),
        "{text}"
    );
    // The loaded configuration itself keeps the real value.
    let SinkConfig::Otlp(e) = &cfg.pipeline.exporters[0].sink else {
        panic!("default exporter is not otlp");
    };
    assert_eq!(e.headers.get("api-key").map(String::as_str), Some("s3cret"));
}

#[test]
fn receiver_guards_parse_and_are_checked() {
    let cfg = RelayConfig::from_toml_str(
        r#"
[receivers]
header_read_timeout = "2s"
max_connections = 10
[receivers.tls]
cert_file = "server.crt"
key_file = "server.key"
client_ca_file = "clients.crt"
[receivers.auth]
type = "bearer"
file = "tokens"
[telemetry.tls]
cert_file = "m.crt"
key_file = "m.key"
"#,
    )
    .unwrap();
    assert_eq!(cfg.receivers.header_read_timeout.0, Duration::from_secs(2));
    assert_eq!(cfg.receivers.max_connections, 10);
    assert_eq!(cfg.receivers.idle_timeout.0, Duration::from_secs(60));
    let tls = cfg.receivers.tls.as_ref().unwrap();
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(Path::new("clients.crt"))
    );
    assert_eq!(tls.reload_interval.0, Duration::from_secs(60));
    assert_eq!(
        cfg.receivers.auth.as_ref().unwrap().scheme,
        AuthScheme::Bearer
    );
    assert!(cfg.telemetry.tls.is_some());
    let again = RelayConfig::from_toml_str(&cfg.to_toml()).unwrap();
    assert_eq!(cfg, again);

    let err = RelayConfig::from_toml_str("[receivers.auth]\ntype = \"bearer\"\n").unwrap_err();
    assert!(err.to_string().contains("receivers.auth"), "{err}");
    let err = RelayConfig::from_toml_str("[receivers.auth]\ntype = \"digest\"\nfile = \"x\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
    let err = RelayConfig::from_toml_str("[receivers.tls]\ncert_file = \"a\"\nkye_file = \"b\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("kye_file"), "{err}");
    let err = RelayConfig::from_toml_str("[receivers]\nmax_connections = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("receivers.max_connections"),
        "{err}"
    );
}

#[test]
fn budget_smaller_than_a_request_is_refused() {
    let cli = Overrides {
        memory_budget: Some(ByteSize(1 << 20)),
        ..Overrides::default()
    };
    let err = RelayConfig::load(None, no_env, &cli).unwrap_err();
    assert!(err.to_string().contains("budget_bytes"), "{err}");
}

#[test]
fn a_partial_pipeline_table_keeps_every_other_default() {
    let only_exporters = "[[pipeline.exporters]]\nname = \"out\"\nsink = { type = \"stdout\" }\n";
    let only_batch = "[pipeline.batch]\nmax_spans = 100\n";
    for text in [only_exporters, only_batch, "[pipeline]\n", ""] {
        let cfg = RelayConfig::from_toml_str(text).unwrap();
        assert_eq!(
            cfg.pipeline.memory.budget_bytes, DEFAULT_MEMORY_BUDGET,
            "{text:?}"
        );
        assert_eq!(cfg.pipeline.batch.max_age_ms, 200, "{text:?}");
        assert_eq!(cfg.shutdown_timeout.0, DEFAULT_SHUTDOWN_TIMEOUT, "{text:?}");
        assert!(
            cfg.to_toml().contains("budget_bytes = 67108864"),
            "{text:?}"
        );
    }
    let cfg = RelayConfig::from_toml_str(only_batch).unwrap();
    assert_eq!(cfg.pipeline.batch.max_spans, 100);
    assert_eq!(cfg.pipeline.batch.max_bytes, 4 << 20);
    let cfg = RelayConfig::from_toml_str(only_exporters).unwrap();
    assert_eq!(cfg.pipeline.exporters.len(), 1);
    assert_eq!(cfg.pipeline.exporters[0].name, "out");
}

#[test]
fn a_partial_receivers_table_keeps_the_other_keys() {
    let cfg =
        RelayConfig::from_toml_str("[receivers.grpc]\nmax_message_size = \"1MiB\"\n").unwrap();
    assert_eq!(cfg.receivers.grpc.max_message_size, ByteSize(1 << 20));
    assert_eq!(
        cfg.receivers.grpc.endpoint,
        RelayConfig::default().receivers.grpc.endpoint
    );
    assert!(cfg.receivers.http.enabled);
}

#[test]
fn shutdown_timeout_comes_from_file_env_and_flag() {
    let cfg = RelayConfig::from_toml_str("shutdown_timeout = \"5s\"\n").unwrap();
    assert_eq!(cfg.shutdown_timeout.0, Duration::from_secs(5));
    let env = |k: &str| (k == "SPANFLOW_SHUTDOWN_TIMEOUT").then(|| "7s".to_owned());
    let cfg = RelayConfig::load(None, env, &Overrides::default()).unwrap();
    assert_eq!(cfg.shutdown_timeout.0, Duration::from_secs(7));
    let cli = Overrides {
        shutdown_timeout: Some(HumanDuration(Duration::from_secs(9))),
        ..Overrides::default()
    };
    let cfg = RelayConfig::load(None, env, &cli).unwrap();
    assert_eq!(cfg.shutdown_timeout.0, Duration::from_secs(9));
}

#[test]
fn a_kafka_only_relay_is_valid_with_the_feature_and_its_secrets_are_redacted() {
    let text = r#"
[receivers.grpc]
enabled = false
[receivers.http]
enabled = false
[receivers.kafka]
enabled = true
brokers = "10.0.0.1:9092"
group_id = "tier2"
properties = { "sasl.password" = "hunter2", "security.protocol" = "sasl_ssl" }
"#;
    let result = RelayConfig::from_toml_str(text);
    if !cfg!(feature = "kafka") {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("feature `kafka`"), "{err}");
        return;
    }
    let cfg = result.unwrap();
    let k = &cfg.receivers.kafka;
    assert_eq!(
        (k.topic.as_str(), k.group_id.as_str()),
        ("otlp_spans", "tier2")
    );
    assert_eq!(k.commit_interval.0, Duration::from_secs(1));
    let printed = cfg.to_toml();
    assert!(!printed.contains("hunter2") && printed.contains("sasl_ssl"));
    assert!(
        RelayConfig::from_toml_str(&text.replace("group_id = \"tier2\"", "group_id = \"\""))
            .is_err()
    );
}

#[test]
fn the_kafka_receiver_is_off_by_default_and_typos_are_errors() {
    let cfg = RelayConfig::from_toml_str("").unwrap();
    assert!(!cfg.receivers.kafka.enabled);
    assert!(
        RelayConfig::from_toml_str(
            "[receivers.kafka]
topik = \"x\"\n"
        )
        .is_err()
    );
}

#[test]
fn the_printed_config_holds_every_pipeline_default_and_reads_back() {
    let cli = Overrides {
        batch_max_age: Some(HumanDuration(Duration::from_millis(75))),
        ..Overrides::default()
    };
    let cfg = RelayConfig::load(None, no_env, &cli).unwrap();
    let text = cfg.to_toml();
    let defaults = spanflow::PipelineConfig::default();
    for line in [
        format!("max_spans = {}", defaults.batch.max_spans),
        format!("max_bytes = {}", defaults.batch.max_bytes),
        "max_age_ms = 75".to_owned(),
        format!("budget_bytes = {DEFAULT_MEMORY_BUDGET}"),
        format!("concurrency = {}", defaults.export.concurrency),
        format!("timeout_ms = {}", defaults.export.timeout_ms),
        format!("runtime_threads = {}", defaults.export.runtime_threads),
        format!("threads = {}", defaults.processing.threads),
        format!("nice = {}", defaults.processing.nice),
        "free_spans_on = \"application\"".to_owned(),
        "max_wait_ms = 1000".to_owned(),
        "type = \"memory\"".to_owned(),
        format!("name = \"{DEFAULT_EXPORTER_NAME}\""),
    ] {
        assert!(text.contains(&line), "`{line}` missing from\n{text}");
    }
    let again = RelayConfig::from_toml_str(&text).unwrap();
    assert_eq!(again, cfg, "{text}");
    assert_eq!(again.pipeline.batch.max_age_ms, 75);
}
