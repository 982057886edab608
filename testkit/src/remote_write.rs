//! A fake Prometheus remote-write receiver: decodes snappy 1.0 `WriteRequest`s and 2.0
//! `Request`s (by `Content-Type`, answering 2.0 with the written-counts headers), records
//! every series and request header, and fails on demand (or turns 2.0 down with 415).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost::Message;
use sidekick_collector::pipe::{stop_pair, StopTrigger};
use sidekick_prometheus::prompb::{v2, WriteRequest};
use tokio::sync::Notify;

/// One received series: labels in the order sent, and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSeries {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(f64, i64)>,
}

impl ReceivedSeries {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    series: Mutex<Vec<ReceivedSeries>>,
    /// (type, family, help, unit)
    metadata: Mutex<Vec<(i32, String, String, String)>>,
    headers: Mutex<Vec<http::HeaderMap>>,
    requests: Mutex<usize>,
    failures: Mutex<VecDeque<(u16, Option<u64>)>>,
    changed: Notify,
    /// Count samples only, keep nothing (for long benchmarks).
    counting: bool,
    /// Answer 2.0 requests with 415 Unsupported Media Type.
    refuse_v2: std::sync::atomic::AtomicBool,
    /// Take 2.0 requests for 1.0 ones, as an old receiver that reads no `Content-Type`
    /// does (an empty request, answered 204 without written-counts headers).
    misread_v2: std::sync::atomic::AtomicBool,
    samples: AtomicU64,
}

pub struct RemoteWriteSink {
    pub address: SocketAddr,
    state: Arc<State>,
    _stop: StopTrigger,
}

impl RemoteWriteSink {
    pub async fn start() -> RemoteWriteSink {
        Self::start_with(State::default()).await
    }

    /// A sink that counts the samples it receives and keeps nothing else.
    pub async fn start_counting() -> RemoteWriteSink {
        Self::start_with(State {
            counting: true,
            ..State::default()
        })
        .await
    }

    /// Answer remote-write 2.0 requests with 415, as a 1.0-only receiver does.
    pub fn refuse_v2(&self) {
        self.state.refuse_v2.store(true, Ordering::Relaxed);
    }

    /// Read remote-write 2.0 requests as 1.0 ones, as a 1.0 receiver that ignores
    /// `Content-Type` does.
    pub fn misread_v2(&self) {
        self.state.misread_v2.store(true, Ordering::Relaxed);
    }

    /// Samples received since start (counted in both modes).
    pub fn samples(&self) -> u64 {
        self.state.samples.load(Ordering::Relaxed)
    }

    async fn start_with(state: State) -> RemoteWriteSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let address = listener.local_addr().expect("sink address");
        let state = Arc::new(state);
        let (trigger, stop) = stop_pair();
        let s = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let s = Arc::clone(&s);
            async move { Ok::<_, Infallible>(handle(&s, req).await) }
        });
        tokio::spawn(sidekick_transport::server::serve_service(
            listener,
            service,
            stop.fired(),
        ));
        RemoteWriteSink {
            address,
            state,
            _stop: trigger,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.address)
    }

    /// Answers the next `n` requests with `status` (and `Retry-After` seconds).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.state
            .failures
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n((status, retry_after), n));
    }

    pub fn series(&self) -> Vec<ReceivedSeries> {
        self.state.series.lock().unwrap().clone()
    }

    pub fn metadata(&self) -> Vec<(i32, String, String, String)> {
        self.state.metadata.lock().unwrap().clone()
    }

    pub fn headers(&self) -> Vec<http::HeaderMap> {
        self.state.headers.lock().unwrap().clone()
    }

    /// Requests answered so far, failed ones included.
    pub fn requests(&self) -> usize {
        *self.state.requests.lock().unwrap()
    }

    pub async fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&RemoteWriteSink) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.state.changed.notified();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(self);
            }
        }
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.headers.lock().unwrap().push(req.headers().clone());
    *state.requests.lock().unwrap() += 1;
    let failure = state.failures.lock().unwrap().pop_front();
    let reply = |status: StatusCode, retry: Option<u64>| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = status;
        if let Some(s) = retry {
            r.headers_mut().insert(http::header::RETRY_AFTER, s.into());
        }
        state.changed.notify_waiters();
        r
    };
    if let Some((code, retry)) = failure {
        return reply(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry,
        );
    }
    let is_v2 = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == v2::CONTENT_TYPE.as_bytes())
        && !state.misread_v2.load(Ordering::Relaxed);
    if is_v2 && state.refuse_v2.load(Ordering::Relaxed) {
        return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, None);
    };
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
        return reply(StatusCode::BAD_REQUEST, None);
    };
    let wr = if is_v2 {
        let Ok(request) = v2::Request::decode(&raw[..]) else {
            return reply(StatusCode::BAD_REQUEST, None);
        };
        let mut wr = request.to_v1();
        // 2.0 metadata is per series: kept as (type, series name, help, unit).
        wr.metadata = request
            .timeseries
            .iter()
            .filter_map(|ts| {
                let m = ts.metadata.as_ref()?;
                let labels = request.labels(&ts.labels_refs);
                let name = labels.into_iter().find(|(k, _)| k == "__name__")?.1;
                Some(sidekick_prometheus::prompb::MetricMetadata {
                    r#type: m.r#type,
                    metric_family_name: name,
                    help: request.symbol(m.help_ref).to_string(),
                    unit: request.symbol(m.unit_ref).to_string(),
                })
            })
            .collect();
        wr
    } else {
        let Ok(wr) = WriteRequest::decode(&raw[..]) else {
            return reply(StatusCode::BAD_REQUEST, None);
        };
        wr
    };
    let histograms: usize = wr.timeseries.iter().map(|ts| ts.histograms.len()).sum();
    let exemplars: usize = wr.timeseries.iter().map(|ts| ts.exemplars.len()).sum();
    let written = |mut r: Response<Full<Bytes>>, samples: usize| {
        if is_v2 {
            for (header, n) in [
                ("x-prometheus-remote-write-samples-written", samples),
                ("x-prometheus-remote-write-histograms-written", histograms),
                ("x-prometheus-remote-write-exemplars-written", exemplars),
            ] {
                r.headers_mut().insert(header, n.into());
            }
        }
        r
    };
    let samples: usize = wr.timeseries.iter().map(|ts| ts.samples.len()).sum();
    state.samples.fetch_add(samples as u64, Ordering::Relaxed);
    if state.counting {
        return written(reply(StatusCode::NO_CONTENT, None), samples);
    }
    state
        .series
        .lock()
        .unwrap()
        .extend(wr.timeseries.into_iter().map(|ts| {
            ReceivedSeries {
                labels: ts.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                samples: ts
                    .samples
                    .into_iter()
                    .map(|s| (s.value, s.timestamp))
                    .collect(),
            }
        }));
    state.metadata.lock().unwrap().extend(
        wr.metadata
            .into_iter()
            .map(|m| (m.r#type, m.metric_family_name, m.help, m.unit)),
    );
    written(reply(StatusCode::NO_CONTENT, None), samples)
}
