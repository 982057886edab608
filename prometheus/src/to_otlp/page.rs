//! Reading one page: its samples grouped into families (metadata, the part each series
//! plays in its family, the points with their start times), checked for OpenMetrics'
//! rules, before the families become OTLP metrics.

use super::*;

#[derive(Default)]
pub(super) struct Meta<'a> {
    pub(super) kind: Option<Kind>,
    pub(super) help: Option<Cow<'a, str>>,
    pub(super) unit: Option<&'a str>,
}

/// Finds the family a series name belongs to and the part it plays in it. Counters and
/// info metrics are named by their series (`x_total`, `x_info`) so the name a Prometheus
/// user queries survives the trip; histograms and summaries by their family. Also returns
/// the name the family's metadata (`HELP`, `UNIT`) is under.
/// A sample's family name, kind, role and where its metadata is ([`family`]).
pub(super) type FamilyOf<'n, 'a> = (Cow<'n, str>, Kind, Role, Option<&'a str>);

pub(super) fn family<'a, 'n>(name: &'n str, meta: &FastMap<&'a str, Meta<'a>>) -> FamilyOf<'n, 'a> {
    let typed = |n: &str| meta.get_key_value(n).and_then(|(k, m)| Some((m.kind?, *k)));
    if let Some((kind, m)) = typed(name) {
        return (Cow::Borrowed(name), kind, Role::Value, Some(m));
    }
    const SUFFIXES: [(&str, Role); 8] = [
        ("_bucket", Role::Bucket),
        ("_count", Role::Count),
        ("_sum", Role::Sum),
        ("_gcount", Role::Count),
        ("_gsum", Role::Sum),
        ("_created", Role::Created),
        ("_total", Role::Value),
        ("_info", Role::Value),
    ];
    for (suffix, role) in SUFFIXES {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        let found = match (suffix, typed(base)) {
            ("_bucket", Some((k @ (Kind::Histogram | Kind::GaugeHistogram), m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_count" | "_sum", Some((k @ (Kind::Histogram | Kind::Summary), m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_gcount" | "_gsum", Some((k @ Kind::GaugeHistogram, m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_created", Some((k @ (Kind::Histogram | Kind::Summary), m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_created", Some((Kind::Counter, m))) => {
                Some((Cow::Owned(format!("{base}_total")), Kind::Counter, m))
            }
            ("_created", None) => {
                let total = format!("{base}_total");
                typed(&total)
                    .filter(|(k, _)| *k == Kind::Counter)
                    .map(|(k, m)| (Cow::Owned(total), k, m))
            }
            ("_total", Some((Kind::Counter, m))) => Some((Cow::Borrowed(name), Kind::Counter, m)),
            ("_info", Some((Kind::Info, m))) => Some((Cow::Borrowed(name), Kind::Info, m)),
            _ => None,
        };
        if let Some((family, kind, m)) = found {
            return (family, kind, role, Some(m));
        }
    }
    (Cow::Borrowed(name), Kind::Unknown, Role::Value, None)
}

/// The unit from `# UNIT` (mapped to UCUM when it is a known word) or else from the
/// name's last word (`_seconds`, `_bytes`, …).
pub(super) fn unit_for(family: &str, declared: Option<&str>) -> String {
    if let Some(u) = declared.filter(|u| !u.is_empty()) {
        return ucum_for_word(u)
            .map(str::to_string)
            .unwrap_or_else(|| u.to_string());
    }
    let base = family.strip_suffix("_total").unwrap_or(family);
    base.rsplit_once('_')
        .and_then(|(_, word)| ucum_for_word(word))
        .unwrap_or("")
        .to_string()
}

/// A data point being assembled from one or more samples (64 bytes: a page's points
/// are all held while it is read).
pub(super) struct Point {
    /// The series' attributes, shared with the tracker and every batch that carries it.
    pub(super) attrs: Arc<Attrs>,
    pub(super) hash: u64,
    pub(super) time_ms: i64,
    pub(super) value: f64,
    /// From a `_created` line; [`NOT_CREATED`] when there was none ([`Point::created`]).
    pub(super) created_ms: i64,
    /// A histogram's or summary's other parts, and exemplars (boxed: most points are
    /// single values without any).
    pub(super) parts: Option<Box<Parts>>,
    /// The page line of its first sample.
    pub(super) line: u32,
    /// Its place among the previous scrape's series, when it was there.
    pub(super) known_at: Option<u32>,
}

const _: () = assert!(std::mem::size_of::<Point>() == 64);

/// The parts of a histogram or summary point, and any point's exemplars.
#[derive(Default)]
pub(super) struct Parts {
    pub(super) buckets: Vec<(f64, f64)>,
    pub(super) sum: Option<f64>,
    pub(super) count: Option<f64>,
    pub(super) quantiles: Vec<(f64, f64)>,
    pub(super) exemplars: Vec<Exemplar>,
    /// A protobuf page's native histogram.
    pub(super) native: Option<Box<Native>>,
}

pub(super) struct Family {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) help: String,
    pub(super) unit: String,
    pub(super) scope: usize,
    pub(super) points: Vec<Point>,
    pub(super) index: KeyMap<usize>,
}

pub(super) fn exemplar_from(e: &crate::parse::Exemplar<'_>, time_ms: i64) -> Exemplar {
    let mut out = Exemplar {
        time_unix_nano: e
            .timestamp
            .map(|s| (s * 1e9).max(0.0) as u64)
            .unwrap_or_else(|| ms_to_ns(time_ms)),
        value: Some(exemplar::Value::AsDouble(e.value)),
        ..Default::default()
    };
    for (k, v) in e.labels.iter() {
        match (k, hex(&v)) {
            ("trace_id", Some(id)) if id.len() == 16 => out.trace_id = id,
            ("span_id", Some(id)) if id.len() == 8 => out.span_id = id,
            _ => out.filtered_attributes.push(string_kv(k, &v)),
        }
    }
    out
}

pub(super) fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A page read and checked, its samples gathered into points, before any state is
/// touched.
pub(super) struct Page {
    pub(super) scopes: Vec<InstrumentationScope>,
    pub(super) families: Vec<Family>,
    /// `target_info`'s labels, for the resource.
    pub(super) resource_extra: Vec<KeyValue>,
    pub(super) scraped: usize,
    pub(super) post_relabel: usize,
    /// Samples left out for a timestamp their series already had on the page.
    pub(super) duplicates: usize,
}

impl Page {
    pub(super) fn points(&self) -> usize {
        self.families.iter().map(|f| f.points.len()).sum()
    }

    /// The OTLP metrics, one `ScopeMetrics` per scope with its points' attributes kept
    /// apart: `see` is told of each series built (what its staleness marker would need)
    /// and gives its start time ([`Keep`]).
    pub(super) fn build(self, see: &mut dyn FnMut(&Point, Seen, Option<f64>) -> i64) -> Scoped {
        let mut scopes: Scoped = self
            .scopes
            .into_iter()
            .map(|s| {
                let scope = ScopeMetrics {
                    scope: Some(s),
                    ..Default::default()
                };
                (scope, Vec::new())
            })
            .collect();
        let split = self.families.into_iter().flat_map(|f| {
            let (f, natives) = split_native(f);
            std::iter::once(f).chain(natives)
        });
        for f in split {
            let scope = f.scope;
            let (metrics, detached) = &mut scopes[scope];
            let family = Arc::new(Shape {
                scope: metrics.scope.clone().unwrap_or_default(),
                name: f.name.clone(),
                kind: f.kind,
                unit: f.unit.clone(),
                help: f.help.clone(),
                parts: Vec::new(),
                sum: false,
                native: false,
            });
            // The family's shape, with the bounds or quantiles of its first series with
            // any; a series whose differ gets a shape of its own.
            let mut common: Option<Arc<Shape>> = None;
            let mut keep = |p: &Point, parts: &[(f64, f64)], sum: bool, value: Option<f64>| {
                let native = p.is_native();
                let fits = |s: &Shape| {
                    s.sum == sum
                        && s.native == native
                        && s.parts.len() == parts.len()
                        && s.parts.iter().zip(parts).all(|(a, (b, _))| a == b)
                };
                let shape = match &common {
                    _ if parts.is_empty() && !sum && !native => Arc::clone(&family),
                    Some(c) if fits(c) => Arc::clone(c),
                    _ => {
                        let own = Arc::new(Shape {
                            parts: parts.iter().map(|(at, _)| *at).collect(),
                            sum,
                            native,
                            ..Shape::clone(&family)
                        });
                        common.get_or_insert_with(|| Arc::clone(&own));
                        own
                    }
                };
                let seen = Seen {
                    attrs: Arc::clone(&p.attrs),
                    shape,
                };
                see(p, seen, value)
            };
            let before = detached.len();
            match build_metric(f, &mut keep, detached) {
                Some(metric) if metric_has_points(&metric) => metrics.metrics.push(metric),
                _ => detached.truncate(before),
            }
        }
        scopes
    }
}

/// A histogram family with native and classic points as two families, natives first
/// (an OTLP metric has one kind of point); any other family as it is.
fn split_native(mut f: Family) -> (Family, Option<Family>) {
    if f.kind != Kind::Histogram {
        return (f, None);
    }
    let natives = f.points.iter().filter(|p| p.is_native()).count();
    if natives == 0 || natives == f.points.len() {
        return (f, None);
    }
    let (native, classic) = f.points.drain(..).partition(Point::is_native);
    let other = Family {
        name: f.name.clone(),
        kind: f.kind,
        help: f.help.clone(),
        unit: f.unit.clone(),
        scope: f.scope,
        points: classic,
        index: KeyMap::default(),
    };
    f.points = native;
    (f, Some(other))
}

/// Takes note of a series' point as it is built and gives its start time: (the point,
/// its histogram buckets or summary quantiles as (bound or quantile, value), sorted,
/// whether it has a `_sum`, and the value a reset shows in, `None` when the point has no
/// start time of its own).
pub(super) type Keep<'a> = dyn FnMut(&Point, &[(f64, f64)], bool, Option<f64>) -> i64 + 'a;

/// Relabels and checks a page's entries (from the text parser or a protobuf page) and
/// gathers its samples into points. `size_hint` is about the page's size in text bytes.
/// `known` holds the attributes of series seen before, to share rather than build again.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_page<'a>(
    mut parser: impl Entries<'a>,
    size_hint: usize,
    openmetrics: bool,
    time_ms: i64,
    target: &'a Target,
    opts: &Options<'_>,
    known: &Known,
) -> Result<Page, PageError> {
    let mut meta: FastMap<&str, Meta<'_>> = FastMap::default();
    let mut scopes: Vec<InstrumentationScope> =
        vec![default_scope_metrics().scope.unwrap_or_default()];
    let mut families: Vec<Family> = Vec::new();
    // Per family, where its `HELP` and `UNIT` are, read when the page is done (they may
    // follow the first sample; `TYPE` may not, as both formats say).
    let mut metas: Vec<Option<&str>> = Vec::new();
    // Per scope: family name → index in `families`.
    let mut family_index: Vec<FastMap<String, usize>> = vec![FastMap::default()];
    // Finds the series of the previous scrape, which most often come in the same order.
    let mut cursor = Cursor::default();
    // Per series of the previous scrape, its point on this page once made: (family, point).
    let mut made: Vec<(u32, u32)> = vec![(u32::MAX, 0); known.len()];
    // Sized for the page (about 80 bytes a sample) so it is not rehashed as it fills.
    let mut seen = Shown::with_capacity((size_hint / 80).min(1 << 20));
    // The last sample name's family: a family's samples come together.
    let mut last_family: Option<(&str, FamilyOf<'_, '_>)> = None;
    let mut resource_extra: Vec<KeyValue> = Vec::new();
    let mut scraped = 0;
    let mut post_relabel = 0;
    let mut duplicates = 0;
    let mut labels: LabelSet<'_> = Vec::new();
    let mut checker = openmetrics::Checker::default();
    let violation = |line, rule, name: &str| PageError::OpenMetrics {
        line,
        rule,
        name: cut(name),
    };
    while let Some(entry) = parser.next() {
        let line = parser.line();
        let Some(sample) = note_metadata(entry?, &mut meta, &mut checker, openmetrics, line)?
        else {
            // Metadata may change what a name it follows belongs to.
            last_family = None;
            continue;
        };
        if openmetrics {
            let (_, kind, role, m) = family(sample.name, &meta);
            let quantile = sample
                .labels
                .iter()
                .find(|(k, _)| *k == "quantile")
                .map(|(_, v)| v);
            checker
                .sample(&sample, m, kind, role, quantile.as_deref())
                .map_err(|rule| violation(line, rule, sample.name))?;
        }
        scraped += 1;
        labels.clear();
        labels.extend(
            sample
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (Cow::Borrowed(k), v)),
        );
        merge_target_labels(&mut labels, target, opts.honor_labels);
        let mut name: Cow<'_, str> = Cow::Borrowed(sample.name);
        if !opts.metric_relabel.is_empty() {
            labels.push((Cow::Borrowed("__name__"), name.clone()));
            if !relabel::apply(opts.metric_relabel, &mut labels) {
                continue;
            }
            let pos = labels.iter().position(|(k, _)| k == "__name__");
            match pos {
                Some(p) => name = labels.swap_remove(p).1,
                None => continue,
            }
        }
        // Prometheus's order: label limits, then sample_limit, both after relabeling.
        check_label_limits(&name, &labels, opts, line)?;
        post_relabel += 1;
        if opts.sample_limit > 0 && post_relabel > opts.sample_limit {
            return Err(PageError::SampleLimit {
                line,
                limit: opts.sample_limit,
            });
        }
        labels.sort_unstable_by(|a, b| label_order(&a.0, &b.0));
        // A page may not hold the same series twice, but OpenMetrics may give a series
        // several samples with increasing explicit timestamps.
        let mut h = series_hasher();
        name.hash(&mut h);
        labels.hash(&mut h);
        if !seen.first(h.finish(), sample.timestamp_ms, openmetrics) {
            return Err(PageError::Duplicate {
                line,
                series: render_series(&name, &labels),
            });
        }

        let (family_name, kind, role, m) = match name {
            Cow::Borrowed(n) => match &last_family {
                Some((last, found)) if *last == n => found.clone(),
                _ => {
                    let found = family(n, &meta);
                    last_family = Some((n, found.clone()));
                    found
                }
            },
            Cow::Owned(ref n) => {
                let (f, kind, role, m) = family(n, &meta);
                (Cow::Owned(f.into_owned()), kind, role, m)
            }
        };
        if family_name == "target_info" {
            if resource_extra.is_empty() {
                resource_extra = labels
                    .iter()
                    .filter(|(k, _)| k != "job" && k != "instance")
                    .map(|(k, v)| string_kv(k, v))
                    .collect();
            }
            continue;
        }
        let Split {
            scope_name,
            scope_version,
            mut scope_attrs,
            le,
            quantile,
        } = split_labels(&labels, kind, role);
        let scope = match scope_name {
            None => 0,
            Some(n) => match scopes
                .iter()
                .position(|s| s.name == n && s.version == scope_version)
            {
                Some(i) => i,
                None => {
                    scopes.push(InstrumentationScope {
                        name: n.to_string(),
                        version: scope_version.to_string(),
                        attributes: std::mem::take(&mut scope_attrs),
                        ..Default::default()
                    });
                    scopes.len() - 1
                }
            },
        };
        let fi = family_slot(
            &mut families,
            &mut metas,
            &mut family_index,
            scope,
            family_name,
            kind,
            m,
        );
        let fam = &mut families[fi];
        let attrs = attr_pairs(&labels, kind, role);
        let hash = series_hash(&scopes[scope], &fam.name, attrs.clone());
        let time = match (opts.honor_timestamps, sample.timestamp_ms) {
            (true, Some(t)) => t,
            _ => time_ms,
        };
        // Samples of one series with their own timestamps (OpenMetrics) are points apart.
        let point_key = match sample.timestamp_ms {
            Some(t) if openmetrics => {
                hash.wrapping_add((t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            }
            _ => hash,
        };
        // A series of the previous scrape is found by the cursor (in page order, no
        // hashing) and its point here through `made`; the others through the family's index.
        let at = cursor.find(known, hash);
        let apart = openmetrics && sample.timestamp_ms.is_some();
        let pi = match at.map(|at| made[at]) {
            Some((f, p)) if !apart && f == fi as u32 => p as usize,
            _ => {
                let make = || {
                    // Shared when the series is the one the previous scrape had under
                    // this hash (checked: a colliding hash must not lend another series
                    // its labels).
                    let (attrs, known_at) = match at {
                        Some(at) if known.at(at).attrs.iter().eq(attrs.clone()) => {
                            (Arc::clone(&known.at(at).attrs), Some(at as u32))
                        }
                        _ => (Arc::new(Attrs::new(attrs)), None),
                    };
                    fam.points.push(Point {
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        attrs,
                        known_at,
                        hash,
                        time_ms: time,
                        value: f64::NAN,
                        created_ms: NOT_CREATED,
                        parts: None,
                    });
                    fam.points.len() - 1
                };
                match at {
                    // Not when another family's series took the place (a colliding
                    // hash): that one keeps it, this one goes by the family's index.
                    Some(at) if !apart && made[at].0 == u32::MAX => {
                        let pi = make();
                        made[at] = (fi as u32, pi as u32);
                        pi
                    }
                    _ => *fam.index.entry(point_key).or_insert_with(make),
                }
            }
        };
        // A second value at the same millisecond (OpenMetrics): the first stays, as in
        // Prometheus, which refuses to store the second; it is counted.
        let single = !matches!(kind, Kind::Histogram | Kind::GaugeHistogram | Kind::Summary);
        if apart && single && role == Role::Value && !fam.points[pi].value.is_nan() {
            duplicates += 1;
            continue;
        }
        let p = &mut fam.points[pi];
        p.add(kind, role, le, quantile, sample.value);
        if let Some(e) = &sample.exemplar {
            p.parts().exemplars.push(exemplar_from(e, time_ms));
        }
        if let Some(n) = sample.native {
            let parts = p.parts();
            let exemplars = n
                .exemplars
                .iter()
                .map(|e| exemplar_from(&proto::exemplar(e), time_ms));
            parts.exemplars.extend(exemplars);
            parts.native = Some(Box::new(n.clone()));
        }
    }
    drop(seen);
    if openmetrics {
        check_shapes(&families).map_err(|(line, rule, name)| violation(line, rule, name))?;
    }
    for (f, m) in families.iter_mut().zip(metas) {
        let m = m.and_then(|k| meta.get(k));
        f.unit = unit_for(&f.name, m.and_then(|m| m.unit));
        f.help = m.and_then(|m| m.help.as_deref()).unwrap_or("").to_string();
    }
    Ok(Page {
        scopes,
        families,
        resource_extra,
        scraped,
        post_relabel,
        duplicates,
    })
}

/// Takes a `TYPE`, `HELP` or `UNIT` line into `meta` (checking the OpenMetrics rules on
/// it); hands a sample back.
pub(super) fn note_metadata<'a>(
    entry: Entry<'a>,
    meta: &mut FastMap<&'a str, Meta<'a>>,
    checker: &mut openmetrics::Checker<'a>,
    openmetrics: bool,
    line: usize,
) -> Result<Option<Sample<'a>>, PageError> {
    let (name, keyword) = match &entry {
        Entry::Type { name, .. } => (*name, "TYPE"),
        Entry::Help { name, .. } => (*name, "HELP"),
        Entry::Unit { name, .. } => (*name, "UNIT"),
        Entry::Sample(_) => ("", ""),
    };
    if openmetrics && !keyword.is_empty() {
        checker
            .metadata(name, keyword)
            .map_err(|rule| PageError::OpenMetrics {
                line,
                rule,
                name: cut(name),
            })?;
    }
    match entry {
        Entry::Type { name, kind } => {
            let m = meta.entry(name).or_default();
            if m.kind.is_some() {
                return Err(PageError::DuplicateType {
                    line,
                    name: name.to_string(),
                });
            }
            m.kind = Some(kind);
        }
        Entry::Help { name, text } => meta.entry(name).or_default().help = Some(text),
        Entry::Unit { name, unit } => meta.entry(name).or_default().unit = Some(unit),
        Entry::Sample(s) => return Ok(Some(s)),
    }
    Ok(None)
}

/// The index of family `name` of `scope` in `families`, added when new.
pub(super) fn family_slot<'a>(
    families: &mut Vec<Family>,
    metas: &mut Vec<Option<&'a str>>,
    index: &mut Vec<FastMap<String, usize>>,
    scope: usize,
    name: Cow<'_, str>,
    kind: Kind,
    meta: Option<&'a str>,
) -> usize {
    if index.len() <= scope {
        index.resize_with(scope + 1, FastMap::default);
    }
    if let Some(&i) = index[scope].get(name.as_ref()) {
        return i;
    }
    metas.push(meta);
    families.push(Family {
        help: String::new(),
        unit: String::new(),
        name: name.to_string(),
        kind,
        scope,
        points: Vec::new(),
        index: KeyMap::default(),
    });
    index[scope].insert(name.into_owned(), families.len() - 1);
    families.len() - 1
}

/// The series a page has shown so far (a sample's name and labels, hashed), to refuse a
/// second sample of one. OpenMetrics allows one again with an explicit timestamp no
/// earlier than the last (equal ones too: timestamps apart by less than a millisecond
/// are equal here):
/// those series keep their last timestamp, apart, so the others cost 8 bytes each.
pub(super) struct Shown {
    pub(super) plain: KeySet,
    pub(super) stamped: KeyMap<i64>,
}

impl Shown {
    pub(super) fn with_capacity(n: usize) -> Self {
        Shown {
            plain: KeySet::with_capacity_and_hasher(n, Default::default()),
            stamped: KeyMap::default(),
        }
    }

    /// Notes a sample of the series `hash`; false when the page already had it.
    pub(super) fn first(&mut self, hash: u64, ts: Option<i64>, openmetrics: bool) -> bool {
        match ts.filter(|_| openmetrics) {
            None => {
                (self.stamped.is_empty() || !self.stamped.contains_key(&hash))
                    && self.plain.insert(hash)
            }
            Some(_) if self.plain.contains(&hash) => false,
            Some(t) => match self.stamped.entry(hash) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(t);
                    true
                }
                std::collections::hash_map::Entry::Occupied(mut e) if t >= *e.get() => {
                    e.insert(t);
                    true
                }
                std::collections::hash_map::Entry::Occupied(_) => false,
            },
        }
    }
}

/// A sample's labels sorted out: its scope (from `otel_scope_*`) and the `le` /
/// `quantile` its role reads. The rest are its attributes ([`attr_pairs`]).
pub(super) struct Split<'l> {
    pub(super) scope_name: Option<&'l str>,
    pub(super) scope_version: &'l str,
    pub(super) scope_attrs: Vec<KeyValue>,
    pub(super) le: Option<&'l str>,
    pub(super) quantile: Option<&'l str>,
}

pub(super) fn split_labels<'l>(labels: &'l LabelSet<'_>, kind: Kind, role: Role) -> Split<'l> {
    let mut split = Split {
        scope_name: None,
        scope_version: "",
        scope_attrs: Vec::new(),
        le: None,
        quantile: None,
    };
    for (k, v) in labels {
        match k.as_ref() {
            "otel_scope_name" => split.scope_name = Some(v.as_ref()),
            "otel_scope_version" => split.scope_version = v,
            "otel_scope_schema_url" => {}
            "le" if role == Role::Bucket => split.le = Some(v.as_ref()),
            "quantile" if kind == Kind::Summary && role == Role::Value => {
                split.quantile = Some(v.as_ref())
            }
            other => {
                if let Some(attr) = other.strip_prefix("otel_scope_") {
                    split.scope_attrs.push(string_kv(attr, v));
                }
            }
        }
    }
    split
}

/// A sample's attributes: its labels but `job`, `instance`, the scope's (`otel_scope_*`)
/// and the `le` / `quantile` its role reads, in label order.
pub(super) fn attr_pairs<'l>(
    labels: &'l LabelSet<'_>,
    kind: Kind,
    role: Role,
) -> impl Iterator<Item = (&'l str, &'l str)> + Clone {
    labels.iter().filter_map(move |(k, v)| {
        let k: &str = k;
        let attr = match k {
            "job" | "instance" => false,
            "le" => role != Role::Bucket,
            "quantile" => !(kind == Kind::Summary && role == Role::Value),
            _ => !k.starts_with("otel_scope_"),
        };
        attr.then_some((k, v.as_ref()))
    })
}

/// [`Point::created_ms`] when the page gave no `_created` (an `Option` would make every
/// point 8 bytes bigger).
pub(super) const NOT_CREATED: i64 = i64::MIN;

impl Point {
    /// Whether it is a native histogram's point.
    pub(super) fn is_native(&self) -> bool {
        self.parts.as_ref().is_some_and(|x| x.native.is_some())
    }

    /// When the series was created, from its `_created` line.
    pub(super) fn created(&self) -> Option<i64> {
        (self.created_ms != NOT_CREATED).then_some(self.created_ms)
    }

    pub(super) fn parts(&mut self) -> &mut Parts {
        self.parts.get_or_insert_with(Box::default)
    }

    /// Adds a sample that plays `role` in a family of `kind`.
    pub(super) fn add(
        &mut self,
        kind: Kind,
        role: Role,
        le: Option<&str>,
        quantile: Option<&str>,
        value: f64,
    ) {
        use crate::parse::parse_value;
        match role {
            Role::Value if kind == Kind::Summary => {
                if let Some(q) = quantile.and_then(parse_value) {
                    self.parts().quantiles.push((q, value));
                }
            }
            Role::Value => self.value = value,
            Role::Bucket => {
                if let Some(le) = le.and_then(parse_value) {
                    self.parts().buckets.push((le, value));
                }
            }
            Role::Sum => self.parts().sum = Some(value),
            Role::Count => self.parts().count = Some(value),
            // `_created` is in seconds.
            Role::Created => self.created_ms = ((value * 1000.0) as i64).max(NOT_CREATED + 1),
        }
    }
}

/// The OpenMetrics rules on a point's shape (histogram buckets, `_sum` with `_count`):
/// the first point that breaks one, as (line, rule, family).
pub(super) fn check_shapes(
    families: &[Family],
) -> Result<(), (usize, openmetrics::Violation, &str)> {
    for f in families {
        for p in &f.points {
            let shape = match f.kind {
                Kind::Histogram | Kind::GaugeHistogram => {
                    let parts = p.parts.as_deref().unwrap_or(&NO_PARTS);
                    openmetrics::check_histogram(&parts.buckets, parts.sum, parts.count)
                }
                Kind::Summary => {
                    let parts = p.parts.as_deref().unwrap_or(&NO_PARTS);
                    openmetrics::check_summary(parts.sum, parts.count)
                }
                _ => Ok(()),
            };
            shape.map_err(|rule| (p.line as usize, rule, f.name.as_str()))?;
        }
    }
    Ok(())
}

pub(super) fn render_series(name: &str, labels: &LabelSet<'_>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Adds the target's labels to a sample's. Without `honor_labels` the target wins and a
/// clashing scraped label is kept as `exported_<name>`; with it the page wins.
pub(super) fn merge_target_labels<'a>(
    labels: &mut LabelSet<'a>,
    target: &'a Target,
    honor_labels: bool,
) {
    for (k, v) in &target.labels {
        match labels.iter().position(|(lk, _)| lk == k) {
            None => labels.push((Cow::Borrowed(k), Cow::Borrowed(v))),
            Some(_) if honor_labels => {}
            Some(i) => {
                let exported = format!("exported_{k}");
                labels[i].0 = Cow::Owned(exported);
                labels.push((Cow::Borrowed(k), Cow::Borrowed(v)));
            }
        }
    }
}
