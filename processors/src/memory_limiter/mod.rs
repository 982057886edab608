//! The `memory_limiter` processor: stops taking data while Sidekick's memory (RSS) is
//! above a soft limit, so the queue in front of it fills and receivers refuse new data
//! retryably (gRPC `UNAVAILABLE`, HTTP 503) until memory is back under the limit. Nothing
//! already accepted is dropped.
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
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, FieldError, Processor, ProcessorConfig,
};
use sidekick_collector::config::{Duration, Signal as SignalKind};
use sidekick_collector::payload::Signal;
use sidekick_collector::pipe::{Input, Output};
use sidekick_collector::telemetry::{process_rss_bytes, Counter};
use tracing::{error, info, warn};

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
        Ok(Box::new(MemoryLimiter {
            soft,
            hard,
            check_interval: self.check_interval.get(),
            rss: Arc::new(|| process_rss_bytes().unwrap_or(0)),
            pauses: ctx.telemetry.counter(
                "sidekick_processor_memory_limiter_pauses",
                "Times the memory limiter stopped taking data.",
                &labels,
            ),
        }))
    }
}

pub struct MemoryLimiter {
    soft: u64,
    hard: u64,
    check_interval: std::time::Duration,
    /// Where memory use is read from (the process RSS; replaced in tests).
    rss: Arc<dyn Fn() -> u64 + Send + Sync>,
    pauses: Counter,
}

impl MemoryLimiter {
    #[cfg(test)]
    fn for_test(
        soft: u64,
        check_interval: std::time::Duration,
        rss: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        MemoryLimiter {
            soft,
            hard: soft * 2,
            check_interval,
            rss,
            pauses: Counter::default(),
        }
    }

    /// Waits until memory is under the soft limit.
    async fn wait_for_room(&self) {
        let used = (self.rss)();
        if used <= self.soft {
            return;
        }
        self.pauses.add(1);
        warn!(
            rss_mib = used >> 20,
            soft_limit_mib = self.soft >> 20,
            hard_limit_mib = self.hard >> 20,
            "memory above the soft limit; refusing new data until it falls"
        );
        loop {
            tokio::time::sleep(self.check_interval).await;
            let used = (self.rss)();
            if used <= self.soft {
                info!(
                    rss_mib = used >> 20,
                    "memory back under the soft limit; taking data again"
                );
                return;
            }
        }
    }
}

impl<S: Signal> Processor<S> for MemoryLimiter {
    fn run(self: Box<Self>, mut input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                self.wait_for_room().await;
                let Some(batch) = input.recv().await else {
                    return;
                };
                let n = batch.len();
                if output.send(batch).await.is_err() {
                    error!(dropped_items = n, "next stage has shut down; dropped data");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

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

    #[tokio::test(start_paused = true)]
    async fn holds_data_while_over_the_limit_and_loses_none() {
        let used = Arc::new(AtomicU64::new(500));
        let u = Arc::clone(&used);
        let limiter = MemoryLimiter::for_test(
            100,
            std::time::Duration::from_millis(100),
            Arc::new(move || u.load(Ordering::SeqCst)),
        );
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
}
