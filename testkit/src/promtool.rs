//! The real Prometheus tools as test oracles: find a binary of the Debian `prometheus`
//! package, and have `promtool check metrics` judge a page.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The path of a binary of the Debian `prometheus` package (`promtool`, `prometheus`) on
/// `PATH`; see [`crate::external::binary`].
pub fn binary(name: &str) -> Option<PathBuf> {
    crate::external::binary(name, "prometheus")
}

/// Runs `promtool check metrics` on `page`: it must pass without a single complaint,
/// lint warnings (a counter without `_total`, a family without help) included.
pub fn check_metrics(promtool: &Path, page: &str) {
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    check
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(page.as_bytes())
        .expect("page written to promtool");
    let out = check.wait_with_output().expect("promtool's answer");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool ({}): {}{}\n{page}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
