//! What `check-config` and the logs never print: header values and librdkafka secrets.

/// Whether a librdkafka setting holds a secret (printed as [`REDACTED`]).
fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "token"]
        .iter()
        .any(|s| key.to_ascii_lowercase().contains(s))
}

/// Replaces the secret values of a `properties` table with [`REDACTED`].
pub(super) fn redact_properties(properties: Option<&mut toml::Value>) {
    let Some(table) = properties.and_then(toml::Value::as_table_mut) else {
        return;
    };
    for (key, value) in table.iter_mut() {
        if is_secret_property(key) {
            *value = toml::Value::String(REDACTED.into());
        }
    }
}

/// What [`RelayConfig::to_toml`](super::RelayConfig::to_toml) prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Replaces every `pipeline.exporters[].sink.headers` value with [`REDACTED`].
pub(super) fn redact_exporter_headers(pipeline: &mut toml::Table) {
    let Some(toml::Value::Array(exporters)) = pipeline.get_mut("exporters") else {
        return;
    };
    for exporter in exporters.iter_mut().filter_map(toml::Value::as_table_mut) {
        let Some(sink) = exporter.get_mut("sink").and_then(toml::Value::as_table_mut) else {
            continue;
        };
        let headers = sink.get_mut("headers").and_then(toml::Value::as_table_mut);
        for (_, value) in headers.into_iter().flat_map(|h| h.iter_mut()) {
            *value = toml::Value::String(REDACTED.to_owned());
        }
        // A Kafka sink's librdkafka settings may hold SASL or TLS key passwords.
        redact_properties(sink.get_mut("properties"));
    }
}
