//! The payload moving through pipelines: a batch of one signal's telemetry.
//!
//! A [`Batch`] is either still encoded (the protobuf bytes a client sent, kept as a list
//! of chunks) or decoded into the OTLP request type. Nothing decodes a batch unless a
//! stage needs to look inside: OTLP export requests are lists at the top level, so
//! batching appends chunks, splitting rewrites at most one resource, and fan-out to
//! several exporters clones reference-counted bytes.

pub mod detached;
pub mod validate;
pub mod wire;

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sidekick_config::Signal as SignalKind;

pub use detached::Attrs;
pub use wire::WireError;

/// What differs between traces, metrics and logs.
pub trait Signal: Send + Sync + Sized + 'static {
    /// The OTLP export request message.
    type Request: Message + Default + Clone + PartialEq + fmt::Debug + Send + Sync + 'static;
    const KIND: SignalKind;
    /// How items nest in the encoded request.
    const SCHEMA: &'static wire::Schema;
    /// Item noun in self-metric names: `spans`, `metric_points`, `log_records`.
    const ITEMS: &'static str;
    /// The gRPC method that exports this signal.
    const GRPC_PATH: &'static str;
    /// The OTLP/HTTP path that exports this signal.
    const HTTP_PATH: &'static str;

    fn count(request: &Self::Request) -> usize;
    fn resources_mut(request: &mut Self::Request, f: &mut dyn FnMut(&mut Option<Resource>));
    /// Calls `f` with the attributes of every span, data point or log record.
    fn item_attributes_mut(request: &mut Self::Request, f: &mut dyn FnMut(&mut Vec<KeyValue>));
    /// Moves the resource lists of `other` onto the end of `into`.
    fn merge(into: &mut Self::Request, other: Self::Request);
}

#[derive(Debug, Clone, Copy)]
pub struct TracesSignal;
#[derive(Debug, Clone, Copy)]
pub struct MetricsSignal;
#[derive(Debug, Clone, Copy)]
pub struct LogsSignal;

pub type Traces = Batch<TracesSignal>;
pub type Metrics = Batch<MetricsSignal>;
pub type Logs = Batch<LogsSignal>;

impl Signal for TracesSignal {
    type Request = ExportTraceServiceRequest;
    const KIND: SignalKind = SignalKind::Traces;
    const SCHEMA: &'static wire::Schema = &wire::TRACES;
    const ITEMS: &'static str = "spans";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const HTTP_PATH: &'static str = "/v1/traces";

    fn count(r: &Self::Request) -> usize {
        r.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    fn resources_mut(r: &mut Self::Request, f: &mut dyn FnMut(&mut Option<Resource>)) {
        r.resource_spans
            .iter_mut()
            .for_each(|rs| f(&mut rs.resource));
    }

    fn merge(into: &mut Self::Request, other: Self::Request) {
        into.resource_spans.extend(other.resource_spans);
    }

    fn item_attributes_mut(r: &mut Self::Request, f: &mut dyn FnMut(&mut Vec<KeyValue>)) {
        for span in r
            .resource_spans
            .iter_mut()
            .flat_map(|rs| &mut rs.scope_spans)
            .flat_map(|ss| &mut ss.spans)
        {
            f(&mut span.attributes);
        }
    }
}

impl Signal for MetricsSignal {
    type Request = ExportMetricsServiceRequest;
    const KIND: SignalKind = SignalKind::Metrics;
    const SCHEMA: &'static wire::Schema = &wire::METRICS;
    const ITEMS: &'static str = "metric_points";
    const GRPC_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const HTTP_PATH: &'static str = "/v1/metrics";

    fn count(r: &Self::Request) -> usize {
        r.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| match &m.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum()
    }

    fn resources_mut(r: &mut Self::Request, f: &mut dyn FnMut(&mut Option<Resource>)) {
        r.resource_metrics
            .iter_mut()
            .for_each(|rm| f(&mut rm.resource));
    }

    fn merge(into: &mut Self::Request, other: Self::Request) {
        into.resource_metrics.extend(other.resource_metrics);
    }

    fn item_attributes_mut(r: &mut Self::Request, f: &mut dyn FnMut(&mut Vec<KeyValue>)) {
        let metrics = r
            .resource_metrics
            .iter_mut()
            .flat_map(|rm| &mut rm.scope_metrics)
            .flat_map(|sm| &mut sm.metrics);
        for m in metrics {
            match &mut m.data {
                Some(Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
                Some(Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
                Some(Data::Histogram(h)) => {
                    h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                }
                Some(Data::ExponentialHistogram(h)) => {
                    h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                }
                Some(Data::Summary(s)) => {
                    s.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                }
                None => {}
            }
        }
    }
}

impl Signal for LogsSignal {
    type Request = ExportLogsServiceRequest;
    const KIND: SignalKind = SignalKind::Logs;
    const SCHEMA: &'static wire::Schema = &wire::LOGS;
    const ITEMS: &'static str = "log_records";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const HTTP_PATH: &'static str = "/v1/logs";

    fn count(r: &Self::Request) -> usize {
        r.resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum()
    }

    fn resources_mut(r: &mut Self::Request, f: &mut dyn FnMut(&mut Option<Resource>)) {
        r.resource_logs
            .iter_mut()
            .for_each(|rl| f(&mut rl.resource));
    }

    fn merge(into: &mut Self::Request, other: Self::Request) {
        into.resource_logs.extend(other.resource_logs);
    }

    fn item_attributes_mut(r: &mut Self::Request, f: &mut dyn FnMut(&mut Vec<KeyValue>)) {
        for l in r
            .resource_logs
            .iter_mut()
            .flat_map(|rl| &mut rl.scope_logs)
            .flat_map(|sl| &mut sl.log_records)
        {
            f(&mut l.attributes);
        }
    }
}

/// A batch of one signal's telemetry. Cloning is cheap: bytes and decoded requests are
/// shared, and a decoded request is copied only when a holder edits it.
pub struct Batch<S: Signal> {
    repr: Repr<S>,
    items: usize,
}

enum Repr<S: Signal> {
    /// Concatenated, these chunks are one valid encoded request; each with its item count.
    Encoded(Vec<(Bytes, usize)>),
    Decoded(Arc<Decoded<S>>),
}

struct Decoded<S: Signal> {
    request: S::Request,
    /// Empty, or one entry per item, in item order: attributes that belong after the
    /// item's own (see [`detached`]).
    detached: Vec<Arc<Attrs>>,
    /// The encoding, made at most once however many exporters ask.
    encoded: OnceLock<Bytes>,
    /// The encoded size, computed at most once (queues bound their bytes with it).
    size: OnceLock<usize>,
}

impl<S: Signal> Clone for Decoded<S> {
    fn clone(&self) -> Self {
        Decoded {
            request: self.request.clone(),
            detached: self.detached.clone(),
            encoded: OnceLock::new(),
            size: OnceLock::new(),
        }
    }
}

impl<S: Signal> Clone for Batch<S> {
    fn clone(&self) -> Self {
        Batch {
            repr: match &self.repr {
                Repr::Encoded(chunks) => Repr::Encoded(chunks.clone()),
                Repr::Decoded(d) => Repr::Decoded(Arc::clone(d)),
            },
            items: self.items,
        }
    }
}

impl<S: Signal> fmt::Debug for Batch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("signal", &S::KIND)
            .field("items", &self.items)
            .field("encoded", &matches!(self.repr, Repr::Encoded(_)))
            .finish()
    }
}

/// A request that failed to decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("invalid protobuf: {0}")]
    Prost(#[from] prost::DecodeError),
}

impl<S: Signal> Default for Repr<S> {
    fn default() -> Self {
        Repr::Encoded(Vec::new())
    }
}

impl<S: Signal> Default for Batch<S> {
    fn default() -> Self {
        Batch {
            repr: Repr::Encoded(Vec::new()),
            items: 0,
        }
    }
}

impl<S: Signal> Batch<S> {
    pub fn from_request(request: S::Request) -> Self {
        Self::from_detached(request, Vec::new())
    }

    /// A decoded request whose items' attributes are partly kept apart: item `i` has its
    /// own attributes followed by `detached[i]`. `detached` is empty or has an entry per
    /// item; extra entries are ignored and missing ones taken as empty.
    pub fn from_detached(request: S::Request, mut detached: Vec<Arc<Attrs>>) -> Self {
        let items = S::count(&request);
        if !detached.is_empty() && detached.len() != items {
            debug_assert!(false, "{} detached for {items} items", detached.len());
            let empty = Arc::new(Attrs::default());
            detached.resize(items, empty);
        }
        Batch {
            repr: Repr::Decoded(Arc::new(Decoded {
                request,
                detached,
                encoded: OnceLock::new(),
                size: OnceLock::new(),
            })),
            items,
        }
    }

    /// Wraps an encoded export request after checking it against the OTLP schema and
    /// counting its items in the same walk. Every receiver path comes through here, so a
    /// request with one bad item is refused whole, before it can join other clients'
    /// data in a batch (see [`validate`] for the rules and why not a partial success).
    pub fn from_encoded(body: Bytes) -> Result<Self, WireError> {
        let items = validate::check(S::KIND, &body)?;
        let chunks = if body.is_empty() {
            Vec::new()
        } else {
            vec![(body, items)]
        };
        Ok(Batch {
            repr: Repr::Encoded(chunks),
            items,
        })
    }

    /// Wraps an encoded request this process checked before and stored with its item
    /// count under a checksum (the persistent queue), without walking it again.
    pub fn from_stored(body: Bytes, items: usize) -> Self {
        let chunks = if body.is_empty() {
            Vec::new()
        } else {
            vec![(body, items)]
        };
        Batch {
            repr: Repr::Encoded(chunks),
            items,
        }
    }

    /// Spans, metric data points or log records.
    pub fn len(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The encoded request as chunks that concatenate to one message. Encodes a decoded
    /// batch once and remembers it.
    pub fn encoded_chunks(&self) -> Vec<Bytes> {
        match &self.repr {
            Repr::Encoded(chunks) => chunks.iter().map(|(b, _)| b.clone()).collect(),
            Repr::Decoded(d) => {
                let bytes = d
                    .encoded
                    .get_or_init(|| {
                        count_codec(1, 0);
                        if d.detached.is_empty() {
                            Bytes::from(d.request.encode_to_vec())
                        } else {
                            Bytes::from(attached(d).encode_to_vec())
                        }
                    })
                    .clone();
                if bytes.is_empty() {
                    Vec::new()
                } else {
                    vec![bytes]
                }
            }
        }
    }

    /// Bytes this batch stands for in queues and the memory account: its encoded size,
    /// computed once for a decoded batch (without encoding it).
    pub fn size(&self) -> usize {
        match &self.repr {
            Repr::Encoded(chunks) => chunks.iter().map(|(b, _)| b.len()).sum(),
            // With detached attributes, a close estimate (the lengths of the messages
            // around them may take a byte more).
            Repr::Decoded(d) => *d.size.get_or_init(|| {
                d.request.encoded_len() + d.detached.iter().map(|a| a.encoded_len()).sum::<usize>()
            }),
        }
    }

    /// The encoded request as one buffer; copies only when it is in several chunks.
    pub fn encoded(&self) -> Bytes {
        let mut chunks = self.encoded_chunks();
        match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                chunks.iter().for_each(|c| out.put_slice(c));
                out.freeze()
            }
        }
    }

    /// The request, if this batch is held decoded with every attribute in place (no
    /// work is done here).
    pub fn decoded(&self) -> Option<&S::Request> {
        match &self.repr {
            Repr::Decoded(d) if d.detached.is_empty() => Some(&d.request),
            _ => None,
        }
    }

    /// The request and its detached attributes (empty, or one entry per item), if this
    /// batch is held decoded (no work is done here).
    pub fn decoded_detached(&self) -> Option<(&S::Request, &[Arc<Attrs>])> {
        match &self.repr {
            Repr::Decoded(d) => Some((&d.request, &d.detached)),
            Repr::Encoded(_) => None,
        }
    }

    /// The decoded request with every attribute in place (decodes an encoded batch; does
    /// not change `self`).
    pub fn to_request(&self) -> Result<S::Request, DecodeError> {
        match &self.repr {
            Repr::Decoded(d) if d.detached.is_empty() => Ok(d.request.clone()),
            Repr::Decoded(d) => Ok(attached(d)),
            Repr::Encoded(chunks) => decode_chunks::<S>(chunks),
        }
    }

    /// Decodes in place (once) and gives the request to edit. Drops any cached encoding,
    /// and copies the request first if another holder shares it.
    pub fn request_mut(&mut self) -> Result<&mut S::Request, DecodeError> {
        if let Repr::Encoded(chunks) = &self.repr {
            let request = decode_chunks::<S>(chunks)?;
            self.repr = Repr::Decoded(Arc::new(Decoded {
                request,
                detached: Vec::new(),
                encoded: OnceLock::new(),
                size: OnceLock::new(),
            }));
        }
        match &mut self.repr {
            Repr::Decoded(d) => {
                let d = Arc::make_mut(d);
                d.encoded = OnceLock::new();
                d.size = OnceLock::new();
                if !d.detached.is_empty() {
                    let detached = std::mem::take(&mut d.detached);
                    attach::<S>(&mut d.request, &detached);
                }
                Ok(&mut d.request)
            }
            Repr::Encoded(_) => unreachable!("decoded above"),
        }
    }

    /// Edits every resource in place. An encoded batch stays encoded: only each resource
    /// message is decoded and re-encoded; the spans, points or records beside it are
    /// copied as bytes, never decoded. A missing resource is created empty first.
    pub fn resources_mut(&mut self, mut f: impl FnMut(&mut Resource)) {
        match &mut self.repr {
            Repr::Decoded(d) => {
                let d = Arc::make_mut(d);
                d.encoded = OnceLock::new();
                d.size = OnceLock::new();
                S::resources_mut(&mut d.request, &mut |r| {
                    f(r.get_or_insert_with(Resource::default))
                });
            }
            Repr::Encoded(chunks) => {
                for (chunk, _) in chunks.iter_mut() {
                    *chunk = rewrite_resources(chunk, &mut f);
                }
            }
        }
    }

    /// Visits every message at `depth` of the signal's [`wire::Schema`] (0: resource
    /// messages; the last depth: the items) with its ancestors, keeping, dropping or
    /// replacing each as `visit` says, without decoding the batch: kept messages are
    /// copied as bytes, and a chunk nothing changed in is shared as it was. Scopes and
    /// resources left without items are dropped. A decoded batch is encoded first (once).
    pub fn edit_encoded(
        &mut self,
        depth: usize,
        visit: &mut dyn FnMut(&wire::Ancestors<'_>, u32, &[u8]) -> wire::Edit,
    ) {
        let mut chunks = counted_chunks(std::mem::take(&mut self.repr), self.items);
        let mut items = 0;
        chunks.retain_mut(|(chunk, count)| {
            if let Some((mut new, n)) = S::SCHEMA.edit(chunk, depth, visit) {
                // The chunk lives on in queues: it keeps no room it will not use.
                new.shrink_to_fit();
                *chunk = Bytes::from(new);
                *count = n;
            }
            items += *count;
            !chunk.is_empty()
        });
        self.repr = Repr::Encoded(chunks);
        self.items = items;
    }

    /// Recounts items after an edit through [`Batch::request_mut`].
    pub fn recount(&mut self) {
        if let Repr::Decoded(d) = &self.repr {
            self.items = S::count(&d.request);
        }
    }

    /// Moves `other`'s telemetry to the end of this batch. Encoded batches are joined by
    /// appending chunks; a decoded side is encoded rather than the other side decoded.
    /// An empty batch takes the form of what is appended to it, so decoded data stays
    /// decoded through a batch processor.
    pub fn append(&mut self, other: Batch<S>) {
        if other.items == 0 && other.size() == 0 {
            return;
        }
        if self.items == 0 && self.size() == 0 {
            *self = other;
            return;
        }
        let items = self.items + other.items;
        match (&mut self.repr, other.repr) {
            (Repr::Decoded(mine), Repr::Decoded(theirs)) => {
                let (theirs, theirs_detached) = Arc::try_unwrap(theirs)
                    .map(|d| (d.request, d.detached))
                    .unwrap_or_else(|shared| (shared.request.clone(), shared.detached.clone()));
                let mine = Arc::make_mut(mine);
                mine.encoded = OnceLock::new();
                mine.size = OnceLock::new();
                S::merge(&mut mine.request, theirs);
                // Detached attributes stay detached: the side without any gets empty ones.
                if !mine.detached.is_empty() || !theirs_detached.is_empty() {
                    let empty = Arc::new(Attrs::default());
                    mine.detached.resize(self.items, Arc::clone(&empty));
                    if theirs_detached.is_empty() {
                        mine.detached.resize(items, empty);
                    } else {
                        mine.detached.extend(theirs_detached);
                    }
                }
            }
            (Repr::Encoded(mine), theirs) => mine.extend(counted_chunks(theirs, other.items)),
            (Repr::Decoded(_), theirs) => {
                let mut chunks = counted_chunks(std::mem::take(&mut self.repr), self.items);
                chunks.extend(counted_chunks(theirs, other.items));
                self.repr = Repr::Encoded(chunks);
            }
        }
        self.items = items;
    }

    /// Splits off the items after the first `at`, returning them; `self` keeps the first
    /// `at`. Whole resources are shared, not copied.
    pub fn split_off(&mut self, at: usize) -> Batch<S> {
        if at >= self.items {
            return Batch::default();
        }
        let total = self.items;
        let chunks = counted_chunks(std::mem::take(&mut self.repr), total);
        let mut first = Vec::new();
        let mut rest = Vec::new();
        let mut remaining = at;
        for (chunk, count) in chunks {
            if remaining == 0 {
                rest.push((chunk, count));
            } else if count <= remaining {
                remaining -= count;
                first.push((chunk, count));
            } else {
                let (a, b) = S::SCHEMA.split(&chunk, remaining, count);
                first.extend(a);
                rest.extend(b);
                remaining = 0;
            }
        }
        self.repr = Repr::Encoded(first);
        self.items = at;
        Batch {
            repr: Repr::Encoded(rest),
            items: total - at,
        }
    }
}

/// A copy of a decoded request with its detached attributes put back.
fn attached<S: Signal>(d: &Decoded<S>) -> S::Request {
    let mut request = d.request.clone();
    attach::<S>(&mut request, &d.detached);
    request
}

/// Appends `detached[i]` to the attributes of item `i`.
fn attach<S: Signal>(request: &mut S::Request, detached: &[Arc<Attrs>]) {
    let mut next = detached.iter();
    S::item_attributes_mut(request, &mut |attrs| {
        if let Some(a) = next.next() {
            a.push_key_values(attrs);
        }
    });
}

/// Re-encodes the `resource` (field 1) of each top-level resource message (field 1) of
/// an export request, copying every other field as it is.
fn rewrite_resources(buf: &Bytes, f: &mut dyn FnMut(&mut Resource)) -> Bytes {
    let mut out = Vec::with_capacity(buf.len() + 64);
    for field in wire::Fields::new(buf, 0).map_while(Result::ok) {
        if field.number != 1 || field.wire_type != 2 {
            out.extend_from_slice(&buf[field.start..field.end]);
            continue;
        }
        let inner = &buf[field.payload_start..field.end];
        let mut resource = Resource::default();
        let mut rest = Vec::with_capacity(inner.len());
        for g in wire::Fields::new(inner, 0).map_while(Result::ok) {
            if g.number == 1 && g.wire_type == 2 {
                // A malformed resource is replaced rather than passed on half-edited.
                let _ = resource.merge(&inner[g.payload_start..g.end]);
            } else {
                rest.extend_from_slice(&inner[g.start..g.end]);
            }
        }
        f(&mut resource);
        let mut message = Vec::with_capacity(rest.len() + resource.encoded_len() + 8);
        wire::put_len_field(&mut message, 1, &resource.encode_to_vec());
        message.extend_from_slice(&rest);
        wire::put_len_field(&mut out, 1, &message);
    }
    Bytes::from(out)
}

/// Whole requests encoded from their decoded form and decoded from bytes on this
/// thread since it started: what tests read (on a single-threaded runtime) to check that
/// no stage encodes only for the next to decode. One add per request, not per item.
pub fn codec_counts() -> (u64, u64) {
    CODEC.with(|c| c.get())
}

std::thread_local! {
    static CODEC: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

fn count_codec(encodes: u64, decodes: u64) {
    CODEC.with(|c| {
        let (e, d) = c.get();
        c.set((e + encodes, d + decodes));
    });
}

fn decode_chunks<S: Signal>(chunks: &[(Bytes, usize)]) -> Result<S::Request, DecodeError> {
    count_codec(0, 1);
    let mut request = S::Request::default();
    for (chunk, _) in chunks {
        request.merge(chunk.as_ref())?;
    }
    Ok(request)
}

/// A representation as counted chunks; a decoded request is encoded (once) as one chunk
/// of `items`.
fn counted_chunks<S: Signal>(repr: Repr<S>, items: usize) -> Vec<(Bytes, usize)> {
    match repr {
        Repr::Encoded(chunks) => chunks,
        decoded => Batch {
            repr: decoded,
            items,
        }
        .encoded_chunks()
        .into_iter()
        .map(|b| (b, items))
        .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
