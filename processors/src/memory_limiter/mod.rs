//! The `memory_limiter` processor: stops taking data while Sidekick holds too much, and
//! receivers refuse new data retryably (gRPC `UNAVAILABLE`, HTTP 503) until there is
//! room again. Nothing already accepted is dropped. Leading its pipeline (where it
//! belongs, as in the Collector) it is asked in the receiver's call, before the data is
//! taken; further down it is a stage that stops reading its queue, which fills until
//! the receivers refuse.
//!
//! It decides from what Sidekick holds, not from RSS alone: every queue, batch buffer
//! and batch being sent counts its encoded bytes in one account, and memory in use is
//! taken as the process's footprint at start plus those bytes. RSS is only a backstop
//! (above the hard limit), and only while data is held downstream — when nothing is
//! held, refusing cannot free anything, so data is always taken (the allocator may keep
//! freed pages, which made an RSS-only limiter refuse forever after a burst). Once
//! under the limit it takes data again within `check_interval`.
//!
//! ```yaml
//! processors:
//!   memory_limiter:
//!     check_interval: 1s
//!     limit_mib: 100
//!     spike_limit_mib: 20
//! ```
//!
//! The soft limit is `limit - spike` (spike defaults to 20% of the limit). With
//! `limit_percentage` / `spike_limit_percentage` the limit is a share of the container's
//! cgroup memory limit. Put it first in a pipeline, as in the OpenTelemetry Collector.

use std::sync::Arc;

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};

use sidekick_collector::component::{
    forward, Admission, BoxFuture, BuildContext, BuildError, FieldError, Processor,
    ProcessorConfig, Sieve,
};
use sidekick_collector::config::{Duration, Signal as SignalKind};
use sidekick_collector::payload::Signal;
use sidekick_collector::pipe::{Input, Output};
use sidekick_collector::process::rss_bytes as process_rss_bytes;
use sidekick_collector::telemetry::Counter;
use tracing::{info, warn};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often memory is checked while over the limit. Default 1s.
    pub check_interval: Duration,
    /// Hard limit in MiB.
    pub limit_mib: Option<u64>,
    /// Headroom below the hard limit where refusing starts. Default 20% of the limit.
    pub spike_limit_mib: Option<u64>,
    /// Hard limit as a percentage of the cgroup memory limit.
    pub limit_percentage: Option<u64>,
    pub spike_limit_percentage: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            check_interval: Duration::from_secs(1),
            limit_mib: None,
            spike_limit_mib: None,
            limit_percentage: None,
            spike_limit_percentage: None,
        }
    }
}

/// The container's memory limit from cgroup v2 or v1, when there is one.
fn cgroup_limit_bytes() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    let n: u64 = text.trim().parse().ok()?;
    // v1 reports "no limit" as a huge number.
    (n < (1 << 60)).then_some(n)
}

impl Config {
    /// (soft limit, hard limit) in bytes.
    fn limits(&self) -> Result<(u64, u64), String> {
        const MIB: u64 = 1 << 20;
        let (hard, spike) = match (self.limit_mib, self.limit_percentage) {
            (Some(l), _) => (
                l * MIB,
                self.spike_limit_mib.map(|s| s * MIB).unwrap_or(l * MIB / 5),
            ),
            (None, Some(p)) => {
                let total = cgroup_limit_bytes()
                    .ok_or("limit_percentage needs a container memory limit (cgroup); none was found, use limit_mib")?;
                let hard = total / 100 * p;
                let spike = self
                    .spike_limit_percentage
                    .map(|s| total / 100 * s)
                    .unwrap_or(hard / 5);
                (hard, spike)
            }
            (None, None) => return Err("set limit_mib (or limit_percentage)".into()),
        };
        if spike >= hard {
            return Err("the spike limit must be below the limit".into());
        }
        Ok((hard - spike, hard))
    }
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.check_interval.is_zero() {
            out.push(FieldError::new(
                "check_interval",
                "must be more than 0, e.g. 1s",
            ));
        }
        if self.limit_percentage.is_some_and(|p| p == 0 || p > 100) {
            out.push(FieldError::new(
                "limit_percentage",
                "must be between 1 and 100",
            ));
        }
        if self.limit_percentage.is_none() {
            if let Err(e) = self.limits() {
                out.push(FieldError::new("limit_mib", e));
            }
        }
        out
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        let (soft, hard) = self.limits().map_err(BuildError::new)?;
        let labels = [("processor", ctx.id.to_string())];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let account = Arc::clone(ctx.telemetry.account());
        Ok(Box::new(MemoryLimiter {
            soft,
            hard,
            check_interval: self.check_interval.get(),
            baseline: process_rss_bytes().unwrap_or(0),
            held: Arc::new(move || account.bytes() as u64),
            rss: read_at_most_every(self.check_interval.get(), || {
                process_rss_bytes().unwrap_or(0)
            }),
            pauses: ctx.telemetry.counter(
                "sidekick_processor_memory_limiter_pauses",
                "Times the memory limiter stopped taking data.",
                &labels,
            ),
        }))
    }
}

/// `read`, called again only once `every` has passed since the last call: RSS costs a
/// read of `/proc`, too much to pay on every request, and the Collector's limiter too
/// looks at memory once per `check_interval`.
fn read_at_most_every(
    every: std::time::Duration,
    read: impl Fn() -> u64 + Send + Sync + 'static,
) -> Arc<dyn Fn() -> u64 + Send + Sync> {
    let last = std::sync::Mutex::new(None::<(tokio::time::Instant, u64)>);
    Arc::new(move || {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some((at, value)) if at.elapsed() < every => value,
            _ => {
                let value = read();
                *last = Some((tokio::time::Instant::now(), value));
                value
            }
        }
    })
}

#[derive(Clone)]
pub struct MemoryLimiter {
    soft: u64,
    hard: u64,
    check_interval: std::time::Duration,
    /// The process's footprint with no data held (RSS when the limiter was built).
    baseline: u64,
    /// Encoded bytes the pipelines hold (the account; replaced in tests).
    held: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The process RSS, the backstop (replaced in tests).
    rss: Arc<dyn Fn() -> u64 + Send + Sync>,
    pauses: Counter,
}

/// Why the limiter is not taking data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    /// Footprint plus held data above the soft limit.
    Held { used: u64 },
    /// RSS above the hard limit while data is held.
    Rss { rss: u64 },
}

impl MemoryLimiter {
    #[cfg(test)]
    fn for_test(
        soft: u64,
        check_interval: std::time::Duration,
        held: Arc<dyn Fn() -> u64 + Send + Sync>,
        rss: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        MemoryLimiter {
            soft,
            hard: soft * 2,
            check_interval,
            baseline: 0,
            held,
            rss,
            pauses: Counter::default(),
        }
    }

    /// Whether to hold off, given the bytes waiting in front of this limiter (which
    /// only it can drain, so they do not count against it).
    fn over(&self, in_front: u64) -> Option<Over> {
        let held = (self.held)().saturating_sub(in_front);
        if held == 0 {
            return None;
        }
        let used = self.baseline + held;
        if used > self.soft {
            return Some(Over::Held { used });
        }
        let rss = (self.rss)();
        (rss > self.hard).then_some(Over::Rss { rss })
    }

    /// Waits until there is room.
    async fn wait_for_room(&self, in_front: impl Fn() -> u64) {
        let Some(over) = self.over(in_front()) else {
            return;
        };
        self.paused(over);
        loop {
            tokio::time::sleep(self.check_interval).await;
            if self.over(in_front()).is_none() {
                self.resumed();
                return;
            }
        }
    }

    /// Counts and logs the start of a pause.
    fn paused(&self, over: Over) {
        self.pauses.add(1);
        match over {
            Over::Held { used } => warn!(
                used_mib = used >> 20,
                soft_limit_mib = self.soft >> 20,
                "data held above the soft memory limit; refusing new data until it is sent"
            ),
            Over::Rss { rss } => warn!(
                rss_mib = rss >> 20,
                hard_limit_mib = self.hard >> 20,
                "process memory above the hard limit; refusing new data until queues drain"
            ),
        }
    }

    fn resumed(&self) {
        info!(
            held_mib = (self.held)() >> 20,
            "memory back under the limit; taking data again"
        );
    }
}

/// The limiter leading its pipeline, asked in the receivers' calls: while it is over,
/// they refuse data retryably.
struct Gate {
    limiter: MemoryLimiter,
    paused: AtomicBool,
}

impl Admission for Gate {
    fn closed(&self) -> Option<std::time::Duration> {
        // Nothing waits in front of an entry: all that is held counts.
        match self.limiter.over(0) {
            None => {
                if self.paused.swap(false, Ordering::Relaxed) {
                    self.limiter.resumed();
                }
                None
            }
            Some(over) => {
                if !self.paused.swap(true, Ordering::Relaxed) {
                    self.limiter.paused(over);
                }
                Some(self.limiter.check_interval)
            }
        }
    }
}

impl<S: Signal> Processor<S> for MemoryLimiter {
    fn into_sieve(self: Box<Self>) -> Result<Box<dyn Sieve<S>>, Box<dyn Processor<S>>> {
        Err(self)
    }

    fn admission(&self) -> Option<Box<dyn Admission>> {
        Some(Box::new(Gate {
            limiter: self.clone(),
            paused: AtomicBool::new(false),
        }))
    }

    fn run(self: Box<Self>, mut input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let queue = &input;
                self.wait_for_room(|| queue.held_bytes() as u64).await;
                let Some((batch, hold)) = input.recv_held().await else {
                    return;
                };
                forward(&output, batch, hold).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use sidekick_collector::payload::TracesSignal;
    use sidekick_testkit::gen::traces;
    use sidekick_testkit::harness::run_processor;

    use super::*;

    #[test]
    fn limits() {
        let c = Config {
            limit_mib: Some(100),
            ..Config::default()
        };
        assert_eq!(c.limits().unwrap(), (80 << 20, 100 << 20));
        let bad = Config {
            limit_mib: Some(10),
            spike_limit_mib: Some(10),
            ..Config::default()
        };
        assert_eq!(
            bad.validate()[0].message,
            "the spike limit must be below the limit"
        );
        assert_eq!(
            Config::default().validate()[0].message,
            "set limit_mib (or limit_percentage)"
        );
    }

    /// A limiter with a 10,000-byte soft limit, checking every 100 ms, holding 50,000
    /// bytes (the returned count: set it to change what is held) and no RSS.
    fn over_its_soft_limit() -> (MemoryLimiter, Arc<AtomicU64>) {
        let used = Arc::new(AtomicU64::new(50_000));
        let u = Arc::clone(&used);
        let limiter = MemoryLimiter::for_test(
            10_000,
            std::time::Duration::from_millis(100),
            Arc::new(move || u.load(Ordering::SeqCst)),
            Arc::new(|| 0),
        );
        (limiter, used)
    }

    #[tokio::test(start_paused = true)]
    async fn holds_data_while_over_the_limit_and_loses_none() {
        let (limiter, used) = over_its_soft_limit();
        let mut h = run_processor::<TracesSignal>(Box::new(limiter));
        h.send(traces(0, 1, 3)).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert!(h.drain().is_empty(), "nothing passes while memory is high");
        used.store(50, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let out = h.drain();
        assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 3);
        h.close().await;
    }

    /// RSS that stays high after a burst (the allocator keeps freed pages) must not stop
    /// the limiter once the data is gone; it holds off only while data is held.
    #[tokio::test(start_paused = true)]
    async fn high_rss_with_nothing_held_does_not_wedge() {
        let held = Arc::new(AtomicU64::new(0));
        let h = Arc::clone(&held);
        let limiter = MemoryLimiter::for_test(
            100,
            std::time::Duration::from_millis(100),
            Arc::new(move || h.load(Ordering::SeqCst)),
            Arc::new(|| 10_000),
        );
        assert_eq!(limiter.over(0), None, "nothing held: take data");
        held.store(10, Ordering::SeqCst);
        assert_eq!(limiter.over(0), Some(Over::Rss { rss: 10_000 }));
        // What waits in front of the limiter is its own to drain: not counted.
        assert_eq!(limiter.over(10), None);
        held.store(150, Ordering::SeqCst);
        assert_eq!(limiter.over(0), Some(Over::Held { used: 150 }));

        let mut h2 = run_processor::<TracesSignal>(Box::new(limiter));
        held.store(0, Ordering::SeqCst);
        h2.send(traces(0, 1, 2)).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(h2.drain().iter().map(|b| b.len()).sum::<usize>(), 2);
        h2.close().await;
    }

    #[test]
    fn leading_its_pipeline_it_closes_the_entry_while_over_and_counts_each_pause_once() {
        let (limiter, used) = over_its_soft_limit();
        let pauses = limiter.pauses.clone();
        let gate = Processor::<TracesSignal>::admission(&limiter).unwrap();
        assert_eq!(gate.closed(), Some(std::time::Duration::from_millis(100)));
        assert!(gate.closed().is_some());
        assert_eq!(pauses.get(), 1, "one pause, however often it is asked");
        used.store(50, Ordering::SeqCst);
        assert_eq!(gate.closed(), None);
        used.store(50_000, Ordering::SeqCst);
        assert!(gate.closed().is_some());
        assert_eq!(pauses.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rss_is_read_at_most_once_per_check_interval() {
        let reads = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&reads);
        let rss = read_at_most_every(std::time::Duration::from_secs(1), move || {
            r.fetch_add(1, Ordering::SeqCst) + 7
        });
        assert_eq!((rss(), rss(), rss()), (7, 7, 7));
        tokio::time::sleep(std::time::Duration::from_millis(1001)).await;
        assert_eq!(rss(), 8);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
