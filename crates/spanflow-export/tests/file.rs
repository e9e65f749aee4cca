//! File exporter: OTLP/JSON lines, rotated by size.
#![cfg(not(loom))]

mod common;

use std::path::PathBuf;

use spanflow_export::{Exporter, FileExporter, SinkConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spanflow-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spans_in_line(line: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .map(|ss| ss["spans"].as_array().unwrap().len())
        .sum()
}

#[tokio::test]
async fn writes_json_lines_and_rotates_by_size() {
    let dir = temp_dir("rotate");
    let path = dir.join("spans.jsonl");
    let line_len = {
        let e = FileExporter::builder(dir.join("probe")).build().unwrap();
        e.export(common::batch(0, 10)).await.unwrap();
        std::fs::metadata(dir.join("probe")).unwrap().len()
    };
    // Room for about three lines per file; keep two rotated files.
    let e = FileExporter::builder(&path)
        .max_bytes(line_len * 3 + line_len / 2)
        .max_files(2)
        .build()
        .unwrap();
    for i in 0..10 {
        let out = e.export(common::batch(i * 10, 10)).await.unwrap();
        assert_eq!(out.accepted, 10);
    }
    e.shutdown().await.unwrap();
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let current = read(path.clone());
    let one = read(dir.join("spans.jsonl.1"));
    let two = read(dir.join("spans.jsonl.2"));
    assert!(!dir.join("spans.jsonl.3").exists());
    // 10 lines: 3 + 3 + 3 + 1; the oldest file (first 3 lines) was deleted.
    assert_eq!(current.lines().count(), 1);
    assert_eq!(one.lines().count(), 3);
    assert_eq!(two.lines().count(), 3);
    for line in current.lines().chain(one.lines()).chain(two.lines()) {
        assert_eq!(spans_in_line(line), 10);
        assert!(
            line.contains("\"traceId\":\"0707070707070707"),
            "hex ids: {line}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sink_config_builds_a_file_exporter() {
    let dir = temp_dir("config");
    let json = format!(
        r#"{{"type": "file", "path": {:?}, "max_bytes": 1000}}"#,
        dir.join("x.jsonl")
    );
    let config: SinkConfig = serde_json::from_str(&json).unwrap();
    let e = config.build().unwrap();
    assert!(e.name().starts_with("file "));
    std::fs::remove_dir_all(dir).unwrap();
}
