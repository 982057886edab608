//! A protobuf page read as the entries a text page gives ([`ProtoPage::entries`]), so it
//! goes through the same relabeling, limits, families and series state as text: a
//! classic histogram becomes `_bucket` samples with an `le` label (with `+Inf` when the
//! page left it out), `_sum` and `_count`; a summary, `quantile` samples; created
//! timestamps, `_created` samples. A native histogram is one sample whose value is its
//! count and which carries the checked histogram ([`Native`]).
//!
//! A family whose native histogram fails the checks ([`crate::exposition::native`]) is
//! left out alone, with its reason in [`ProtoPage::refused`]; the rest of the page goes on.

use crate::exposition::{self, MetricFamily, MetricType, Native};
use crate::parse::{Entries, Entry, Exemplar, Kind, Labels, ParseError, Sample};
use std::borrow::Cow;

/// A decoded page, ready to be walked.
pub struct ProtoPage {
    families: Vec<MetricFamily>,
    steps: Vec<Step>,
    /// Sample names with a suffix, and `le` / `quantile` values, by index.
    strings: Vec<String>,
    natives: Vec<Native>,
    /// Families left out: (name, why).
    pub refused: Vec<(String, &'static str)>,
}

#[derive(Clone, Copy)]
enum Step {
    Help(u32),
    Type(u32, Kind),
    Unit(u32),
    Sample(SampleStep),
}

#[derive(Clone, Copy)]
struct SampleStep {
    family: u32,
    metric: u32,
    /// Index in `strings`, or `u32::MAX` for the family's own name.
    name: u32,
    extra: Option<(&'static str, u32)>,
    value: f64,
    exemplar: Option<Example>,
    native: Option<u32>,
}

/// Where a sample's exemplar is.
#[derive(Clone, Copy)]
enum Example {
    Counter,
    Bucket(u32),
}

const OWN_NAME: u32 = u32::MAX;

fn kind_of(t: MetricType) -> Kind {
    match t {
        MetricType::Counter => Kind::Counter,
        MetricType::Gauge => Kind::Gauge,
        MetricType::Summary => Kind::Summary,
        MetricType::Untyped => Kind::Unknown,
        MetricType::Histogram => Kind::Histogram,
        MetricType::GaugeHistogram => Kind::GaugeHistogram,
    }
}

impl ProtoPage {
    pub fn new(families: Vec<MetricFamily>) -> ProtoPage {
        let mut page = ProtoPage {
            families: Vec::new(),
            steps: Vec::new(),
            strings: Vec::new(),
            natives: Vec::new(),
            refused: Vec::new(),
        };
        for f in families {
            if let Err(why) = page.add(&f) {
                page.refused.push((f.name.chars().take(120).collect(), why));
                continue;
            }
            page.families.push(f);
        }
        page
    }

    /// The samples a text page would have had, in page order.
    pub fn entries(&self) -> ProtoEntries<'_> {
        ProtoEntries {
            page: self,
            at: 0,
            line: 0,
        }
    }

    /// About how many bytes of text the page would have been.
    pub fn size_hint(&self) -> usize {
        self.steps.len() * 80
    }

    fn string(&mut self, s: String) -> u32 {
        self.strings.push(s);
        (self.strings.len() - 1) as u32
    }

    fn number(&mut self, v: f64) -> u32 {
        let mut s = String::new();
        crate::text::push_value(&mut s, v);
        self.string(s)
    }

    /// Adds a family's steps, or nothing and why it cannot be taken.
    fn add(&mut self, f: &MetricFamily) -> Result<(), &'static str> {
        if f.name.is_empty() {
            return Err("metric family without a name");
        }
        let t = MetricType::from_i32(f.r#type).ok_or("unknown metric type")?;
        let kind = kind_of(t);
        // Checked before any step is added: a family is taken whole or not at all.
        let mut natives = Vec::new();
        if matches!(kind, Kind::Histogram | Kind::GaugeHistogram) {
            for m in &f.metric {
                if let Some(h) = m.histogram.as_ref().filter(|h| h.is_native()) {
                    let mut n = exposition::native(h)?;
                    n.exemplars = h.exemplars.clone();
                    natives.push(n);
                }
            }
        }
        let family = self.families.len() as u32;
        if !f.help.is_empty() {
            self.steps.push(Step::Help(family));
        }
        self.steps.push(Step::Type(family, kind));
        if !f.unit.is_empty() {
            self.steps.push(Step::Unit(family));
        }
        let suffixed =
            |page: &mut ProtoPage, suffix: &str| page.string(format!("{}{suffix}", f.name));
        let (sum_name, count_name, bucket_name, created_name) = match kind {
            Kind::Histogram | Kind::Summary => (
                suffixed(self, "_sum"),
                suffixed(self, "_count"),
                suffixed(self, "_bucket"),
                suffixed(self, "_created"),
            ),
            Kind::GaugeHistogram => (
                suffixed(self, "_gsum"),
                suffixed(self, "_gcount"),
                suffixed(self, "_bucket"),
                OWN_NAME,
            ),
            // A counter's `_created` goes with the name's `_total` taken off.
            Kind::Counter => match f.name.strip_suffix("_total") {
                Some(base) => {
                    let created = self.string(format!("{base}_created"));
                    (OWN_NAME, OWN_NAME, OWN_NAME, created)
                }
                None => (OWN_NAME, OWN_NAME, OWN_NAME, OWN_NAME),
            },
            _ => (OWN_NAME, OWN_NAME, OWN_NAME, OWN_NAME),
        };
        let mut natives = natives.into_iter();
        for (mi, m) in f.metric.iter().enumerate() {
            let sample = |name: u32, value: f64| SampleStep {
                family,
                metric: mi as u32,
                name,
                extra: None,
                value,
                exemplar: None,
                native: None,
            };
            let mut created = None;
            match kind {
                Kind::Counter => {
                    let c = m.counter.as_ref();
                    self.steps.push(Step::Sample(SampleStep {
                        exemplar: c
                            .is_some_and(|c| c.exemplar.is_some())
                            .then_some(Example::Counter),
                        ..sample(OWN_NAME, c.map_or(0.0, |c| c.value))
                    }));
                    created = c.and_then(|c| c.created_timestamp);
                }
                Kind::Gauge => {
                    let v = m.gauge.as_ref().map_or(0.0, |g| g.value);
                    self.steps.push(Step::Sample(sample(OWN_NAME, v)));
                }
                Kind::Unknown => {
                    let v = m.untyped.as_ref().map_or(0.0, |g| g.value);
                    self.steps.push(Step::Sample(sample(OWN_NAME, v)));
                }
                Kind::Summary => {
                    let none = exposition::Summary::default();
                    let s = m.summary.as_ref().unwrap_or(&none);
                    for q in &s.quantile {
                        let at = self.number(q.quantile);
                        self.steps.push(Step::Sample(SampleStep {
                            extra: Some(("quantile", at)),
                            ..sample(OWN_NAME, q.value)
                        }));
                    }
                    self.steps
                        .push(Step::Sample(sample(sum_name, s.sample_sum)));
                    self.steps
                        .push(Step::Sample(sample(count_name, s.sample_count as f64)));
                    created = s.created_timestamp;
                }
                Kind::Histogram | Kind::GaugeHistogram => {
                    let none = exposition::Histogram::default();
                    let h = m.histogram.as_ref().unwrap_or(&none);
                    created = h.created_timestamp;
                    if h.is_native() {
                        let Some(n) = natives.next() else { continue };
                        self.natives.push(n);
                        self.steps.push(Step::Sample(SampleStep {
                            native: Some((self.natives.len() - 1) as u32),
                            ..sample(OWN_NAME, h.count())
                        }));
                    } else {
                        let mut inf = false;
                        for (bi, b) in h.bucket.iter().enumerate() {
                            inf |= b.upper_bound == f64::INFINITY;
                            let at = self.number(b.upper_bound);
                            self.steps.push(Step::Sample(SampleStep {
                                extra: Some(("le", at)),
                                exemplar: b
                                    .exemplar
                                    .is_some()
                                    .then_some(Example::Bucket(bi as u32)),
                                ..sample(bucket_name, b.count())
                            }));
                        }
                        if !inf {
                            let at = self.number(f64::INFINITY);
                            self.steps.push(Step::Sample(SampleStep {
                                extra: Some(("le", at)),
                                ..sample(bucket_name, h.count())
                            }));
                        }
                        self.steps
                            .push(Step::Sample(sample(sum_name, h.sample_sum)));
                        self.steps.push(Step::Sample(sample(count_name, h.count())));
                    }
                }
                Kind::Info | Kind::StateSet => {}
            }
            if let Some(t) = created.filter(|_| created_name != OWN_NAME) {
                self.steps
                    .push(Step::Sample(sample(created_name, t.as_secs_f64())));
            }
        }
        Ok(())
    }
}

/// The entries of a [`ProtoPage`]; [`Entries::line`] is the position of the family the
/// last one came from (1-based).
pub struct ProtoEntries<'a> {
    page: &'a ProtoPage,
    at: usize,
    line: usize,
}

impl<'a> Iterator for ProtoEntries<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let page = self.page;
        let step = *page.steps.get(self.at)?;
        self.at += 1;
        let family = |i: u32| &page.families[i as usize];
        Some(Ok(match step {
            Step::Help(f) => {
                self.line = f as usize + 1;
                Entry::Help {
                    name: &family(f).name,
                    text: Cow::Borrowed(&family(f).help),
                }
            }
            Step::Type(f, kind) => {
                self.line = f as usize + 1;
                Entry::Type {
                    name: &family(f).name,
                    kind,
                }
            }
            Step::Unit(f) => {
                self.line = f as usize + 1;
                Entry::Unit {
                    name: &family(f).name,
                    unit: &family(f).unit,
                }
            }
            Step::Sample(SampleStep {
                family: f,
                metric,
                name,
                extra,
                value,
                exemplar,
                native,
            }) => {
                self.line = f as usize + 1;
                let fam = family(f);
                let m = &fam.metric[metric as usize];
                let found = match exemplar {
                    Some(Example::Counter) => m.counter.as_ref().and_then(|c| c.exemplar.as_ref()),
                    Some(Example::Bucket(b)) => m
                        .histogram
                        .as_ref()
                        .and_then(|h| h.bucket.get(b as usize)?.exemplar.as_ref()),
                    None => None,
                };
                Entry::Sample(Sample {
                    name: match name {
                        OWN_NAME => &fam.name,
                        i => &page.strings[i as usize],
                    },
                    labels: Labels::Pairs {
                        pairs: &m.label,
                        extra: extra.map(|(k, i)| (k, page.strings[i as usize].as_str())),
                    },
                    value,
                    timestamp_ms: (m.timestamp_ms != 0).then_some(m.timestamp_ms),
                    exemplar: found.map(self::exemplar),
                    native: native.map(|i| &page.natives[i as usize]),
                })
            }
        }))
    }
}

impl<'a> Entries<'a> for ProtoEntries<'a> {
    fn line(&self) -> usize {
        self.line
    }
}

/// A protobuf exemplar as the parser's.
pub(super) fn exemplar(e: &exposition::Exemplar) -> Exemplar<'_> {
    Exemplar {
        labels: Labels::Pairs {
            pairs: &e.label,
            extra: None,
        },
        value: e.value,
        timestamp: e.timestamp.map(|t| t.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests;
