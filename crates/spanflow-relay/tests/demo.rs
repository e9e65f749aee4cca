//! `demo` runs end to end (as in CI): three simulated services → relay → files, and every span
//! sent is found in the files exactly once.

use std::time::Duration;

use spanflow_relay::tools::demo::{DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exports_every_span_it_sends() {
    let options = DemoOptions {
        duration: Duration::from_secs(2),
        data_dir: None,
        rate: 5_000,
        progress: false,
    };
    let report = run(&options).await.unwrap();
    assert!(report.success(), "{}", report.table());
    assert!(report.load.spans_sent > 0);
    assert!(!report.data_dir.exists(), "temporary data dir left behind");
}
