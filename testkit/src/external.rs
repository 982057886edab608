//! External programs that tests use as real clients or oracles (`curl`, `promtool`).

use std::path::PathBuf;

/// The path of `name` on `PATH`. Missing, it is a failure under CI (`CI` set) and `None`
/// elsewhere, after saying so loudly; `package` is the Debian package that has it.
pub fn binary(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required in CI: apt-get install -y {package}"
        );
        eprintln!("SKIPPING: {name} is not installed (apt-get install -y {package})");
    }
    found
}
