//! Rate limiting for repeated log lines.

use std::sync::Mutex;
use std::time::Instant;

/// Lets a repeated log line through at most once per interval, counting the ones it held
/// back, so a backend that rejects every batch produces one line per burst, not a flood.
pub struct LogBurst {
    every: std::time::Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogBurst {
    pub fn new(every: std::time::Duration) -> Self {
        LogBurst {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held_back)` when this occurrence should be logged; `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bursts_are_collapsed() {
        let burst = LogBurst::new(std::time::Duration::from_secs(3600));
        assert_eq!(burst.check(), Some(0));
        assert_eq!(burst.check(), None);
        assert_eq!(burst.check(), None);
        let quick = LogBurst::new(std::time::Duration::ZERO);
        assert_eq!(quick.check(), Some(0));
        assert_eq!(quick.check(), Some(0));
    }
}
