#!/usr/bin/env python3
"""Records which code of the release binary runs, and writes the link order that packs it.

Usage (as root, from the repository root, after `cargo build --release`):

    python3 layout/record.py [--binary target/release/sidekick] [--out FILE]

Why: the kernel maps a binary's code in blocks around each page a thread touches (64 KiB
fault-around, whole large folios), so code that runs, scattered among code that never
does, keeps most of the 10 MB `.text` resident. Linked with the functions that run first
and together (build.rs passes this file to the linker), the same work maps far fewer pages.

How: each scenario runs a copy of the binary with its pages evicted from the page cache
and the disk's read-ahead off, so every page of the binary that is mapped was touched. The
present pages (`/proc/PID/pagemap`) are read until the process exits. Every function on a
touched page is picked, and grouped by the scenarios that touched it (see `order`).

The scenarios are `cargo bench --bench e2e`'s (10k-series scrape to remote-write and to
the `prometheus` exporter, OTLP traces, file tailing) and the built-in config at idle with
its endpoints read. Symbol names carry hashes that change with the compiler, the
dependencies and the release profile: run this again after changing any of those (the
script prints how many names of the old file the binary still has).
"""

import argparse
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

SCENARIOS = [
    ["prw", "--series", "10000", "--warmup", "10", "--window", "20", "--prometheus", "/nonexistent"],
    ["exporter", "--series", "10000", "--warmup", "10", "--window", "20", "--prometheus", "/nonexistent"],
    ["traces", "--spans", "10000000"],
    ["filelog"],
]


def load_segments(binary):
    """(file offset, vaddr, file size) of each LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    segs = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
    return segs


def present_pages(pid, binary, segs):
    """ELF virtual addresses of the pages of `binary` mapped in process `pid`."""
    pages = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            f = line.split()
            if len(f) < 6 or f[5] != binary:
                continue
            start, end = (int(x, 16) for x in f[0].split("-"))
            off = int(f[2], 16)
            # Two segments can share the page at a boundary: the one starting on it wins.
            seg = [s for s in segs if s[0] // 4096 * 4096 == off] or [
                s for s in segs if s[0] <= off < s[0] + max(s[2], 1)
            ]
            if not seg:
                continue
            seg_off, seg_vaddr, _ = seg[0]
            for page in range(start, end, 4096):
                pagemap.seek(page // 4096 * 8)
                if struct.unpack("Q", pagemap.read(8))[0] >> 63:
                    pages.add(seg_vaddr + (off - seg_off) + (page - start))
    return pages


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def find_pid(exe, deadline):
    while time.time() < deadline:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.readlink(f"/proc/{pid}/exe") == exe:
                        return int(pid)
                except OSError:
                    pass
        time.sleep(0.05)
    return None


def watch(exe, segs, proc):
    """Pages of `exe` present at any look until it exits (or `proc` ends)."""
    pid = find_pid(exe, time.time() + 120)
    if pid is None:
        raise SystemExit(f"{exe} did not start")
    seen = set()
    while proc.poll() is None:
        try:
            seen |= present_pages(pid, exe, segs)
        except OSError:
            break
        time.sleep(0.3)
    return seen


def record(exe, segs):
    runs = {}
    # Built first, so that a scenario's start is not a compile.
    subprocess.run(["cargo", "bench", "--bench", "e2e", "--no-run"], check=True)
    for scenario in SCENARIOS:
        evict(exe)
        cmd = ["cargo", "bench", "--bench", "e2e", "--", "--binary", exe, "--scenario", *scenario]
        with tempfile.TemporaryFile(mode="w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                pages = watch(exe, segs, proc)
                proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
            if proc.returncode != 0:
                log.seek(0)
                sys.exit(f"{' '.join(cmd)} failed:\n{log.read()}")
        runs[scenario[0]] = pages
        print(f"{scenario[0]}: {len(pages)} pages", flush=True)
    evict(exe)
    idle = subprocess.Popen([exe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        for _ in range(3):
            for url in ["http://127.0.0.1:8888/metrics", "http://127.0.0.1:8888/healthz",
                        "http://127.0.0.1:8889/metrics"]:
                urllib.request.urlopen(url, timeout=5).read()
            time.sleep(1)
        runs["idle"] = present_pages(idle.pid, exe, segs)
        print(f"idle: {len(runs['idle'])} pages", flush=True)
    finally:
        idle.terminate()
        idle.wait()
    return runs


def compiler(binary):
    """The compiler that built `binary`, as `rustc -V` names it (from its .comment section)."""
    out = subprocess.run(["readelf", "-p", ".comment", binary], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "rustc version " in line:
            return "rustc " + line.split("rustc version ", 1)[1].strip()
    sys.exit(f"{binary} does not name the rustc that built it")


def functions(binary):
    """(address, size, name) of every function with a size, by address."""
    out = subprocess.run(["nm", "-n", "-S", "--defined-only", binary],
                         capture_output=True, text=True, check=True).stdout
    funcs = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW" and int(f[1], 16) > 0:
            funcs.append((int(f[0], 16), int(f[1], 16), f[3]))
    return funcs


# Scenarios by weight: each scenario's code is kept together, the first ones' most.
BY_WEIGHT = ["prw", "exporter", "idle", "traces", "filelog"]


def order(funcs, runs):
    """Names of the functions on touched pages, grouped by the scenarios that touched them.

    A function's scenarios are a set of bits, the first scenario the highest. Groups go
    in reflected binary (Gray) code order: the groups with the first scenario are one
    run, those with the second are one run too (across the middle), the third's two,
    and so on. So every page a scenario maps is mostly its own code, not code of others
    that happens to sit between. Within a group, functions keep their address order.
    """
    unweighed = set(runs) - set(BY_WEIGHT)
    if unweighed:
        sys.exit(f"scenarios missing from BY_WEIGHT: {', '.join(sorted(unweighed))}")
    page_bits = {}
    for i, name in enumerate(BY_WEIGHT):
        bit = 1 << (len(BY_WEIGHT) - 1 - i)
        for page in runs.get(name, ()):
            page_bits[page] = page_bits.get(page, 0) | bit

    def rank(bits):
        """Where `bits` comes in the Gray code sequence."""
        n, shift = bits, 1
        while bits >> shift:
            n ^= bits >> shift
            shift += 1
        return n

    picked = {}
    for addr, size, name in funcs:
        bits = 0
        for p in range(addr // 4096, (addr + size - 1) // 4096 + 1):
            bits |= page_bits.get(p * 4096, 0)
        if bits:
            key = (-rank(bits), addr)
            picked[name] = min(picked.get(name, key), key)
    return sorted(picked, key=picked.get)


def read_ahead_file(path):
    """The read-ahead setting of the disk that holds `path`."""
    device = os.stat(path).st_dev
    if os.major(device) == 0:
        sys.exit(f"{path} is not on a disk (tmpfs, overlayfs, btrfs?): pass a --binary on one")
    block = os.path.realpath(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    for queue in (os.path.join(block, "queue"), os.path.join(os.path.dirname(block), "queue")):
        if os.path.exists(os.path.join(queue, "read_ahead_kb")):  # a partition: its disk's
            return os.path.join(queue, "read_ahead_kb")
    sys.exit(f"no read_ahead_kb for {block}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/sidekick")
    ap.add_argument("--out", default="layout/x86_64-unknown-linux-gnu.order")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it turns the disk's read-ahead off while it runs")
    funcs = functions(args.binary)
    names = {n for _, _, n in funcs}
    if os.path.exists(args.out):
        old = [line.strip() for line in open(args.out) if line.strip() and not line.startswith("#")]
        kept = sum(1 for n in old if n in names)
        print(f"{args.out}: {kept} of its {len(old)} names are in {args.binary}")

    # SIGTERM and SIGHUP unwind like Ctrl-C, so that the read-ahead is put back.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit("stopped"))
    work = tempfile.mkdtemp(prefix="sidekick-layout-", dir=os.path.dirname(os.path.abspath(args.binary)))
    try:
        exe = os.path.realpath(os.path.join(work, "sidekick"))
        shutil.copy2(args.binary, exe)
        ra = read_ahead_file(exe)
        saved = open(ra).read().strip()
        print(f"{ra}: {saved}, 0 while recording", flush=True)
        try:
            open(ra, "w").write("0")
            runs = record(exe, load_segments(exe))
        finally:
            open(ra, "w").write(saved)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    picked = order(funcs, runs)
    chosen = set(picked)
    size = sum(s for _, s, n in funcs if n in chosen)
    rustc = compiler(args.binary)
    with open(args.out, "w") as out:
        # build.rs compares this compiler with its own (the linker skips '#' lines).
        out.write("# Code layout of the sidekick release binary, written by layout/record.py.\n")
        out.write(f"# {rustc}\n")
        out.write("\n".join(picked) + "\n")
    print(f"{args.out}: {len(picked)} functions, {size / 2**20:.1f} MiB of code to put first")


if __name__ == "__main__":
    main()
