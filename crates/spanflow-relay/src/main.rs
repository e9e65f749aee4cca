//! The `spanflow-relay` binary: `serve` (the default), `demo`, `load`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use spanflow_relay::PipelineSink;
use spanflow_relay::RunningRelay;
use spanflow_relay::tools::client::Transport;
use spanflow_relay::tools::demo::{self, DemoOptions};
use spanflow_relay::tools::load::{self, LoadOptions, Progress, RetryPolicy};
use spanflow_relay::tools::traffic::AttributeMix;
use spanflow_relay::{ByteSize, HumanDuration, Overrides, RelayConfig};

/// An OTLP relay: receives OTLP/gRPC and OTLP/HTTP, batches, processes and exports with spanflow.
#[derive(Debug, Parser)]
#[command(name = "spanflow-relay", version, about)]
struct Cli {
    /// TOML configuration file (default: the embedded configuration).
    #[arg(long, short, global = true, env = "SPANFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `spanflow_relay=debug` (default: RUST_LOG, then the config).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(flatten)]
    overrides: OverrideArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags that override the configuration file and the environment.
#[derive(Debug, Args, Default)]
struct OverrideArgs {
    /// OTLP/gRPC listen address.
    #[arg(long, global = true)]
    grpc_endpoint: Option<std::net::SocketAddr>,
    /// OTLP/HTTP listen address.
    #[arg(long, global = true)]
    http_endpoint: Option<std::net::SocketAddr>,
    /// `/metrics` and `/healthz` listen address.
    #[arg(long, global = true)]
    metrics_endpoint: Option<std::net::SocketAddr>,
    /// Largest gRPC message, e.g. `4MiB`.
    #[arg(long, global = true)]
    max_message_size: Option<ByteSize>,
    /// Largest HTTP body, e.g. `4MiB`.
    #[arg(long, global = true)]
    max_body_size: Option<ByteSize>,
    /// Memory budget of accepted, not yet exported data, e.g. `64MiB`.
    #[arg(long, global = true)]
    memory_budget: Option<ByteSize>,
    /// Directory of the default file exporter (for `demo`: where the run's directory goes).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Most spans per exported batch.
    #[arg(long, global = true)]
    batch_max_spans: Option<usize>,
    /// Longest a partial batch waits, e.g. `200ms`.
    #[arg(long, global = true)]
    batch_max_age: Option<HumanDuration>,
    /// Longest SIGTERM/SIGINT waits for the flush, e.g. `30s`.
    #[arg(long, global = true)]
    shutdown_timeout: Option<HumanDuration>,
}

impl OverrideArgs {
    fn to_overrides(&self, log_level: Option<String>) -> Overrides {
        Overrides {
            grpc_endpoint: self.grpc_endpoint,
            http_endpoint: self.http_endpoint,
            metrics_endpoint: self.metrics_endpoint,
            grpc_max_message_size: self.max_message_size,
            http_max_body_size: self.max_body_size,
            memory_budget: self.memory_budget,
            data_dir: self.data_dir.clone(),
            log_level,
            batch_max_spans: self.batch_max_spans,
            batch_max_age: self.batch_max_age,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay until SIGINT/SIGTERM (the default).
    Serve,
    /// Validate the configuration and print the effective configuration as TOML.
    CheckConfig,
    /// Run the relay in-process with the default configuration plus three simulated services.
    Demo(DemoArgs),
    /// Send OTLP load to an endpoint and report throughput and latency percentiles.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How long the services send, e.g. `8s`.
    #[arg(long, default_value = "8s")]
    duration: HumanDuration,
    /// Target spans per second over all services (0: as fast as possible).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// No live progress.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Endpoint: `http://host:4317` for gRPC, `http://host:4318` for HTTP.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Protocol.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Transport,
    /// Target spans per second (0: as fast as answers come back).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send, e.g. `10s`.
    #[arg(long, default_value = "10s")]
    duration: HumanDuration,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Spans per request.
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// Attributes per span (strings, ints, doubles, bools in turn).
    #[arg(long, default_value_t = 8)]
    attributes: usize,
    /// Length of string attribute values.
    #[arg(long, default_value_t = 24)]
    string_len: usize,
    /// Gzip request bodies.
    #[arg(long)]
    gzip: bool,
    /// Attempts per request when told to retry (1: never retry).
    #[arg(long, default_value_t = 50)]
    max_attempts: u32,
}

fn init_logs(flag: Option<&str>, config_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match flag {
        Some(f) => EnvFilter::try_new(f),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(config_level)),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spanflow-relay: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<RelayConfig> {
    let overrides = cli.overrides.to_overrides(cli.log_level.clone());
    Ok(RelayConfig::load(
        cli.config.as_deref(),
        |k| std::env::var(k).ok(),
        &overrides,
    )?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spanflow-relay")
        .build()
        .context("cannot start the tokio runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        None | Some(Command::Serve) => {
            let cfg = load_config(&cli)?;
            init_logs(cli.log_level.as_deref(), &cfg.telemetry.log_level);
            runtime()?.block_on(serve(cfg))
        }
        Some(Command::CheckConfig) => {
            let cfg = load_config(&cli)?;
            print!("{}", cfg.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Demo(args)) => {
            init_logs(Some(cli.log_level.as_deref().unwrap_or("warn")), "warn");
            let options = DemoOptions {
                duration: args.duration.0,
                data_dir: cli.overrides.data_dir.clone(),
                rate: args.rate,
                progress: !args.no_progress,
            };
            let report = runtime()?.block_on(demo::run(&options))?;
            println!("{}", report.table());
            Ok(if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Load(args)) => {
            init_logs(cli.log_level.as_deref(), "warn");
            let options = LoadOptions {
                endpoint: args.endpoint.clone(),
                transport: args.protocol,
                rate: args.rate,
                duration: args.duration.0,
                concurrency: args.concurrency,
                spans_per_request: args.spans_per_request,
                attributes: AttributeMix {
                    count: args.attributes,
                    string_len: args.string_len,
                },
                gzip: args.gzip,
                retry: RetryPolicy {
                    max_attempts: args.max_attempts.max(1),
                    ..RetryPolicy::default()
                },
                timeout: Duration::from_secs(10),
            };
            let report = runtime()?.block_on(load::run(&options, Arc::new(Progress::default())))?;
            print!("{}", report.table());
            Ok(if report.spans_failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(cfg: RelayConfig) -> anyhow::Result<ExitCode> {
    let shutdown_timeout = cfg.shutdown_timeout.0;
    let sink = Arc::new(PipelineSink::build(&cfg.pipeline).context("cannot build the pipeline")?);
    let relay = RunningRelay::start(&cfg, sink).await?;
    tracing::info!(
        "spanflow-relay running; SIGINT or SIGTERM stops it (a second one exits at once)"
    );
    shutdown_signal().await;
    tracing::info!("stopping: refusing new requests, flushing");
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("spanflow-relay: second signal, exiting without flushing");
        std::process::exit(130);
    });
    let stats = relay.shutdown(shutdown_timeout).await;
    println!("spanflow-relay stopped: {stats}");
    Ok(ExitCode::SUCCESS)
}
