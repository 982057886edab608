//! The Prometheus remote-write messages, 1.0 (`prometheus/prompb`) and 2.0 ([`v2`]),
//! written by hand: a handful of fields, no code generation needed.

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histograms (in place of `samples`).
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gauge histogram, 5 summary,
    /// 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// A native histogram of integer counts: buckets of exponential width with `schema`
/// (each bound the previous times 2^(2^-schema)), bucket `i` covering
/// (base^(i-1), base^i]; spans of consecutive buckets, each count a delta to the previous.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub count_int: u64,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "6")]
    pub zero_count_int: u64,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// 0 unknown, 1 yes, 2 no, 3 gauge.
    #[prost(int32, tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `length` consecutive buckets, starting `offset` buckets after the previous span's
/// end (the first span: at bucket index `offset`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// The remote-write 2.0 messages (`io.prometheus.write.v2`): every string is an index into
/// the request's symbol table, whose first entry is the empty string.
pub mod v2 {
    /// The `Content-Type` of a 2.0 request.
    pub const CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Name and value references, in pairs, sorted by name.
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<super::Sample>,
        /// Laid out as 1.0's native histograms.
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<super::Histogram>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// Milliseconds since the epoch; 0 when unknown.
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        /// As 1.0's `MetricMetadata.type`.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }

    impl Request {
        /// The symbol `at`, or an empty string for a reference past the table.
        pub fn symbol(&self, at: u32) -> &str {
            self.symbols.get(at as usize).map_or("", String::as_str)
        }

        /// A series' or exemplar's labels as (name, value) pairs.
        pub fn labels(&self, refs: &[u32]) -> Vec<(String, String)> {
            refs.chunks_exact(2)
                .map(|p| (self.symbol(p[0]).to_string(), self.symbol(p[1]).to_string()))
                .collect()
        }

        /// The same data as a 1.0 request (metadata, which 1.0 keeps per family, left out).
        pub fn to_v1(&self) -> super::WriteRequest {
            let label = |(name, value): (String, String)| super::Label { name, value };
            super::WriteRequest {
                timeseries: self
                    .timeseries
                    .iter()
                    .map(|ts| super::TimeSeries {
                        labels: self
                            .labels(&ts.labels_refs)
                            .into_iter()
                            .map(label)
                            .collect(),
                        samples: ts.samples.clone(),
                        exemplars: ts
                            .exemplars
                            .iter()
                            .map(|e| super::Exemplar {
                                labels: self
                                    .labels(&e.labels_refs)
                                    .into_iter()
                                    .map(label)
                                    .collect(),
                                value: e.value,
                                timestamp: e.timestamp,
                            })
                            .collect(),
                        histograms: ts.histograms.clone(),
                    })
                    .collect(),
                metadata: Vec::new(),
            }
        }
    }
}
