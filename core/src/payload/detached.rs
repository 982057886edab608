//! Item attributes kept apart from a decoded request.
//!
//! A scraped series has the same labels scrape after scrape; only its value changes. The
//! scrape receiver keeps one [`Attrs`] per series and hands it to every batch that
//! carries the series, reference-counted, instead of building a fresh list of OTLP
//! key-values (seven allocations for three labels) every scrape. The Prometheus
//! exporters read the labels straight from it; any other stage gets an ordinary OTLP
//! request, with the attributes put back ([`super::Batch::to_request`]).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

/// An immutable list of string attributes (key, value) in one allocation of text: the
/// encoded size and the count, then per attribute its key's and value's lengths, key and
/// value. The numbers are written six bits to a byte, every byte ASCII, so the whole is
/// a `str`; below 64 a number is one byte. Held in an `Arc` (two allocations per series
/// in all, where a list of ends beside the text took three).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    data: Box<str>,
}

/// Appends `n` six bits to a byte, low bits first; `0x40` marks that more follow.
fn put_len(out: &mut String, mut n: usize) {
    loop {
        let low = (n & 0x3f) as u8;
        n >>= 6;
        if n == 0 {
            out.push(char::from(low));
            return;
        }
        out.push(char::from(low | 0x40));
    }
}

/// How many bytes [`put_len`] writes for `n`.
fn len_of(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()).div_ceil(6).max(1) as usize
}

/// The number [`put_len`] wrote at `at`, and where the next thing starts (0 and the
/// end when `at` is past it).
fn get_len(data: &[u8], mut at: usize) -> (usize, usize) {
    let (mut n, mut shift) = (0usize, 0);
    while let Some(&b) = data.get(at) {
        at += 1;
        n |= usize::from(b & 0x3f) << shift;
        shift += 6;
        if b & 0x40 == 0 {
            break;
        }
    }
    (n, at)
}

impl Attrs {
    /// Attributes from `(key, value)` pairs, in the order given.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Attrs {
        let (mut count, mut text, mut encoded) = (0, 0, 0);
        let field = |n: usize| 1 + prost::encoding::encoded_len_varint(n as u64) + n;
        for (k, v) in pairs.clone() {
            count += 1;
            text += len_of(k.len()) + k.len() + len_of(v.len()) + v.len();
            // Each a `KeyValue` with a string `AnyValue`; proto3 leaves an empty key out,
            // a oneof's string is always written.
            let key = if k.is_empty() { 0 } else { field(k.len()) };
            encoded += field(key + field(field(v.len())));
        }
        if count == 0 {
            return Attrs::default();
        }
        let mut data = String::with_capacity(len_of(encoded) + len_of(count) + text);
        put_len(&mut data, encoded);
        put_len(&mut data, count);
        for (k, v) in pairs {
            put_len(&mut data, k.len());
            put_len(&mut data, v.len());
            data.push_str(k);
            data.push_str(v);
        }
        Attrs {
            data: data.into_boxed_str(),
        }
    }

    /// (encoded size, count, where the first attribute starts).
    fn header(&self) -> (usize, usize, usize) {
        let (encoded, at) = get_len(self.data.as_bytes(), 0);
        let (count, at) = get_len(self.data.as_bytes(), at);
        (encoded, count, at)
    }

    pub fn len(&self) -> usize {
        self.header().1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The attributes in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let (_, count, mut at) = self.header();
        let data = &*self.data;
        (0..count).map(move |_| {
            let (k, next) = get_len(data.as_bytes(), at);
            let (v, next) = get_len(data.as_bytes(), next);
            // Slices `new` wrote, so always there; `get` keeps a mistake from panicking.
            let key = data.get(next..next + k).unwrap_or("");
            let value = data.get(next + k..next + k + v).unwrap_or("");
            at = next + k + v;
            (key, value)
        })
    }

    /// As OTLP string attributes, appended to `out`.
    pub fn push_key_values(&self, out: &mut Vec<KeyValue>) {
        out.reserve(self.len());
        out.extend(self.iter().map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_string())),
            }),
            ..Default::default()
        }));
    }

    /// The bytes these attributes add to an encoded OTLP item (each a `KeyValue` with a
    /// string `AnyValue`).
    pub fn encoded_len(&self) -> usize {
        self.header().0
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for Attrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// `a` as OTLP key-values, after checking its encoded size against prost's.
    fn encoded_as_prost_does(a: &Attrs) -> Vec<KeyValue> {
        let mut kvs = Vec::new();
        a.push_key_values(&mut kvs);
        let expected: usize = kvs
            .iter()
            .map(|kv| prost::encoding::message::encoded_len(1, kv))
            .sum();
        assert_eq!(a.encoded_len(), expected);
        kvs
    }

    #[test]
    fn pairs_round_trip_and_size_matches_the_encoding() {
        let pairs = [
            ("method", "GET"),
            ("path", "/a/ü"),
            ("", ""),
            ("code", "200"),
        ];
        let a = Attrs::new(pairs);
        assert_eq!(a.iter().collect::<Vec<_>>(), pairs);
        let kvs = encoded_as_prost_does(&a);
        assert_eq!(kvs[1].key, "path");
        assert!(Attrs::default().is_empty());
        // An empty key-value still encodes its value message.
        assert!(kvs[2].encoded_len() > 0);
        assert_eq!(Attrs::new([]), Attrs::default());
    }

    #[test]
    fn lengths_and_counts_round_trip_across_their_byte_boundaries() {
        let long = |n: usize| "é".repeat(n / 2) + &"x".repeat(n % 2);
        let texts: Vec<String> = [0, 1, 63, 64, 65, 4095, 4096, 4097, 262_144, 300_001]
            .into_iter()
            .map(long)
            .collect();
        let pairs: Vec<(&str, &str)> = texts
            .iter()
            .zip(texts.iter().rev())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let a = Attrs::new(pairs.iter().copied());
        assert_eq!(a.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(a.len(), pairs.len());
        encoded_as_prost_does(&a);
        // More attributes than one length byte counts.
        let names: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let many = Attrs::new(names.iter().map(|n| (n.as_str(), "v")));
        assert_eq!(many.len(), 300);
        assert_eq!(many.iter().nth(299), Some(("k299", "v")));
        for n in [0, 1, 63, 64, 4095, 4096, 1 << 30, usize::MAX] {
            let mut out = String::new();
            put_len(&mut out, n);
            assert_eq!(out.len(), len_of(n), "{n}");
            assert_eq!(get_len(out.as_bytes(), 0), (n, out.len()));
        }
    }
}
