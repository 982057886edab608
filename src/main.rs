//! `sidekick`: a small, fast OpenTelemetry agent for a Kubernetes Pod.
//!
//! ```text
//! sidekick                          run the built-in config
//! sidekick --config FILE            run FILE (SIGHUP reloads it; --watch-config: on change)
//! sidekick validate --config FILE   check FILE and exit
//! sidekick components               list the component kinds
//! sidekick default-config           print the built-in config
//! ```
//!
//! Exit codes: 0 clean stop, 1 bad config or startup failure, 3 stopped but some
//! accepted data was dropped (counted in the `otelcol_exporter_send_failed_*` metrics),
//! 4 stopped with nothing dropped but undelivered data kept in a persistent queue for
//! the next start.

use std::process::ExitCode;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use reload::Event;
use sidekick::{plan, registry, DEFAULT_CONFIG};
use sidekick_collector::component::Registry;
use sidekick_collector::topology::Plan;
use sidekick_collector::{logging, telemetry::Telemetry};
use tokio::sync::mpsc;

mod reload;

const USAGE: &str = "\
Sidekick: an OpenTelemetry agent for a Kubernetes Pod.

Usage:
  sidekick [--config FILE]            run (with the built-in config when no FILE)
           [--watch-config]           and reload FILE when it changes (also on SIGHUP)
           [--reload-endpoint]        and on POST /-/reload on the admin listener
  sidekick validate [--config FILE]   check a config and exit
  sidekick components                 list the component kinds
  sidekick default-config             print the built-in config
  sidekick --help | --version

The config is YAML in the OpenTelemetry Collector's shape; ${env:VAR} and
${env:VAR:-default} are expanded. Self-metrics and health: http://0.0.0.0:8888
(/metrics, /healthz, /readyz) unless service.telemetry.metrics says otherwise.
";

enum Command {
    /// The config file, if any, and how it may be reloaded.
    Run(Option<String>, Reloads),
    Validate(Option<String>),
    Components,
    DefaultConfig,
    Help,
    Version,
}

fn parse_args(args: &[String]) -> anyhow::Result<Command> {
    let mut config = None;
    let mut sub = None;
    let mut reloads = Reloads::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "-V" | "--version" | "version" => return Ok(Command::Version),
            "--config" | "-c" => {
                i += 1;
                let file = args
                    .get(i)
                    .with_context(|| format!("{a} needs a file name"))?;
                if config.replace(file.clone()).is_some() {
                    bail!("--config given twice; Sidekick reads one config file");
                }
            }
            _ if a.starts_with("--config=") => {
                if config.replace(a["--config=".len()..].to_string()).is_some() {
                    bail!("--config given twice; Sidekick reads one config file");
                }
            }
            "--watch-config" => reloads.watch = true,
            "--reload-endpoint" => reloads.endpoint = true,
            "validate" | "components" | "default-config" if sub.is_none() => sub = Some(a),
            _ => bail!("unexpected argument \"{a}\"\n\n{USAGE}"),
        }
        i += 1;
    }
    Ok(match sub {
        None if (reloads.watch || reloads.endpoint) && config.is_none() => {
            bail!("--watch-config and --reload-endpoint need --config FILE: the built-in config does not change")
        }
        None => Command::Run(config, reloads),
        Some("validate") => Command::Validate(config),
        Some("components") => Command::Components,
        _ => Command::DefaultConfig,
    })
}

/// The config text and a name for messages.
fn read_config(file: &Option<String>) -> anyhow::Result<(String, String)> {
    match file {
        None => Ok((DEFAULT_CONFIG.to_string(), "<built-in config>".to_string())),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {path}"))?;
            Ok((text, path.clone()))
        }
    }
}

/// The variable that sets how many threads serve the async work.
const WORKER_THREADS: &str = "SIDEKICK_WORKER_THREADS";

/// Threads for the async work (receiving, batching, sending): one unless
/// `SIDEKICK_WORKER_THREADS` asks for more. One thread serves far more than one app
/// sends, at less CPU per span than two (no thread is woken only to find the work taken;
/// BENCHMARKS.md), and keeps Sidekick within a core of the Pod's CPU however busy the
/// app gets. Long work (compressing, parsing, encoding or splitting large batches) hands
/// its other tasks to another thread meanwhile (`off_worker`); persistent queues sync to
/// disk on tokio's blocking pool.
fn worker_threads(value: Option<&str>) -> anyhow::Result<usize> {
    let Some(value) = value else { return Ok(1) };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => anyhow::bail!(
            "{WORKER_THREADS}=\"{value}\" is not a thread count: write a whole number from 1 to 1024, e.g. {WORKER_THREADS}=2"
        ),
    }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// jemalloc with a background thread returns freed memory to the OS (see
/// `.cargo/config.toml`): after a burst, or thousands of connections that came and went,
/// RSS falls back near idle instead of staying at its peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sidekick: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let registry = registry();
    match parse_args(args)? {
        Command::Help => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("sidekick {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Components => {
            for (section, kinds) in [
                (
                    "receivers",
                    registry.receivers.keys().copied().collect::<Vec<_>>(),
                ),
                ("processors", registry.processors.keys().copied().collect()),
                ("exporters", registry.exporters.keys().copied().collect()),
                ("extensions", registry.extensions.keys().copied().collect()),
            ] {
                println!("{section}: {}", kinds.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(file) => {
            let (text, name) = read_config(&file)?;
            match plan(&text, &name, &registry, &env_lookup) {
                Ok(p) => {
                    for w in &p.warnings {
                        eprintln!("{name}: warning: {w}");
                    }
                    println!("{name}: config is valid");
                    Ok(ExitCode::SUCCESS)
                }
                Err(report) => {
                    eprintln!("{report}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Run(file, reloads) => {
            let (text, name) = read_config(&file)?;
            let plan = match plan(&text, &name, &registry, &env_lookup) {
                Ok(p) => p,
                Err(report) => {
                    eprintln!("{report}");
                    return Ok(ExitCode::from(1));
                }
            };
            let source = Source {
                path: file.map(PathBuf::from),
                name,
                text,
                reloads,
            };
            serve(plan, source, &registry)
        }
    }
}

/// The config file a running Sidekick was started with.
struct Source {
    /// `None`: the built-in config, which cannot change.
    path: Option<PathBuf>,
    name: String,
    /// The running config's text.
    text: String,
    reloads: Reloads,
}

/// What reloads the config file besides SIGHUP.
#[derive(Default)]
struct Reloads {
    /// A change of the file (`--watch-config`).
    watch: bool,
    /// `POST /-/reload` on the admin listener (`--reload-endpoint`).
    endpoint: bool,
}

fn serve(first: Plan, mut source: Source, registry: &Registry) -> anyhow::Result<ExitCode> {
    logging::init(&first.telemetry.logs);
    // Every TLS client uses ring; installing it once keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Connections are capped per listener from the open-file limit; take the hard
    // limit the Pod allows instead of the low default soft one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit raised"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(env_lookup(WORKER_THREADS).as_deref())?)
        .enable_all()
        .thread_name("sidekick")
        .build()
        .context("cannot start the async runtime")?;
    let reloads = source.path.is_some();
    if reloads {
        sidekick_transport::server::keep_listeners_for_reloads();
    }
    let run = runtime.block_on(async {
        let (events, mut rx) = mpsc::unbounded_channel();
        reload::signals(&events, reloads);
        if let (true, Some(path)) = (source.reloads.watch, &source.path) {
            reload::watch(path.clone(), source.text.clone(), events.clone());
        }
        let stats = Arc::new(reload::Stats::default());
        let endpoint: Option<sidekick_collector::admin::Reload> =
            source.reloads.endpoint.then(|| {
                let events = events.clone();
                Arc::new(move || {
                    let _ = events.send(Event::Reload("POST /-/reload"));
                }) as sidekick_collector::admin::Reload
            });
        let mut running = start(first, &mut source, registry, &stats, &endpoint, None)?;
        let mut dropped = 0;
        loop {
            let Some((plan, previous)) = next_event(&mut rx, &mut source, registry, &stats).await
            else {
                let outcome = running.stop().await;
                return Ok::<_, sidekick_collector::component::BuildError>((
                    dropped + outcome.dropped,
                    outcome.kept,
                ));
            };
            let hash = reload::hash(&source.text);
            if !running.can_reload_in_place(&plan) {
                // A storage directory is held by one generation at a time: the running
                // one drains and stops first, then the new one starts on the same sockets.
                tracing::info!(config = %source.name, hash = %hash, "config reloading: a persistent queue or storage is involved, so every component drains and stops, then the new config starts; listeners keep their sockets");
                dropped += running.stop().await.dropped;
                sidekick_transport::server::offer_kept_listeners();
                running = start(plan, &mut source, registry, &stats, &endpoint, Some(previous))?;
                continue;
            }
            for w in &plan.warnings {
                tracing::warn!(config = %source.name, "{w}");
            }
            let telemetry = Telemetry::new();
            stats.register(&telemetry, &hash);
            match running.reload(plan, telemetry) {
                Ok(done) => {
                    stats.succeeded();
                    tracing::info!(
                        config = %source.name,
                        hash = %hash,
                        kept_receivers = ?done.kept,
                        rebuilt_receivers = ?done.rebuilt,
                        kept_exporters = ?done.kept_exporters,
                        "config reloaded: the new pipelines run; receivers and exporters whose config is unchanged kept running, with their connections and queues; the old pipelines drain in the background"
                    );
                }
                Err(e) => {
                    stats.failed();
                    source.text = previous;
                    tracing::error!(config = %source.name, error = %e, "config reload failed: the new config cannot start; the running config stays");
                }
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let (dropped, kept) = match run {
        Ok(counts) => counts,
        Err(e) => {
            // Logging is set up by now: one line, in the configured format.
            tracing::error!(error = %e, "cannot start");
            return Ok(ExitCode::from(1));
        }
    };
    Ok(if dropped > 0 {
        ExitCode::from(3)
    } else if kept > 0 {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    })
}

/// Builds and starts `plan`. When it cannot start and `previous` (the config text that
/// ran before a reload) is given, that config starts again instead.
fn start(
    mut plan: Plan,
    source: &mut Source,
    registry: &Registry,
    stats: &Arc<reload::Stats>,
    endpoint: &Option<sidekick_collector::admin::Reload>,
    mut previous: Option<String>,
) -> Result<sidekick_collector::topology::Running, sidekick_collector::component::BuildError> {
    loop {
        for w in &plan.warnings {
            tracing::warn!(config = %source.name, "{w}");
        }
        let telemetry = Telemetry::new();
        let hash = reload::hash(&source.text);
        stats.register(&telemetry, &hash);
        let built = plan.build(telemetry);
        let service = match (built, previous.take()) {
            (Ok(service), None) => service,
            (Ok(service), Some(_)) => {
                stats.succeeded();
                service
            }
            (Err(e), None) => return Err(e),
            // It loaded but could not start (a port taken meanwhile, a file gone): the
            // config that ran before starts again.
            (Err(e), Some(old)) => {
                stats.failed();
                // What the new components bound is offered back with the rest.
                sidekick_transport::server::offer_kept_listeners();
                tracing::error!(config = %source.name, error = %e, "config reload failed: the new config cannot start; starting the previous one again");
                plan = sidekick::plan(&old, &source.name, registry, &env_lookup)
                    .map_err(sidekick_collector::component::BuildError::new)?;
                source.text = old;
                continue;
            }
        };
        sidekick_transport::server::close_unclaimed_listeners();
        let service = match endpoint {
            Some(reload) => service.with_reload_endpoint(Arc::clone(reload)),
            None => service,
        };
        tracing::info!(config = %source.name, hash = %hash, version = env!("CARGO_PKG_VERSION"), "starting");
        return Ok(service.start());
    }
}

/// Waits for what ends the running service (`None`: a stop signal) or reloads it: a
/// config that loaded and differs from the running one, with the running config's text
/// (`source` now holds the new text). A reload that fails to load or changes nothing is
/// logged and counted, and the service keeps running.
async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    source: &mut Source,
    registry: &Registry,
    stats: &reload::Stats,
) -> Option<(Plan, String)> {
    loop {
        let trigger = match rx.recv().await {
            Some(Event::Reload(trigger)) => trigger,
            Some(Event::Stop(name)) => {
                tracing::info!(signal = name, "signal received, stopping");
                return None;
            }
            // No handler could be installed: only SIGKILL stops Sidekick then.
            None => std::future::pending().await,
        };
        let Some(path) = &source.path else { continue };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                stats.failed();
                tracing::error!(trigger, config = %source.name, error = %e, "config reload failed: cannot read the file; the running config stays");
                continue;
            }
        };
        if text == source.text {
            stats.unchanged();
            tracing::info!(trigger, config = %source.name, "config unchanged: nothing to reload");
            continue;
        }
        match plan(&text, &source.name, registry, &env_lookup) {
            Ok(p) => {
                tracing::info!(trigger, config = %source.name, hash = %reload::hash(&text), "config reloading");
                let running = std::mem::replace(&mut source.text, text);
                return Some((p, running));
            }
            Err(report) => {
                stats.failed();
                tracing::error!(trigger, config = %source.name, errors = %report, "config reload failed; the running config stays");
            }
        }
    }
}
