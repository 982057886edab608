use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::*;
use crate::exporter::deadline_pair;
use crate::payload::TracesSignal;
use crate::pipe::{channel_with, Account, Input};

fn dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "sidekick-journal-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn settings() -> JournalSettings {
    JournalSettings {
        limit: Limit::bytes(64 << 20),
        drop_oldest: false,
        fsync: false,
        segment_bytes: 4096,
    }
}

/// A batch of `n` spans named `{tag}-{i}`.
fn spans(tag: &str, n: usize) -> Batch<TracesSignal> {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: format!("{tag}-{i}"),
            ..Span::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Bytes::from(req.encode_to_vec())).unwrap()
}

fn names(batch: &Batch<TracesSignal>) -> Vec<String> {
    batch
        .to_request()
        .unwrap()
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect()
}

/// The segment files in `d`, oldest first.
fn segment_files(d: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

fn open(d: &Path, s: JournalSettings) -> Arc<Journal<TracesSignal>> {
    Journal::open(d.to_path_buf(), "traces", s, None).unwrap()
}

/// Starts a feeder into a fresh queue; returns its input and the deadline trigger.
fn start_feed<S: Signal>(j: &Arc<Journal<S>>) -> (Input<S>, crate::exporter::DeadlineTrigger) {
    let (tx, rx) = channel_with::<S>(
        Limit::bytes(64 << 20),
        Gauge::default(),
        Gauge::default(),
        Arc::new(Account::default()),
    );
    let (trigger, deadline) = deadline_pair();
    tokio::spawn(feed(Arc::clone(j), Output::new(vec![tx]), deadline));
    (rx, trigger)
}

/// Receives (and delivers) everything until the feeder is done; the span names in order.
async fn drain(rx: &mut Input<TracesSignal>) -> Vec<String> {
    let mut got = Vec::new();
    while let Some((batch, hold)) = rx.recv_held().await {
        got.extend(names(&batch));
        hold.release();
    }
    got
}

#[tokio::test]
async fn entries_go_on_in_order_and_delivered_ones_are_not_sent_again() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    for i in 0..50 {
        j.append(&spans(&format!("e{i}"), 3)).unwrap();
    }
    let (mut rx, _trigger) = start_feed(&j);
    let mut got = Vec::new();
    for _ in 0..20 {
        let (batch, hold) = rx.recv_held().await.unwrap();
        assert!(hold.is_durable());
        got.extend(names(&batch));
        hold.release();
    }
    assert_eq!(got[0], "e0-0");
    assert_eq!(got[59], "e19-2");
    // Twenty entries delivered; the next ten are received but not delivered.
    let mut undelivered = Vec::new();
    for _ in 0..10 {
        undelivered.push(rx.recv_held().await.unwrap());
    }
    drop(undelivered);
    drop(w);
    while let Some((_, h)) = rx.recv_held().await {
        drop(h);
    }
    assert_eq!(j.close(), 30 * 3);
    drop(j);

    let j = open(&d, settings());
    assert_eq!(j.items(), 30 * 3);
    let w = j.sender();
    j.append(&spans("new", 1)).unwrap();
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    let again = drain(&mut rx).await;
    assert_eq!(again.len(), 30 * 3 + 1, "{again:?}");
    assert_eq!(again[0], "e20-0");
    assert_eq!(again[89], "e49-2");
    assert_eq!(again[90], "new-0");
    // Everything delivered: the disk is empty but for the open segment.
    assert_eq!(j.items(), 0);
    assert_eq!(j.close(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_backlog_larger_than_the_cache_is_read_back_from_disk() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    // About 5 MiB: more than the cache holds.
    let big = spans("big", 2000);
    let n = (5 << 20) / big.size() + 1;
    for _ in 0..n {
        j.append(&big).unwrap();
    }
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    let mut items = 0;
    while let Some((batch, hold)) = rx.recv_held().await {
        items += batch.len();
        assert_eq!(names(&batch)[1999], "big-1999");
        hold.release();
    }
    assert_eq!(items, n * 2000);
    assert_eq!(j.items(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_torn_last_record_is_cut_counted_and_the_rest_delivered() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    for i in 0..5 {
        j.append(&spans(&format!("e{i}"), 2)).unwrap();
    }
    drop(w);
    j.close();
    drop(j);
    // A crash in the middle of the last write: the file ends inside its record.
    let seg = d.join(segment_name(0));
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = File::options().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    std::fs::write(d.join("notes.txt"), "not ours").unwrap();

    let t = Telemetry::new();
    let j = Journal::<TracesSignal>::open(d.clone(), "traces", settings(), Some(&t)).unwrap();
    assert_eq!(j.items(), 4 * 2);
    let rendered = t.render();
    assert!(
        rendered.contains("sidekick_persistent_queue_corrupt_records_total{pipeline=\"traces\"} 1"),
        "{rendered}"
    );
    let w = j.sender();
    j.append(&spans("after", 1)).unwrap();
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    let got = drain(&mut rx).await;
    assert_eq!(got.first().map(String::as_str), Some("e0-0"));
    assert_eq!(got.len(), 4 * 2 + 1, "{got:?}");
    assert_eq!(got.last().map(String::as_str), Some("after-0"));
    assert_eq!(
        std::fs::read_to_string(d.join("notes.txt")).unwrap(),
        "not ours"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_damaged_record_in_the_middle_costs_only_its_segment() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    // Several segments of 4 KiB.
    for i in 0..60 {
        j.append(&spans(&format!("e{i}"), 4)).unwrap();
    }
    drop(w);
    j.close();
    drop(j);
    let segs = segment_files(&d);
    assert!(segs.len() >= 3, "{segs:?}");
    // Flip a payload byte of the second segment's first record.
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[HEADER + 3] ^= 0xff;
    std::fs::write(&segs[1], &bytes).unwrap();

    let j = open(&d, settings());
    drop(j.sender());
    let (mut rx, _trigger) = start_feed(&j);
    let got = drain(&mut rx).await;
    assert_eq!(got[0], "e0-0");
    assert_eq!(got.last().map(String::as_str), Some("e59-3"));
    assert!(got.len() < 240 && got.len() > 120, "{}", got.len());
    assert_eq!(j.items(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_full_queue_refuses_until_data_is_delivered_or_drops_its_oldest() {
    let d = dir();
    let one = spans("x", 10);
    let record = (one.size() + HEADER) as u64;
    let s = JournalSettings {
        limit: Limit::bytes(record as usize * 8),
        segment_bytes: record * 2,
        ..settings()
    };
    let j = open(&d, s);
    let w = j.sender();
    for _ in 0..8 {
        j.append(&one).unwrap();
    }
    assert_eq!(j.append(&one), Err(AppendError::Full));
    let (mut rx, _trigger) = start_feed(&j);
    // Two entries delivered retire a whole segment: room again.
    for _ in 0..2 {
        let (_, hold) = rx.recv_held().await.unwrap();
        hold.release();
    }
    tokio::time::timeout(Duration::from_secs(5), j.wait_room(&one, None))
        .await
        .unwrap()
        .unwrap();
    j.append(&one).unwrap();
    drop(w);
    drop(rx);
    std::fs::remove_dir_all(&d).unwrap();

    let d = dir();
    let t = Telemetry::new();
    let s = JournalSettings {
        drop_oldest: true,
        ..s
    };
    let j = Journal::<TracesSignal>::open(d.clone(), "traces", s, Some(&t)).unwrap();
    let w = j.sender();
    for i in 0..12 {
        j.append(&spans(&format!("e{i}"), 10)).unwrap();
    }
    drop(w);
    assert!(t.account().dropped() >= 40, "{}", t.account().dropped());
    let (mut rx, _trigger) = start_feed(&j);
    let got = drain(&mut rx).await;
    // The newest survive, in order; what went is counted.
    assert_eq!(got.last().map(String::as_str), Some("e11-9"));
    assert_eq!(got.len() as u64 + t.account().dropped(), 120);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn with_fsync_an_append_is_synced_before_it_is_acknowledged() {
    let d = dir();
    let t = Telemetry::new();
    let s = JournalSettings {
        fsync: true,
        ..settings()
    };
    let j = Journal::<TracesSignal>::open(d.clone(), "traces", s, Some(&t)).unwrap();
    let _w = j.sender();
    let mut waits = Vec::new();
    for i in 0..20 {
        let seq = j.append(&spans(&format!("e{i}"), 1)).unwrap();
        let j = Arc::clone(&j);
        waits.push(tokio::spawn(async move { j.synced(seq).await }));
    }
    for w in waits {
        w.await.unwrap().unwrap();
    }
    let rendered = t.render();
    let fsyncs: u64 = rendered
        .lines()
        .find(|l| l.starts_with("sidekick_persistent_queue_fsyncs_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Appends that arrive during a sync share the next one.
    assert!((1..=20).contains(&fsyncs), "{fsyncs}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn tickets_follow_items_through_joins_and_splits() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    j.append(&spans("a", 3)).unwrap();
    j.append(&spans("b", 4)).unwrap();
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    // As the batch processor does: join both, then send the first five items.
    let (mut batch, mut held) = rx.recv_held().await.unwrap();
    let (second, hold) = rx.recv_held().await.unwrap();
    batch.append(second);
    held.merge(hold);
    let rest = batch.split_off(5);
    let first = held.split(batch.len(), batch.size());
    assert_eq!(first.items(), 5);
    first.release();
    // `a` is done; `b` still has two items undelivered.
    assert_eq!(j.items(), 4);
    // Stopped at shutdown: `b` stays for the next start.
    drop(held);
    assert_eq!(rest.len(), 2);
    assert!(rx.recv_held().await.is_none());
    assert_eq!(j.close(), 4);
    drop(j);
    let j = open(&d, settings());
    assert_eq!(j.items(), 4);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_second_journal_over_the_same_files_sees_what_the_first_kept() {
    // Reopening after a crash: the cursor may lag, so some delivered entries come back,
    // never fewer than were kept.
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    for i in 0..10 {
        j.append(&spans(&format!("e{i}"), 1)).unwrap();
    }
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    for _ in 0..4 {
        rx.recv_held().await.unwrap().1.release();
    }
    // No close: as after kill -9.
    std::mem::forget(rx);
    let again = open(&d, settings());
    assert!((6..=10).contains(&again.items()), "{}", again.items());
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn a_full_disk_refuses_appends_until_space_returns() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    // The next segment lands on a device that is always full.
    let seg = d.join(segment_name(0));
    std::os::unix::fs::symlink("/dev/full", &seg).unwrap();
    let refused = j.append(&spans("lost", 2)).unwrap_err();
    assert!(matches!(refused, AppendError::Storage(_)), "{refused:?}");
    assert_eq!(SendError::from(refused), SendError::Full);
    assert_eq!(j.items(), 0);
    // Space is back.
    let _ = std::fs::remove_file(&seg);
    j.append(&spans("kept", 2)).unwrap();
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    assert_eq!(drain(&mut rx).await, ["kept-0", "kept-1"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn after_a_restart_new_entries_never_reuse_numbers_of_sent_ones() {
    let d = dir();
    let j = open(&d, settings());
    let w = j.sender();
    // Several 4 KiB segments; the first entry is stuck (kept), all others delivered.
    for i in 0..40 {
        j.append(&spans(&format!("e{i}"), 4)).unwrap();
    }
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    let (_, stuck) = rx.recv_held().await.unwrap();
    let rest = drain(&mut rx).await;
    assert_eq!(rest.len(), 39 * 4);
    drop(stuck);
    assert_eq!(j.close(), 4);
    drop(j);

    let j = open(&d, settings());
    assert_eq!(j.items(), 4);
    let w = j.sender();
    j.append(&spans("new", 1)).unwrap();
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    assert_eq!(
        drain(&mut rx).await,
        ["e0-0", "e0-1", "e0-2", "e0-3", "new-0"]
    );
    assert_eq!(j.close(), 0);
    drop(j);
    let j = open(&d, settings());
    assert_eq!(j.items(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn drop_oldest_drops_what_waits_behind_a_stuck_send_and_frees_its_disk() {
    let d = dir();
    let t = Telemetry::new();
    let one = spans("x", 10);
    let record = (one.size() + HEADER) as u64;
    let s = JournalSettings {
        limit: Limit::bytes(record as usize * 8),
        drop_oldest: true,
        segment_bytes: record * 2,
        ..settings()
    };
    let j = Journal::<TracesSignal>::open(d.clone(), "traces", s, Some(&t)).unwrap();
    let w = j.sender();
    j.append(&spans("first", 10)).unwrap();
    let (mut rx, _trigger) = start_feed(&j);
    // The first entry is with a backend that never answers.
    let (_, stuck) = rx.recv_held().await.unwrap();
    for i in 0..40 {
        j.append(&spans(&format!("e{i}"), 10)).unwrap();
    }
    assert!(t.account().dropped() >= 300, "{}", t.account().dropped());
    // Disk stays near the bound although the oldest entry is not delivered.
    assert!(j.bytes() <= record * 12, "{} on disk", j.bytes());
    drop(w);
    let got = drain(&mut rx).await;
    assert_eq!(got.last().map(String::as_str), Some("e39-9"));
    assert_eq!(got.len() as u64 + t.account().dropped(), 400);
    stuck.release();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn retired_ranges_merge() {
    let mut r = BTreeMap::new();
    insert_range(&mut r, 10, 12);
    insert_range(&mut r, 14, 15);
    insert_range(&mut r, 12, 14);
    assert_eq!(r.into_iter().collect::<Vec<_>>(), [(10, 15)]);
    let mut r = BTreeMap::from([(50, 100)]);
    insert_range(&mut r, 50, 60);
    insert_range(&mut r, 40, 55);
    assert_eq!(r.into_iter().collect::<Vec<_>>(), [(40, 100)]);
}

#[tokio::test]
async fn a_segment_that_cannot_be_read_is_left_alone_and_counted() {
    let d = dir();
    std::fs::create_dir_all(d.join(segment_name(7))).unwrap();
    let t = Telemetry::new();
    let j = Journal::<TracesSignal>::open(d.clone(), "traces", settings(), Some(&t)).unwrap();
    assert!(t
        .render()
        .contains("sidekick_persistent_queue_corrupt_records_total{pipeline=\"traces\"} 1"));
    let w = j.sender();
    assert!(j.append(&spans("after", 1)).unwrap() > 7);
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    assert_eq!(drain(&mut rx).await, ["after-0"]);
    assert!(d.join(segment_name(7)).is_dir());
    std::fs::remove_dir_all(&d).unwrap();
}

mod damaged_files {
    use proptest::prelude::*;

    use super::*;

    /// Damage done to the journal's files between two runs.
    #[derive(Debug, Clone)]
    enum Damage {
        /// Cut a file at this fraction of its length.
        Truncate(usize, u8),
        /// Overwrite a byte at this fraction of a file's length.
        Flip(usize, u8, u8),
        /// Add garbage at a file's end.
        Append(usize, Vec<u8>),
        /// Replace the cursor.
        Cursor(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (0usize..8, any::<u8>()).prop_map(|(f, at)| Damage::Truncate(f, at)),
            (0usize..8, any::<u8>(), any::<u8>()).prop_map(|(f, at, b)| Damage::Flip(f, at, b)),
            (0usize..8, prop::collection::vec(any::<u8>(), 1..64))
                .prop_map(|(f, g)| Damage::Append(f, g)),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Damage::Cursor),
        ]
    }

    fn apply(d: &Path, damage: &Damage) {
        let segs = segment_files(d);
        let pick = |f: usize| segs.get(f % segs.len().max(1)).cloned();
        let at = |len: u64, frac: u8| len * frac as u64 / 256;
        match damage {
            Damage::Truncate(f, frac) => {
                if let Some(p) = pick(*f) {
                    let len = std::fs::metadata(&p).unwrap().len();
                    File::options()
                        .write(true)
                        .open(&p)
                        .unwrap()
                        .set_len(at(len, *frac))
                        .unwrap();
                }
            }
            Damage::Flip(f, frac, b) => {
                if let Some(p) = pick(*f) {
                    let mut bytes = std::fs::read(&p).unwrap();
                    if !bytes.is_empty() {
                        let i = at(bytes.len() as u64, *frac) as usize;
                        bytes[i] ^= b | 1;
                        std::fs::write(&p, bytes).unwrap();
                    }
                }
            }
            Damage::Append(f, garbage) => {
                if let Some(p) = pick(*f) {
                    let mut file = File::options().append(true).open(&p).unwrap();
                    file.write_all(garbage).unwrap();
                }
            }
            Damage::Cursor(bytes) => std::fs::write(d.join("cursor"), bytes).unwrap(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever happened to the files, the next start opens the journal, delivers
        /// entries that were written, oldest first and each at most once, and takes new
        /// data; it never panics.
        #[test]
        fn a_journal_opens_and_delivers_whatever_was_done_to_its_files(
            damages in prop::collection::vec(damage(), 1..4),
            delivered in 0usize..30,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let d = dir();
                let j = open(&d, settings());
                let w = j.sender();
                for i in 0..30 {
                    j.append(&spans(&format!("e{i:02}"), 3)).unwrap();
                }
                drop(w);
                let (mut rx, _trigger) = start_feed(&j);
                for _ in 0..delivered {
                    rx.recv_held().await.unwrap().1.release();
                }
                drop(rx);
                j.close();
                drop(j);
                for damage in &damages {
                    apply(&d, damage);
                }
                let j = open(&d, settings());
                let w = j.sender();
                j.append(&spans("new", 1)).unwrap();
                drop(w);
                let (mut rx, _trigger) = start_feed(&j);
                let got = tokio::time::timeout(Duration::from_secs(10), drain(&mut rx))
                    .await
                    .expect("the feeder finishes");
                // The new entry always arrives, last; the old ones in order, each once.
                assert_eq!(got.last().map(String::as_str), Some("new-0"));
                let old: Vec<&String> = got.iter().filter(|n| n.starts_with('e')).collect();
                let mut sorted = old.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(old, sorted);
                std::fs::remove_dir_all(&d).unwrap();
            });
        }
    }
}

/// A metrics batch of `n` gauge points whose attributes are kept apart from the request,
/// as the scrape receiver makes them (their encoding is a little longer than the batch's
/// own size estimate).
fn detached_points(n: usize) -> Batch<crate::payload::MetricsSignal> {
    use crate::payload::Attrs;
    let long = "v".repeat(120);
    let attrs = (0..n)
        .map(|i| {
            Arc::new(Attrs::new([
                ("k", long.as_str()),
                ("i", i.to_string().as_str()),
            ]))
        })
        .collect();
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    let data_points = (0..n)
        .map(|i| NumberDataPoint {
            value: Some(number_data_point::Value::AsInt(i as i64)),
            ..Default::default()
        })
        .collect();
    let metric = Metric {
        name: "g".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    };
    let request = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_detached(request, attrs)
}

#[tokio::test]
async fn delivered_entries_give_back_exactly_the_bytes_they_took() {
    use crate::payload::MetricsSignal;
    let d = dir();
    let j: Arc<Journal<MetricsSignal>> =
        Journal::open(d.clone(), "metrics", settings(), None).unwrap();
    let w = j.sender();
    let batch = detached_points(50);
    assert_ne!(
        batch.size(),
        batch.encoded().len(),
        "the estimate is not the encoding"
    );
    for _ in 0..20 {
        j.append(&batch).unwrap();
    }
    assert!(j.live_bytes() > 0);
    drop(w);
    let (mut rx, _trigger) = start_feed(&j);
    let mut points = 0;
    while let Some((batch, hold)) = rx.recv_held().await {
        points += batch.len();
        hold.release();
    }
    assert_eq!(points, 20 * 50);
    assert_eq!(j.items(), 0);
    assert_eq!(j.live_bytes(), 0, "the byte account drifted");
    assert_eq!(j.close(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}
