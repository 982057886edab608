//! What ends or reloads a running Sidekick: signals, and changes of the config file.
//!
//! Every signal whose default action would end the process takes the SIGTERM path (drain,
//! then count), except SIGHUP when Sidekick runs a config file: that reloads the file. With
//! `--watch-config`, a change of the file's contents reloads it too; the path is read
//! again each time, so a Kubernetes ConfigMap swapped in place (its `..data` symlink
//! flipped) is seen like any other change.
//!
//! A reload is checked completely before anything stops: a file that cannot be read or
//! does not load leaves the running config as it is (the errors logged with their lines,
//! the failure counted), and an unchanged file rebuilds nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sidekick_collector::telemetry::Telemetry;
use tokio::sync::mpsc;

/// How often a watched config file is read.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a changed file must stay the same before it is loaded: an editor that writes
/// in place is given time to finish (the kubelet swaps files atomically).
const SETTLE: Duration = Duration::from_millis(500);

/// What the running service is told.
pub enum Event {
    /// Stop, because of this signal.
    Stop(&'static str),
    /// Load the config file again, because of this.
    Reload(&'static str),
}

/// Counts of reloads, kept across the services they build.
#[derive(Default)]
pub struct Stats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    unchanged: AtomicU64,
}

impl Stats {
    pub fn succeeded(&self) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unchanged(&self) {
        self.unchanged.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers the reload metrics, and the running config's hash, in a new service's
    /// registry.
    pub fn register(self: &Arc<Self>, telemetry: &Telemetry, hash: &str) {
        const RELOADS: &str = "Config reloads, by result: success (components rebuilt), failure (the running config kept) or unchanged (nothing to do).";
        for (result, read) in [
            ("success", Self::read_succeeded as fn(&Stats) -> u64),
            ("failure", Self::read_failed),
            ("unchanged", Self::read_unchanged),
        ] {
            let stats = Arc::clone(self);
            telemetry.counter_fn(
                "sidekick_config_reloads_total",
                RELOADS,
                &[("result", result)],
                move || read(&stats) as f64,
            );
        }
        let stats = Arc::clone(self);
        telemetry.counter_fn(
            "sidekick_config_reload_failures_total",
            "Config reloads that failed; the running config was kept.",
            &[],
            move || stats.read_failed() as f64,
        );
        telemetry.gauge_fn(
            "sidekick_config_hash",
            "The running config: 1, with the SHA-256 of the file's text as a label.",
            &[("hash", hash)],
            || 1.0,
        );
    }

    fn read_succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    fn read_failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn read_unchanged(&self) -> u64 {
        self.unchanged.load(Ordering::Relaxed)
    }
}

/// The hex SHA-256 of a config's text.
pub fn hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    sidekick_collector::util::hex(digest.as_ref())
}

/// Starts the signal handlers: SIGHUP reloads when `reload_on_hup`, every other ending
/// signal (and SIGHUP otherwise) stops.
pub fn signals(events: &mpsc::UnboundedSender<Event>, reload_on_hup: bool) {
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
    for &(number, name) in ENDING {
        let reload = reload_on_hup && number == libc::SIGHUP;
        match signal(SignalKind::from_raw(number)) {
            Ok(mut stream) => {
                let events = events.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        let event = match reload {
                            true => Event::Reload(name),
                            false => Event::Stop(name),
                        };
                        if events.send(event).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(signal = name, error = %e, "cannot handle the signal"),
        }
    }
}

/// Reads `path` every [`WATCH_INTERVAL`] and asks for a reload when its contents changed
/// and then stayed the same for [`SETTLE`]. A file that cannot be read is retried. (A
/// config file is small: it is read in place, without a blocking thread.)
pub fn watch(path: PathBuf, mut seen: String, events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if text == seen {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            match std::fs::read_to_string(&path) {
                Ok(again) if again == text => {
                    seen = text;
                    if events.send(Event::Reload("config file changed")).is_err() {
                        return;
                    }
                }
                // Still being written: look again at the next tick.
                _ => {}
            }
        }
    });
}
