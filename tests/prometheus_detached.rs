//! A scrape's series keep their attributes apart from the OTLP request (built once per
//! series, shared by every scrape). The Prometheus exporters read them there; every
//! other stage gets them put back. Both ways must give exactly the same samples.

use sidekick_collector::payload::Metrics;
use sidekick_exporters::prom::{self, Accumulator, Series, Settings};
use sidekick_prometheus::parse::Format;
use sidekick_receivers::prometheus::series::Tracker;
use sidekick_receivers::prometheus::translate::{translate, Options, Target};
use sidekick_testkit::gen::prometheus_page;

const T0: i64 = 1_700_000_000_000;

/// The samples of `batch`, read through its detached attributes and through the plain
/// request.
/// A sample as compared: the stale NaN is equal to itself here.
type Compared = (String, Vec<(String, String)>, u64, i64);

fn compared(s: &Series) -> Compared {
    (
        s.name.clone(),
        s.labels.clone(),
        s.value.to_bits(),
        s.timestamp_ms,
    )
}

fn both_ways(batch: &Metrics, settings: &Settings) -> (Vec<Compared>, Vec<Compared>) {
    let (request, detached) = prom::request_of(batch).unwrap();
    assert!(!detached.is_empty(), "a scrape keeps its attributes apart");
    let mut apart = Vec::new();
    prom::translate_detached(
        &request,
        detached,
        settings,
        &mut Accumulator::default(),
        T0,
        &mut |s| apart.push(compared(&s.to_series())),
    );
    let mut plain = Vec::new();
    prom::translate_with(
        &batch.to_request().unwrap(),
        settings,
        &mut Accumulator::default(),
        T0,
        &mut |s| plain.push(compared(&s.to_series())),
    );
    (apart, plain)
}

#[test]
fn exporters_read_the_same_samples_from_detached_attributes() {
    let target = Target {
        labels: vec![
            ("instance".into(), "10.0.0.7:8080".into()),
            ("job".into(), "app".into()),
            ("team".into(), "shop".into()),
        ],
        ..Target::plain("app", "10.0.0.7:8080")
    };
    let opts = Options::default();
    let mut tracker = Tracker::new(100_000);
    let full = prometheus_page(2_000);
    // A series with a real instrumentation scope.
    let extra = "# TYPE scoped_total counter\nscoped_total{otel_scope_name=\"lib\",otel_scope_version=\"2\",k=\"v\"} 3\n";
    let page = format!("{full}{extra}");
    let first = translate(
        page.as_str(),
        Format::Prometheus,
        T0,
        &target,
        &opts,
        &mut tracker,
    )
    .unwrap();
    // The next scrape lost half the page: those series get staleness markers, which
    // come after the page's own points.
    let half: String = full
        .lines()
        .take(full.lines().count() / 2)
        .map(|l| format!("{l}\n"))
        .collect();
    let second = translate(
        half.as_str(),
        Format::Prometheus,
        T0 + 5_000,
        &target,
        &opts,
        &mut tracker,
    )
    .unwrap();
    let settings_with_resource = Settings {
        resource_to_telemetry: true,
        extra_labels: vec![("cluster".into(), "c1".into())],
        ..Settings::default()
    };
    for t in [first, second] {
        let mut batch = Metrics::from_detached(t.request, t.detached);
        // A stage that edits resources (k8s_attributes) keeps the attributes apart.
        batch.resources_mut(|r| {
            r.attributes
                .push(sidekick_receivers::prometheus::translate::string_kv(
                    "k8s.pod.name",
                    "checkout-1",
                ))
        });
        assert!(batch.decoded().is_none());
        for settings in [Settings::default(), settings_with_resource.clone()] {
            let (apart, plain) = both_ways(&batch, &settings);
            assert!(apart.len() > 1_000, "{} samples", apart.len());
            assert_eq!(apart, plain);
        }
    }
    // Back to the whole page (the series get their attributes from the tracker again).
    let (apart, _) = both_ways(
        &{
            let t = translate(
                page.as_str(),
                Format::Prometheus,
                T0 + 10_000,
                &target,
                &opts,
                &mut tracker,
            )
            .unwrap();
            Metrics::from_detached(t.request, t.detached)
        },
        &Settings::default(),
    );
    let counter = apart
        .iter()
        .find(|s| s.0 == "http_requests_total")
        .expect("a counter");
    assert_eq!(
        counter
            .1
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["code", "instance", "job", "method", "route", "team"]
    );
    let scoped = apart
        .iter()
        .find(|s| s.0 == "scoped_total")
        .expect("scoped");
    assert!(scoped.1.contains(&("otel_scope_name".into(), "lib".into())));
}
