//! Values made from files that Kubernetes may replace in place (mounted Secrets and
//! ConfigMaps): certificates, keys, CA bundles, bearer tokens, htpasswd files. Each is
//! read again when it is next used after a set interval; a change that loads replaces
//! the value, one that does not keeps the old value and is logged once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Turns the bytes of watched files into the value they make.
pub(crate) type Load<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync>;

/// A value made from files that are read again every so often.
pub(crate) struct Watched<T> {
    /// What the files are, for log lines: "TLS files", "token file".
    what: &'static str,
    paths: Vec<String>,
    every: Duration,
    load: Load<T>,
    state: Mutex<WatchState<T>>,
}

struct WatchState<T> {
    checked: Instant,
    files: Vec<Vec<u8>>,
    value: Arc<T>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("paths", &self.paths)
            .finish()
    }
}

impl<T> Watched<T> {
    /// `files` are the bytes `value` was made from, read from `paths` in that order.
    pub(crate) fn new(
        what: &'static str,
        paths: Vec<String>,
        every: Duration,
        files: Vec<Vec<u8>>,
        value: T,
        load: Load<T>,
    ) -> Self {
        Watched {
            what,
            paths,
            every,
            load,
            state: Mutex::new(WatchState {
                checked: Instant::now(),
                files,
                value: Arc::new(value),
            }),
        }
    }

    /// The value, from the files as they are now when it is time to look again.
    pub(crate) fn current(&self) -> Arc<T> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.checked.elapsed() >= self.every {
            s.checked = Instant::now();
            let read: Result<Vec<Vec<u8>>, _> = self.paths.iter().map(std::fs::read).collect();
            match read {
                Ok(files) if files != s.files => {
                    match (self.load)(&files) {
                        Ok(value) => {
                            s.value = Arc::new(value);
                            info!(files = ?self.paths, "{} changed: using the new ones", self.what);
                        }
                        Err(e) => {
                            warn!(files = ?self.paths, error = %e, "{} changed but cannot be used: keeping the previous ones", self.what)
                        }
                    }
                    // Either way, these bytes were seen: no second load or warning.
                    s.files = files;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(files = ?self.paths, error = %e, "cannot read {} again: keeping the previous ones", self.what)
                }
            }
        }
        Arc::clone(&s.value)
    }
}
