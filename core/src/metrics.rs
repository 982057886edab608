//! Self-metric handles: cheap to clone, a relaxed atomic add on the hot path. The
//! collector's telemetry registry hands them out and reads them for its page; a handle
//! made with `Default` counts for nobody (tests, components built without telemetry).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A handle on a count the registry also reads.
    pub fn shared(value: Arc<AtomicU64>) -> Self {
        Counter(value)
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// A handle on a value the registry also reads.
    pub fn shared(value: Arc<AtomicI64>) -> Self {
        Gauge(value)
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
