//! Link step of the `sidekick` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // Relative relocations packed as bitmaps (DT_RELR, glibc 2.36+, GNU ld 2.38+): the
    // position-independent binary's relocation table, read at every start, shrinks from
    // about 400 KiB to 8 KiB (idle RSS 0.1-0.15 MiB lower, a 400 KB smaller binary). The
    // image is still loaded at a random address. The binary then needs glibc 2.36 or later where it runs (the
    // image's distroless Debian 12 has it). Not for a static glibc build, whose start-up
    // code may predate DT_RELR.
    if target.ends_with("-linux-gnu") && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    code_layout(&target);
}

/// Functions that run, linked first and together (`layout/record.py` writes the list): the
/// kernel maps code in blocks around each page touched, so code that runs, scattered
/// among code that never does, keeps most of `.text` resident. Measured with the built-in
/// config at idle, 10.0 MiB RSS without, 8.1 with; scraping 10k series to remote-write,
/// 15.0-15.2 MiB peak without, 12.1-12.7 with.
///
/// Only for release builds on x86_64 Linux with Rust 1.90 or later, which link with LLD
/// (GNU ld lacks the option). The names carry hashes of the compiler, the dependencies and
/// the profile; names the binary no longer has are skipped, so a stale list costs nothing
/// but its benefit, and a build with another compiler than the list's says so.
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
    let rustc = rustc_version();
    if !links_with_lld(&rustc) {
        return;
    }
    // The list's header names the compiler it was recorded with: "# rustc 1.95.0 (...)".
    let recorded = text
        .lines()
        .find_map(|l| l.strip_prefix("# rustc "))
        .and_then(|v| v.split_whitespace().next());
    let current = rustc.split_whitespace().nth(1);
    if recorded != current {
        println!(
            "cargo:warning={order} was recorded with rustc {}, this is {}: its function names will not match and the binary keeps the linker's own code layout (about 2 MiB more RSS); run layout/record.py to record it again",
            recorded.unwrap_or("(unknown)"),
            current.unwrap_or("(unknown)")
        );
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// `rustc -V`: "rustc 1.95.0 (59807616e 2026-04-14)".
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether rustc links x86_64 Linux binaries with its own LLD: the default from 1.90 on,
/// unless the flags pick another linker.
fn links_with_lld(rustc: &str) -> bool {
    let minor = rustc
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let other_linker = [
        "linker=",
        "linker-features=-lld",
        "link-self-contained=-linker",
        "fuse-ld",
    ]
    .iter()
    .any(|f| flags.contains(f));
    minor.is_some_and(|m| m >= 90) && !other_linker
}
