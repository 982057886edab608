//! Just enough protobuf wire format to count, check and split OTLP export requests
//! without decoding them.
//!
//! Every OTLP export request has the same shape: a list of resource messages, each with a
//! list of scope messages, each with a list of items (spans, log records; for metrics one
//! level more: metric → data → data points). A [`Schema`] names the field numbers of
//! those lists, and everything here walks them. Fields outside the lists (resource,
//! scope, schema URLs, metric names) are copied as raw bytes. Checking every field
//! against the OTLP schema is [`super::validate`]'s job, on top of [`Fields`].

use bytes::{BufMut, Bytes};

/// Field numbers, per nesting depth, of the fields that lead toward items. The last
/// depth's fields are the items themselves.
#[derive(Debug)]
pub struct Schema {
    pub levels: &'static [&'static [u32]],
}

pub const TRACES: Schema = Schema {
    // request.resource_spans(1) → scope_spans(2) → spans(2)
    levels: &[&[1], &[2], &[2]],
};

pub const LOGS: Schema = Schema {
    // request.resource_logs(1) → scope_logs(2) → log_records(2)
    levels: &[&[1], &[2], &[2]],
};

pub const METRICS: Schema = Schema {
    // request.resource_metrics(1) → scope_metrics(2) → metrics(2)
    // → gauge(5) | sum(7) | histogram(9) | exponential_histogram(10) | summary(11)
    // → data_points(1)
    levels: &[&[1], &[2], &[2], &[5, 7, 9, 10, 11], &[1]],
};

/// Malformed protobuf, with the byte offset where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {reason}")]
pub struct WireError {
    pub offset: usize,
    pub reason: &'static str,
}

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const FIXED32: u8 = 5;

/// One field of a message: its number, wire type, the byte range of the whole field
/// (tag included) and, for length-delimited fields, of its payload.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub number: u32,
    pub wire_type: u8,
    pub start: usize,
    pub end: usize,
    pub payload_start: usize,
}

/// Iterates the fields of one message, checking that each is well formed.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Fields<'a> {
    /// `base` is the offset of `buf` in the outermost message, for error positions.
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Fields { buf, pos: 0, base }
    }

    fn fail(&self, at: usize, reason: &'static str) -> WireError {
        WireError {
            offset: self.base + at,
            reason,
        }
    }
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    Truncated,
    /// More than ten bytes, or a tenth byte with bits past the 64th: prost refuses these,
    /// so they are refused here too rather than wrapped into a different number.
    TooLong,
}

impl VarintError {
    /// The reason to report, given the one for a varint cut short.
    pub(crate) fn reason(self, truncated: &'static str) -> &'static str {
        match self {
            VarintError::Truncated => truncated,
            VarintError::TooLong => "varint longer than 64 bits",
        }
    }
}

/// Reads one varint at `pos`, moving `pos` past it.
#[inline(always)]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    // Most tags and lengths fit one byte.
    match buf.get(*pos) {
        Some(&byte) if byte < 0x80 => {
            *pos += 1;
            Ok(u64::from(byte))
        }
        _ => read_long_varint(buf, pos),
    }
}

fn read_long_varint(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or(VarintError::Truncated)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(VarintError::TooLong);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(VarintError::TooLong)
}

impl Fields<'_> {
    /// Reads the field at `start`.
    #[inline(always)]
    fn read(&self, start: usize) -> Result<Field, WireError> {
        let mut pos = start;
        let tag = read_varint(self.buf, &mut pos)
            .map_err(|e| self.fail(start, e.reason("truncated tag")))?;
        // As in prost: the tag is a u32, so field numbers stop at 2^29 - 1.
        let number = u32::try_from(tag)
            .map(|tag| tag >> 3)
            .map_err(|_| self.fail(start, "field number too large"))?;
        if number == 0 {
            return Err(self.fail(start, "field number 0"));
        }
        let wire_type = (tag & 7) as u8;
        let payload_start;
        match wire_type {
            VARINT => {
                payload_start = pos;
                read_varint(self.buf, &mut pos)
                    .map_err(|e| self.fail(start, e.reason("truncated varint")))?;
            }
            FIXED64 | FIXED32 => {
                payload_start = pos;
                pos += if wire_type == FIXED64 { 8 } else { 4 };
                if pos > self.buf.len() {
                    return Err(self.fail(start, "truncated fixed-width field"));
                }
            }
            LEN => {
                let len = read_varint(self.buf, &mut pos)
                    .map_err(|e| self.fail(start, e.reason("truncated length")))?;
                payload_start = pos;
                pos = usize::try_from(len)
                    .ok()
                    .and_then(|len| pos.checked_add(len))
                    .filter(|end| *end <= self.buf.len())
                    .ok_or_else(|| self.fail(start, "length runs past the end of the message"))?;
            }
            _ => return Err(self.fail(start, "unsupported wire type")),
        }
        Ok(Field {
            number,
            wire_type,
            start,
            end: pos,
            payload_start,
        })
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, WireError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let result = self.read(self.pos);
        // After an error, stop: nothing past it can be framed.
        self.pos = match &result {
            Ok(f) => f.end,
            Err(_) => self.buf.len(),
        };
        Some(result)
    }
}

impl Schema {
    /// Counts the items in an encoded request, checking the framing of every message on
    /// the way down and the fields of each item.
    pub fn count(&self, buf: &[u8]) -> Result<usize, WireError> {
        self.count_at(buf, 0, 0, true)
    }

    /// `check` also walks each item's own fields; without it only the lists leading to
    /// items are read (for bytes already checked once).
    fn count_at(
        &self,
        buf: &[u8],
        depth: usize,
        base: usize,
        check: bool,
    ) -> Result<usize, WireError> {
        let children = self.levels[depth];
        let leaf = depth + 1 == self.levels.len();
        let mut total = 0;
        for field in Fields::new(buf, base) {
            let field = field?;
            if !children.contains(&field.number) {
                continue;
            }
            if field.wire_type != LEN {
                return Err(WireError {
                    offset: base + field.start,
                    reason: "nested message has the wrong wire type",
                });
            }
            let payload = &buf[field.payload_start..field.end];
            if leaf {
                if check {
                    for f in Fields::new(payload, base + field.payload_start) {
                        f?;
                    }
                }
                total += 1;
            } else {
                total += self.count_at(payload, depth + 1, base + field.payload_start, check)?;
            }
        }
        Ok(total)
    }

    /// Splits a request that [`Schema::count`] accepted after its first `n` items, giving
    /// each side as pieces with their item counts. Whole resource messages are shared
    /// with `buf`; only the one resource that straddles the cut is rewritten, with its
    /// resource and scope fields copied to both halves.
    /// `total` is the request's item count, as [`Schema::count`] gave it.
    pub fn split(&self, buf: &Bytes, n: usize, total: usize) -> (Vec<Piece>, Vec<Piece>) {
        let mut before = 0;
        let mut first = Vec::new();
        let mut rest = Vec::new();
        let mut fields = Fields::new(buf, 0).map_while(Result::ok);
        for field in fields.by_ref() {
            if !self.levels[0].contains(&field.number) {
                continue;
            }
            let count = self.count_field(buf, &field, 0);
            if before + count <= n {
                before += count;
                if before == n {
                    push_piece(&mut first, buf.slice(..field.end), n);
                    push_piece(&mut rest, buf.slice(field.end..), total - n);
                    return (first, rest);
                }
                continue;
            }
            let take = n - before;
            let mut a = Vec::new();
            let mut b = Vec::new();
            self.split_message(
                &buf[field.payload_start..field.end],
                1,
                take,
                &mut a,
                &mut b,
            );
            push_piece(&mut first, buf.slice(..field.start), before);
            first.push((len_field(field.number, &a), take));
            rest.push((len_field(field.number, &b), count - take));
            push_piece(&mut rest, buf.slice(field.end..), total - before - count);
            return (first, rest);
        }
        (vec![(buf.clone(), before)], Vec::new())
    }

    fn count_field(&self, buf: &[u8], field: &Field, depth: usize) -> usize {
        if depth + 1 == self.levels.len() {
            1
        } else {
            self.count_at(&buf[field.payload_start..field.end], depth + 1, 0, false)
                .unwrap_or(0)
        }
    }

    /// Writes the message `buf` at `depth` into `first` (its first `n` items) and `rest`
    /// (the others). Fields that are not item lists go to both.
    fn split_message(
        &self,
        buf: &[u8],
        depth: usize,
        n: usize,
        first: &mut Vec<u8>,
        rest: &mut Vec<u8>,
    ) {
        let mut remaining = n;
        for field in Fields::new(buf, 0).map_while(Result::ok) {
            let raw = &buf[field.start..field.end];
            if !self.levels[depth].contains(&field.number) {
                first.extend_from_slice(raw);
                rest.extend_from_slice(raw);
                continue;
            }
            if remaining == 0 {
                rest.extend_from_slice(raw);
                continue;
            }
            let count = self.count_field(buf, &field, depth);
            if count <= remaining {
                first.extend_from_slice(raw);
                remaining -= count;
            } else {
                let mut a = Vec::new();
                let mut b = Vec::new();
                self.split_message(
                    &buf[field.payload_start..field.end],
                    depth + 1,
                    remaining,
                    &mut a,
                    &mut b,
                );
                put_len_field(first, field.number, &a);
                put_len_field(rest, field.number, &b);
                remaining = 0;
            }
        }
    }
}

/// Encoded bytes and how many items they hold.
pub type Piece = (Bytes, usize);

/// Adds a piece unless it has no bytes.
fn push_piece(pieces: &mut Vec<Piece>, bytes: Bytes, count: usize) {
    if !bytes.is_empty() {
        pieces.push((bytes, count));
    }
}

fn len_field(number: u32, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 6);
    put_len_field(&mut out, number, payload);
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Appends a length-delimited field.
pub fn put_len_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// What becomes of one message an [`Schema::edit`] walk visits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Keep,
    Drop,
    /// The message's new payload.
    Replace(Vec<u8>),
}

/// The messages around a visited one, outermost first: each with the number of the
/// field it sits in (a resource message, a scope message; for metrics also the metric
/// and its data message, whose number says the metric's type).
pub type Ancestors<'a> = [(u32, &'a [u8])];

impl Schema {
    /// Visits every message at `depth` (0: the resource messages; the last depth: the
    /// items) in order, with its ancestors, and applies what `visit` returns. A message
    /// whose item lists all became empty is dropped with them, as the Collector drops
    /// empty scopes and resources. Returns the new request and its item count, or
    /// `None` when nothing changed. `buf` must have passed [`Schema::count`].
    pub fn edit(
        &self,
        buf: &[u8],
        depth: usize,
        visit: &mut dyn FnMut(&Ancestors<'_>, u32, &[u8]) -> Edit,
    ) -> Option<(Vec<u8>, usize)> {
        let mut out = Vec::with_capacity(buf.len() + buf.len() / 8);
        let mut ancestors = Vec::with_capacity(self.levels.len());
        let walk = self.edit_message(buf, 0, depth, &mut ancestors, visit, &mut out);
        walk.changed.then(|| {
            // The walk counted what it kept at the target; the items are those when the
            // target is the leaf level, else they are counted below what was kept.
            let items = if depth + 1 == self.levels.len() {
                walk.kept
            } else {
                self.count_at(&out, 0, 0, false).unwrap_or(0)
            };
            (out, items)
        })
    }

    /// Writes `buf`'s message, edited, to the end of `out`. A nested message is written
    /// in place behind a length prefix sized for its old length and the prefix filled in
    /// after (moving the bytes only in the rare case the new length needs another
    /// width), so each kept byte is copied once whatever the depth.
    fn edit_message<'a>(
        &self,
        buf: &'a [u8],
        level: usize,
        target: usize,
        ancestors: &mut Vec<(u32, &'a [u8])>,
        visit: &mut dyn FnMut(&Ancestors<'_>, u32, &[u8]) -> Edit,
        out: &mut Vec<u8>,
    ) -> EditWalk {
        let mut walk = EditWalk::default();
        for field in Fields::new(buf, 0).map_while(Result::ok) {
            let raw = &buf[field.start..field.end];
            if !self.levels[level].contains(&field.number) || field.wire_type != LEN {
                out.extend_from_slice(raw);
                continue;
            }
            walk.before += 1;
            let payload = &buf[field.payload_start..field.end];
            if level == target {
                match visit(ancestors, field.number, payload) {
                    Edit::Keep => {
                        out.extend_from_slice(raw);
                        walk.after += 1;
                    }
                    Edit::Drop => walk.changed = true,
                    Edit::Replace(new) => {
                        put_len_field(out, field.number, &new);
                        walk.after += 1;
                        walk.changed = true;
                    }
                }
                continue;
            }
            let mark = out.len();
            put_varint(out, (u64::from(field.number) << 3) | u64::from(LEN));
            let prefix_at = out.len();
            let width = varint_width(payload.len() as u64);
            out.resize(prefix_at + width, 0);
            ancestors.push((field.number, payload));
            let inner = self.edit_message(payload, level + 1, target, ancestors, visit, out);
            ancestors.pop();
            walk.kept += inner.kept;
            if inner.before > 0 && inner.after == 0 {
                // Every list of it became empty: it goes with them.
                out.truncate(mark);
                walk.changed = true;
                continue;
            }
            walk.after += 1;
            walk.changed |= inner.changed;
            let len = (out.len() - prefix_at - width) as u64;
            let needed = varint_width(len);
            if needed != width {
                let body = prefix_at + width..out.len();
                let mut prefix = Vec::with_capacity(needed);
                put_varint(&mut prefix, len);
                out.splice(prefix_at..prefix_at + width, prefix);
                debug_assert_eq!(out.len(), body.end - width + needed);
            } else {
                let mut v = len;
                for b in &mut out[prefix_at..prefix_at + width] {
                    *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
                    v >>= 7;
                }
            }
        }
        if level == target {
            walk.kept = walk.after;
        }
        walk
    }
}

/// The number of bytes `v` takes as a varint.
fn varint_width(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// What one message's walk did to its lists: how many listed messages it had and kept.
#[derive(Debug, Default)]
struct EditWalk {
    before: usize,
    after: usize,
    changed: bool,
    /// Messages kept at the target level, below and at this one.
    kept: usize,
}
