//! Request compression for the exporters: `gzip` (the default, as in the OpenTelemetry
//! Collector), `zstd` or `none`.

use std::io::Write;

use bytes::Bytes;
use serde::Deserialize;
use sidekick_collector::base::off_worker;

/// Batches up to this size are compressed in place: well under a millisecond of work,
/// less than handing the worker's other tasks to another thread would cost.
pub const OFF_RUNTIME: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    /// Also written as an empty string, as the Collector allows.
    None,
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "" => Ok(Compression::None),
            other => Err(serde::de::Error::custom(format!(
                "unsupported compression \"{other}\": use gzip, zstd or none"
            ))),
        }
    }
}

impl Compression {
    /// The `Content-Encoding` / `grpc-encoding` value, if any.
    pub fn encoding(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }

    /// [`apply`](Self::apply) for an exporter's request: a batch larger than
    /// [`OFF_RUNTIME`] is compressed off the worker thread ([`off_worker`]), so the
    /// receivers' requests it serves are not held by it (gzip takes milliseconds per MiB).
    pub fn apply_for_send(self, chunks: &[Bytes]) -> std::io::Result<Bytes> {
        let size: usize = chunks.iter().map(Bytes::len).sum();
        if self == Compression::None || size <= OFF_RUNTIME {
            return self.apply(chunks);
        }
        off_worker(|| self.apply(chunks))
    }

    /// Compresses the concatenation of `chunks`; without compression, joins them (no
    /// copy when there is one chunk).
    pub fn apply(self, chunks: &[Bytes]) -> std::io::Result<Bytes> {
        match self {
            Compression::Gzip => {
                // Sized for a typical ratio up front, so the output is not copied over
                // and over while it grows.
                let input: usize = chunks.iter().map(Bytes::len).sum();
                let out = Vec::with_capacity(input / 4 + 64);
                let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                chunks.iter().try_for_each(|c| e.write_all(c))?;
                Ok(Bytes::from(e.finish()?))
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1)?;
                chunks.iter().try_for_each(|c| e.write_all(c))?;
                Ok(Bytes::from(e.finish()?))
            }
            Compression::None => Ok(match chunks {
                [] => Bytes::new(),
                [one] => one.clone(),
                many => Bytes::from(many.concat()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn round_trips() {
        let chunks = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let gz = Compression::Gzip.apply(&chunks).unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
        let z = Compression::Zstd.apply(&chunks).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), b"hello world");
        assert_eq!(
            Compression::None.apply(&chunks).unwrap(),
            Bytes::from_static(b"hello world")
        );
    }

    #[tokio::test]
    async fn a_large_batch_compressed_off_the_worker_round_trips() {
        // Two chunks, together over the in-place limit.
        let text: Vec<u8> = (0..OFF_RUNTIME as u32 + 5000)
            .flat_map(|i| i.to_le_bytes())
            .collect();
        let (a, b) = text.split_at(text.len() / 3);
        let chunks = vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)];
        let gz = Compression::Gzip.apply_for_send(&chunks).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, text);
        let z = Compression::Zstd.apply_for_send(&chunks).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), text);
        let joined = Compression::None.apply_for_send(&chunks).unwrap();
        assert_eq!(joined, text);
        let small = vec![Bytes::from_static(b"hello")];
        let gz = Compression::Gzip.apply_for_send(&small).unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello");
    }
}
