//! A fake scrape target: serves whatever page the test sets, on any path, in the format
//! it names (text, OpenMetrics or the protobuf exposition), counts the scrapes and keeps
//! each scrape's `Accept` header.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use sidekick_collector::pipe::{stop_pair, StopTrigger};

#[derive(Clone)]
struct Page {
    status: u16,
    content_type: String,
    body: Bytes,
    delay: Duration,
}

pub struct ScrapeTarget {
    pub address: SocketAddr,
    page: Arc<Mutex<Page>>,
    scrapes: Arc<AtomicUsize>,
    accepts: Arc<Mutex<Vec<String>>>,
    _stop: StopTrigger,
}

pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl ScrapeTarget {
    pub async fn start() -> ScrapeTarget {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind target");
        let address = listener.local_addr().expect("target address");
        let page = Arc::new(Mutex::new(Page {
            status: 200,
            content_type: PROMETHEUS_TEXT.into(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }));
        let scrapes = Arc::new(AtomicUsize::new(0));
        let accepts = Arc::new(Mutex::new(Vec::new()));
        let (trigger, stop) = stop_pair();
        let (p, n, a) = (
            Arc::clone(&page),
            Arc::clone(&scrapes),
            Arc::clone(&accepts),
        );
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let page = p.lock().unwrap().clone();
            let n = Arc::clone(&n);
            let accept = req.headers().get(http::header::ACCEPT);
            let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
            a.lock().unwrap().push(accept.to_string());
            async move {
                if !page.delay.is_zero() {
                    tokio::time::sleep(page.delay).await;
                }
                n.fetch_add(1, Ordering::SeqCst);
                let mut r = Response::new(Full::new(page.body));
                *r.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    page.content_type.parse().unwrap(),
                );
                Ok::<_, Infallible>(r)
            }
        });
        tokio::spawn(sidekick_transport::server::serve_service(
            listener,
            service,
            stop.fired(),
        ));
        ScrapeTarget {
            address,
            page,
            scrapes,
            accepts,
            _stop: trigger,
        }
    }

    /// Serves `body` with `content_type` from now on.
    pub fn set_page(&self, content_type: &str, body: &str) {
        self.set_bytes(content_type, body.as_bytes().to_vec());
    }

    /// Serves `body` (a protobuf page, say) with `content_type` from now on.
    pub fn set_bytes(&self, content_type: &str, body: Vec<u8>) {
        let mut p = self.page.lock().unwrap();
        p.status = 200;
        p.content_type = content_type.into();
        p.body = body.into();
    }

    /// The `Accept` header of each scrape so far.
    pub fn accepts(&self) -> Vec<String> {
        self.accepts.lock().unwrap().clone()
    }

    /// Answers with `status` (and an HTML body) from now on.
    pub fn set_status(&self, status: u16) {
        let mut p = self.page.lock().unwrap();
        p.status = status;
        p.content_type = "text/html".into();
        p.body = Bytes::from_static(b"<html><body>Internal Server Error</body></html>");
    }

    /// Waits this long before answering, from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.page.lock().unwrap().delay = delay;
    }

    pub fn scrapes(&self) -> usize {
        self.scrapes.load(Ordering::SeqCst)
    }
}
