//! Reading and writing the fields of one encoded OTLP message: enough to read a path
//! and to rewrite only the fields an editor changes. Input has passed the receiver's
//! validation; anything malformed ends the read rather than failing.

use sidekick_collector::payload::wire::Fields;

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

/// The fields of a message, in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    fields: Fields<'a>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            fields: Fields::new(buf, 0),
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let f = self.fields.next()?.ok()?;
        Some(Field {
            number: f.number,
            wire_type: f.wire_type,
            raw: &self.buf[f.start..f.end],
            payload: &self.buf[f.payload_start..f.end],
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

/// `msg` with every field `number` removed and `replacement` (whole encoded fields)
/// appended.
pub fn replace_field(msg: &[u8], number: u32, replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + replacement.len());
    for f in Reader::new(msg) {
        if f.number != number {
            out.extend_from_slice(f.raw);
        }
    }
    out.extend_from_slice(replacement);
    out
}

/// `msg` with every field `number` removed and `replacement` put first (where a
/// resource or scope field is usually found).
pub fn replace_field_first(msg: &[u8], number: u32, replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + replacement.len());
    out.extend_from_slice(replacement);
    for f in Reader::new(msg) {
        if f.number != number {
            out.extend_from_slice(f.raw);
        }
    }
    out
}
