//! Sidekick's own logs through `tracing`: human-readable text or JSON lines on stderr.

use sidekick_config::document::{LogEncoding, LogLevel, LogsTelemetry};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `SIDEKICK_LOG` (an `EnvFilter` directive such as
/// `debug` or `sidekick_exporters=trace`) overrides the configured level.
pub fn init(config: &LogsTelemetry) {
    let level = match config.level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::try_from_env("SIDEKICK_LOG")
        // Dependencies' debug chatter (h2, hyper) is rarely what a user wants.
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,sidekick={level},sidekick_collector={level},sidekick_receivers={level},sidekick_processors={level},sidekick_exporters={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.encoding {
        LogEncoding::Json => builder.json().flatten_event(true).try_init(),
        LogEncoding::Console => builder.with_ansi(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
