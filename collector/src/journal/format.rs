//! The journal on disk: records (`length, crc32, sequence, items, payload`, little
//! endian) in segment files named by their first sequence number, and the `cursor` file
//! with the lowest entry not yet retired and the retired ranges above it. Reading a
//! record checks its framing and checksum; nothing here knows about queues or tasks.

use super::*;

/// A record read back from a segment.
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) items: u32,
    pub(super) payload: Bytes,
    pub(super) len: u64,
}

pub(super) enum ReadOutcome {
    Record(Record),
    /// Nothing (more) in this segment.
    End,
    /// A record that fails its checksum or framing, at this offset.
    Corrupt(String),
    /// The file could not be read (not a fault of the data: try again).
    Io(std::io::Error),
}

pub(super) fn read_record(file: &File, offset: u64, end: u64) -> ReadOutcome {
    if offset >= end {
        return ReadOutcome::End;
    }
    if end - offset < HEADER as u64 {
        return ReadOutcome::Corrupt(format!("a record header cut short at byte {offset}"));
    }
    let mut header = [0u8; HEADER];
    if let Err(e) = file.read_exact_at(&mut header, offset) {
        return ReadOutcome::Io(e);
    }
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let items = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
    if len > MAX_RECORD || offset + HEADER as u64 + len > end {
        return ReadOutcome::Corrupt(format!(
            "a record at byte {offset} runs past the end of the file"
        ));
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = file.read_exact_at(&mut payload, offset + HEADER as u64) {
        return ReadOutcome::Io(e);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..20]);
    h.update(&payload);
    if h.finalize() != crc {
        return ReadOutcome::Corrupt(format!("a record at byte {offset} fails its checksum"));
    }
    ReadOutcome::Record(Record {
        seq,
        items,
        payload: Bytes::from(payload),
        len: HEADER as u64 + len,
    })
}

pub(super) fn segment_name(first: u64) -> String {
    format!("{first:020}.{SEGMENT_EXT}")
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a segment left by a previous run holds.
pub(super) struct Scanned {
    pub(super) segment: Segment,
    pub(super) live_items: u64,
    pub(super) live_bytes: u64,
}

/// Reads a segment left by a previous run: its entries `is_live` says are not yet
/// delivered are live. A damaged record cuts the segment there (counted). An error: the
/// segment cannot be read at all (it is left in place, never deleted as empty).
pub(super) fn scan_segment(
    path: &Path,
    first: u64,
    is_live: &dyn Fn(u64) -> bool,
    recovered: &mut Recovered,
    name: &str,
) -> Result<Scanned, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(cannot)?;
    let end = file.metadata().map_err(cannot)?.len();
    let mut offset = 0;
    let mut next = first;
    let mut items = 0;
    let mut live = 0;
    let mut live_bytes = 0;
    loop {
        match read_record(&file, offset, end) {
            ReadOutcome::Record(r) => {
                if r.seq < next {
                    recovered.corrupt += 1;
                    error!(queue = %name, file = %path.display(), offset, "persistent queue record out of order: cutting the segment there");
                    let _ = file.set_len(offset);
                    break;
                }
                offset += r.len;
                next = r.seq + 1;
                items += r.items as u64;
                if is_live(r.seq) {
                    live += r.items as u64;
                    live_bytes += r.len;
                    recovered.entries += 1;
                    recovered.items += r.items as u64;
                }
            }
            ReadOutcome::End => break,
            ReadOutcome::Io(e) => return Err(cannot(e)),
            ReadOutcome::Corrupt(why) => {
                recovered.corrupt += 1;
                error!(queue = %name, file = %path.display(), error = %why, lost_bytes = end - offset, "persistent queue segment is damaged (a write cut short by a crash, or changed on disk): keeping what is before the damage");
                if let Err(e) = file.set_len(offset) {
                    return Err(format!(
                        "cannot cut the damaged segment {}: {e}",
                        path.display()
                    ));
                }
                break;
            }
        }
    }
    Ok(Scanned {
        segment: Segment {
            first,
            next,
            bytes: offset,
            items,
            path: path.to_path_buf(),
        },
        live_items: live,
        live_bytes,
    })
}

/// Writes `header` and `chunks` with as few system calls as the kernel allows.
pub(super) fn write_all_vectored(
    file: &mut File,
    header: &[u8],
    chunks: &[Bytes],
) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = std::iter::once(header)
        .chain(chunks.iter().map(|c| c.as_ref()))
        .filter(|s| !s.is_empty())
        .map(std::io::IoSlice::new)
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds `from..to` to `ranges`, merged with the ranges it overlaps or touches, so the map
/// stays one entry per run of retired entries.
pub(super) fn insert_range(ranges: &mut BTreeMap<u64, u64>, mut from: u64, mut to: u64) {
    if let Some((&start, &end)) = ranges.range(..=from).next_back() {
        if end >= from {
            from = start;
            to = to.max(end);
            ranges.remove(&start);
        }
    }
    while let Some((&start, &end)) = ranges.range(from..).next() {
        if start > to {
            break;
        }
        to = to.max(end);
        ranges.remove(&start);
    }
    ranges.insert(from, to);
}

/// Whether `seq` is in one of the retired ranges.
pub(super) fn in_ranges(ranges: &BTreeMap<u64, u64>, seq: u64) -> bool {
    ranges
        .range(..=seq)
        .next_back()
        .is_some_and(|(_, &end)| seq < end)
}

/// Retired ranges saved in the cursor beyond this many are left out (they are sent again
/// after a crash; the cursor stays small).
pub(super) const CURSOR_RANGES: usize = 4096;

/// The cursor: `low u64, n u32, n × (from u64, to u64), crc32 u32`. What is below `low`
/// and in the ranges was delivered. A damaged cursor means everything on disk is sent
/// again (duplicates, never loss).
pub(super) fn read_cursor(dir: &Path) -> (u64, BTreeMap<u64, u64>) {
    let path = dir.join("cursor");
    let parse = |b: &[u8]| -> Option<(u64, BTreeMap<u64, u64>)> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let low = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
        let mut ranges = BTreeMap::new();
        for i in 0..n {
            let at = 12 + i * 16;
            let from = u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
            let to = u64::from_le_bytes(body.get(at + 8..at + 16)?.try_into().ok()?);
            if from > low && to > from {
                ranges.insert(from, to);
            }
        }
        Some((low, ranges))
    };
    match std::fs::read(&path) {
        Ok(b) => parse(&b).unwrap_or_else(|| {
            warn!(file = %path.display(), "persistent queue cursor is damaged: sending everything on disk again");
            (0, BTreeMap::new())
        }),
        Err(_) => (0, BTreeMap::new()),
    }
}

pub(super) fn write_cursor(
    dir: &Path,
    low: u64,
    ranges: &BTreeMap<u64, u64>,
    fsync: bool,
) -> std::io::Result<()> {
    let n = ranges.len().min(CURSOR_RANGES);
    let mut b = Vec::with_capacity(16 + n * 16);
    b.extend_from_slice(&low.to_le_bytes());
    b.extend_from_slice(&(n as u32).to_le_bytes());
    for (from, to) in ranges.iter().take(n) {
        b.extend_from_slice(&from.to_le_bytes());
        b.extend_from_slice(&to.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    if fsync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("cursor"))
}
