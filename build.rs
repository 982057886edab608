//! Link step of the `sidekick` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // Relative relocations packed as bitmaps (DT_RELR, glibc 2.36+, GNU ld 2.38+): the
    // position-independent binary's relocation table, read at every start, shrinks from
    // about 400 KiB to 8 KiB (idle RSS 0.1-0.15 MiB lower, a 400 KB smaller binary). The
    // image is still loaded at a random address. The binary then needs glibc 2.36 or
    // later where it runs (the image's distroless Debian 12 has it). Not for a static
    // glibc build, whose start-up code may predate DT_RELR.
    if target.ends_with("-linux-gnu") && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    code_layout(&target);
}

/// Functions that run, linked first and together (`layout/record.py` writes the list): the
/// kernel maps code in blocks around each page touched, so code that runs, scattered
/// among code that never does, keeps most of `.text` resident. Measured with the built-in
/// config at idle, 9.2-10.0 MiB RSS without, 6.6-6.9 with; scraping 10k series to
/// remote-write, peaks of 14.5-15.2 MiB without, 11.0-11.7 with (see the README).
///
/// Only for release builds for x86_64 Linux whose linker takes the list (LLD, the default
/// of rustup's Rust 1.90 and later, and mold; GNU ld does not): a one-line program is
/// linked with it first. The names carry hashes of the compiler, the dependencies and the
/// profile; names the binary no longer has are skipped, so a stale list costs nothing but
/// its benefit, and a build with another compiler than the list's says so.
/// `SIDEKICK_CODE_LAYOUT=off` leaves the linker's own order.
fn code_layout(target: &str) {
    let order = "layout/x86_64-unknown-linux-gnu.order";
    println!("cargo:rerun-if-changed={order}");
    println!("cargo:rerun-if-env-changed=SIDEKICK_CODE_LAYOUT");
    let off = std::env::var("SIDEKICK_CODE_LAYOUT").is_ok_and(|v| v == "off");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if off || !release || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = std::path::Path::new(&dir).join(order);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let args = [
        format!("-Wl,--symbol-ordering-file={}", path.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if !links_with(target, &args) {
        println!("cargo:warning=the linker does not take {order} (LLD or mold does): the binary keeps the linker's own code layout (about 3 MiB more RSS)");
        return;
    }
    // The list's header names the compiler it was recorded with: "# rustc 1.95.0 (...)".
    let recorded = text
        .lines()
        .find_map(|l| l.strip_prefix("# rustc "))
        .and_then(|v| v.split_whitespace().next());
    let version = rustc_version();
    let current = version.split_whitespace().nth(1);
    if recorded != current {
        println!(
            "cargo:warning={order} was recorded with rustc {}, this is {}: its function names will not match and the binary keeps the linker's own code layout (about 3 MiB more RSS); run layout/record.py to record it again",
            recorded.unwrap_or("(unknown)"),
            current.unwrap_or("(unknown)")
        );
    }
    for arg in args {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

/// `rustc -V`: "rustc 1.95.0 (59807616e 2026-04-14)".
fn rustc_version() -> String {
    std::process::Command::new(rustc())
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether a one-line program links for `target` with these linker arguments, with the
/// build's own flags and linker.
fn links_with(target: &str, link_args: &[String]) -> bool {
    let Ok(out) = std::env::var("OUT_DIR") else {
        return false;
    };
    let out = std::path::Path::new(&out);
    let source = out.join("layout_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let mut cmd = std::process::Command::new(rustc());
    cmd.arg("--crate-name=layout_probe")
        .arg("--edition=2021")
        .arg(format!("--target={target}"))
        .arg("-o")
        .arg(out.join("layout_probe"))
        .arg(&source);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    for arg in link_args {
        cmd.arg(format!("-Clink-arg={arg}"));
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
