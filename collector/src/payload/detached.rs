//! Item attributes kept apart from a decoded request.
//!
//! A scraped series has the same labels scrape after scrape; only its value changes. The
//! scrape receiver keeps one [`Attrs`] per series and hands it to every batch that
//! carries the series, reference-counted, instead of building a fresh list of OTLP
//! key-values (seven allocations for three labels) every scrape. The Prometheus
//! exporters read the labels straight from it; any other stage gets an ordinary OTLP
//! request, with the attributes put back ([`super::Batch::to_request`]).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

/// An immutable list of string attributes (key, value) in one allocation of text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    text: Box<str>,
    /// Per attribute: where its key ends and where its value ends in `text`.
    ends: Box<[(u32, u32)]>,
    /// [`Attrs::encoded_len`], worked out once.
    encoded: usize,
}

impl Attrs {
    /// Attributes from `(key, value)` pairs, in the order given.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Attrs {
        let len: usize = pairs
            .clone()
            .into_iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let mut text = String::with_capacity(len);
        let mut ends = Vec::new();
        for (k, v) in pairs {
            text.push_str(k);
            let key_end = text.len() as u32;
            text.push_str(v);
            ends.push((key_end, text.len() as u32));
        }
        let mut attrs = Attrs {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            encoded: 0,
        };
        attrs.encoded = attrs.measure();
        attrs
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The attributes in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(k, v)| {
            let (k, v) = (k as usize, v as usize);
            let pair = (&self.text[start..k], &self.text[k..v]);
            start = v;
            pair
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
        self.encoded
    }

    fn measure(&self) -> usize {
        let field = |n: usize| 1 + prost::encoding::encoded_len_varint(n as u64) + n;
        self.iter()
            .map(|(k, v)| {
                // proto3 leaves an empty key out; a oneof's string is always written.
                let key = if k.is_empty() { 0 } else { field(k.len()) };
                field(key + field(field(v.len())))
            })
            .sum()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + self.ends.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

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
        let mut kvs = Vec::new();
        a.push_key_values(&mut kvs);
        let expected: usize = kvs
            .iter()
            .map(|kv| prost::encoding::message::encoded_len(1, kv))
            .sum();
        assert_eq!(a.encoded_len(), expected);
        assert_eq!(kvs[1].key, "path");
        assert!(Attrs::default().is_empty());
        // An empty key-value still encodes its value message.
        assert!(kvs[2].encoded_len() > 0);
    }
}
