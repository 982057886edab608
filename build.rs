//! Link step of the `sidekick` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // Relative relocations packed as bitmaps (DT_RELR, glibc 2.36+, GNU ld 2.38+): the
    // position-independent binary's relocation table, read at every start, shrinks from
    // hundreds of KiB to a few. The image is still loaded at a random address. The binary then needs glibc 2.36 or later where it runs (the image's
    // distroless Debian 12 has it). Not for a static glibc build, whose start-up code
    // may predate DT_RELR.
    if target.ends_with("-linux-gnu") && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
