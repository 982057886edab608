//! `sidekick`: a small, fast OpenTelemetry agent for a Kubernetes Pod.
//!
//! ```text
//! sidekick                          run the built-in config
//! sidekick --config FILE            run FILE
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

use anyhow::{bail, Context};
use sidekick::{plan, registry, DEFAULT_CONFIG};
use sidekick_collector::topology::Plan;
use sidekick_collector::{logging, telemetry::Telemetry};

const USAGE: &str = "\
Sidekick: an OpenTelemetry agent for a Kubernetes Pod.

Usage:
  sidekick [--config FILE]            run (with the built-in config when no FILE)
  sidekick validate [--config FILE]   check a config and exit
  sidekick components                 list the component kinds
  sidekick default-config             print the built-in config
  sidekick --help | --version

The config is YAML in the OpenTelemetry Collector's shape; ${env:VAR} and
${env:VAR:-default} are expanded. Self-metrics and health: http://0.0.0.0:8888
(/metrics, /healthz, /readyz) unless service.telemetry.metrics says otherwise.
";

enum Command {
    Run(Option<String>),
    Validate(Option<String>),
    Components,
    DefaultConfig,
    Help,
    Version,
}

fn parse_args(args: &[String]) -> anyhow::Result<Command> {
    let mut config = None;
    let mut sub = None;
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
            "validate" | "components" | "default-config" if sub.is_none() => sub = Some(a),
            _ => bail!("unexpected argument \"{a}\"\n\n{USAGE}"),
        }
        i += 1;
    }
    Ok(match sub {
        None => Command::Run(config),
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
        Command::Run(file) => {
            let (text, name) = read_config(&file)?;
            let plan = match plan(&text, &name, &registry, &env_lookup) {
                Ok(p) => p,
                Err(report) => {
                    eprintln!("{report}");
                    return Ok(ExitCode::from(1));
                }
            };
            serve(plan, &name)
        }
    }
}

fn serve(plan: Plan, name: &str) -> anyhow::Result<ExitCode> {
    logging::init(&plan.telemetry.logs);
    // Every TLS client uses ring; installing it once keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Connections are capped per listener from the open-file limit; take the hard
    // limit the Pod allows instead of the low default soft one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit raised"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    for w in &plan.warnings {
        tracing::warn!(config = %name, "{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sidekick")
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async {
        let service = plan.build(Telemetry::new())?;
        tracing::info!(config = %name, version = env!("CARGO_PKG_VERSION"), "starting");
        Ok::<_, sidekick_collector::component::BuildError>(service.run(shutdown_signal()).await)
    });
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // Logging is set up by now: one line, in the configured format.
            tracing::error!(error = %e, "cannot start");
            return Ok(ExitCode::from(1));
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(if outcome.dropped > 0 {
        ExitCode::from(3)
    } else if outcome.kept > 0 {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on the first signal whose default action would end the process: SIGTERM
/// (Kubernetes stopping the Pod), SIGINT (Ctrl-C), and every other one a person or a tool
/// may send (SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, ...). All of them take the same
/// path: drain, then count what could not be delivered. Only SIGKILL and the faults a
/// program cannot survive (SIGSEGV, SIGBUS, ...) end Sidekick without it.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    const ENDING: &[(libc::c_int, &str)] = &[
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    for &(number, name) in ENDING {
        match signal(SignalKind::from_raw(number)) {
            Ok(mut stream) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if stream.recv().await.is_some() {
                        let _ = tx.send(name);
                    }
                });
            }
            Err(e) => tracing::warn!(signal = name, error = %e, "cannot handle the signal"),
        }
    }
    drop(tx);
    match rx.recv().await {
        Some(name) => tracing::info!(signal = name, "signal received, stopping"),
        // No handler could be installed: only SIGKILL stops Sidekick then.
        None => std::future::pending::<()>().await,
    }
}
