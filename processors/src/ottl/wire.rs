//! Reading and writing the fields of one encoded OTLP message: enough to read a path
//! and to rewrite only the fields an editor changes. Input has passed the receiver's
//! validation; anything malformed ends the read rather than failing.

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub wire_type: u8,
    /// The whole field, tag included.
    pub raw: &'a [u8],
    payload: &'a [u8],
}

impl<'a> Field<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        if self.wire_type == 2 {
            self.payload
        } else {
            &[]
        }
    }

    pub fn varint(&self) -> u64 {
        if self.wire_type != 0 {
            return 0;
        }
        let mut v = 0u64;
        for (i, b) in self.payload.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    pub fn fixed64(&self) -> u64 {
        match self.payload.get(..8) {
            Some(b) if self.wire_type == 1 => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            _ => 0,
        }
    }

    pub fn fixed32(&self) -> u32 {
        match self.payload.get(..4) {
            Some(b) if self.wire_type == 5 => u32::from_le_bytes(b.try_into().unwrap_or([0; 4])),
            _ => 0,
        }
    }
}

/// The fields of a message, in order. A lean reader for the hot paths: the batch passed
/// the receiver's validation, so anything malformed just ends the read.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
}

/// A varint at `*pos`, most often one byte.
#[inline(always)]
pub fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let &first = buf.get(*pos)?;
    *pos += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut v = u64::from(first & 0x7f);
    for shift in (7..64).step_by(7) {
        let &b = buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

impl<'a> Iterator for Reader<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        let buf = self.buf;
        let start = self.pos;
        let mut pos = start;
        let tag = varint(buf, &mut pos)?;
        let wire_type = (tag & 7) as u8;
        let payload_start = match wire_type {
            0 => {
                let at = pos;
                varint(buf, &mut pos)?;
                at
            }
            1 | 5 => {
                let at = pos;
                pos += if wire_type == 1 { 8 } else { 4 };
                at
            }
            2 => {
                let len = varint(buf, &mut pos)?;
                let at = pos;
                pos = pos.checked_add(usize::try_from(len).ok()?)?;
                at
            }
            _ => return None,
        };
        if pos > buf.len() || tag >> 3 > u64::from(u32::MAX) {
            self.pos = buf.len();
            return None;
        }
        self.pos = pos;
        Some(Field {
            number: (tag >> 3) as u32,
            wire_type,
            raw: &buf[start..pos],
            payload: &buf[payload_start..pos],
        })
    }
}

/// The last occurrence of field `number` (protobuf's rule for a repeated scalar).
pub fn last(buf: &[u8], number: u32) -> Option<Field<'_>> {
    Reader::new(buf).filter(|f| f.number == number).last()
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

pub fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_tag(out, number, 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

pub fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_tag(out, number, 0);
    put_varint(out, v);
}

pub fn put_fixed64_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_tag(out, number, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_fixed32_field(out: &mut Vec<u8>, number: u32, v: u32) {
    put_tag(out, number, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `msg` to `out` without the fields `drop` picks, copying runs of kept fields
/// at once (usually the whole message in one copy).
#[inline]
pub fn copy_without(out: &mut Vec<u8>, msg: &[u8], mut drop: impl FnMut(&Field<'_>) -> bool) {
    let mut run = 0;
    let mut at = 0;
    for f in Reader::new(msg) {
        let next = at + f.raw.len();
        if drop(&f) {
            out.extend_from_slice(&msg[run..at]);
            run = next;
        }
        at = next;
    }
    out.extend_from_slice(&msg[run..at]);
}

/// `msg` with every field `number` removed and `replacement` (whole encoded fields)
/// appended.
pub fn replace_field(msg: &[u8], number: u32, replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + replacement.len());
    copy_without(&mut out, msg, |f| f.number == number);
    out.extend_from_slice(replacement);
    out
}

/// `msg` with every field `number` removed and `replacement` put first (where a
/// resource or scope field is usually found).
pub fn replace_field_first(msg: &[u8], number: u32, replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + replacement.len());
    out.extend_from_slice(replacement);
    copy_without(&mut out, msg, |f| f.number == number);
    out
}

/// `msg` with every field `number` removed and one field `number` of `payload` appended.
pub fn replace_bytes_field(msg: &[u8], number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + payload.len() + 6);
    copy_without(&mut out, msg, |f| f.number == number);
    put_bytes(&mut out, number, payload);
    out
}
