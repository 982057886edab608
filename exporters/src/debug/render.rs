//! Human-readable renderings of OTLP requests for the `debug` exporter.

use sidekick_collector::util::hex;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::resource::v1::Resource;

pub trait Render {
    /// One line per item (`normal`), or every field (`detailed`).
    fn render(&self, detailed: bool) -> String;
}

pub fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => "<empty>".into(),
        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => format!("0x{}", hex(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| value(&Some(v.clone()))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(any_value::Value::KvlistValue(kv)) => format!("{{{}}}", attrs(&kv.values)),
        Some(_) => "<unsupported>".into(),
    }
}

fn attrs(kvs: &[KeyValue]) -> String {
    kvs.iter()
        .map(|kv| format!("{}={}", kv.key, value(&kv.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn resource_line(out: &mut String, r: &Option<Resource>) {
    let a = r.as_ref().map(|r| attrs(&r.attributes)).unwrap_or_default();
    let _ = writeln!(out, "Resource {{{a}}}");
}

impl Render for ExportTraceServiceRequest {
    fn render(&self, detailed: bool) -> String {
        let mut out = String::new();
        for rs in &self.resource_spans {
            resource_line(&mut out, &rs.resource);
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref();
                let _ = writeln!(
                    out,
                    "  Scope {} {}",
                    scope.map(|s| s.name.as_str()).unwrap_or(""),
                    scope.map(|s| s.version.as_str()).unwrap_or("")
                );
                for s in &ss.spans {
                    let _ = write!(
                        out,
                        "    {} trace_id={} span_id={}",
                        s.name,
                        hex(&s.trace_id),
                        hex(&s.span_id)
                    );
                    if detailed {
                        let _ = write!(
                            out,
                            " parent_span_id={} kind={} start={} end={} status={} attributes={{{}}} events={} links={}",
                            hex(&s.parent_span_id),
                            s.kind,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            s.status.as_ref().map(|st| st.code).unwrap_or(0),
                            attrs(&s.attributes),
                            s.events.len(),
                            s.links.len()
                        );
                    }
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Render for ExportMetricsServiceRequest {
    fn render(&self, detailed: bool) -> String {
        let mut out = String::new();
        for rm in &self.resource_metrics {
            resource_line(&mut out, &rm.resource);
            for sm in &rm.scope_metrics {
                let _ = writeln!(
                    out,
                    "  Scope {}",
                    sm.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("")
                );
                for m in &sm.metrics {
                    let (kind, points) = match &m.data {
                        Some(Data::Gauge(g)) => ("gauge", g.data_points.len()),
                        Some(Data::Sum(s)) => ("sum", s.data_points.len()),
                        Some(Data::Histogram(h)) => ("histogram", h.data_points.len()),
                        Some(Data::ExponentialHistogram(h)) => {
                            ("exponential_histogram", h.data_points.len())
                        }
                        Some(Data::Summary(s)) => ("summary", s.data_points.len()),
                        None => ("empty", 0),
                    };
                    let _ = writeln!(
                        out,
                        "    {} ({kind}, unit {:?}): {points} points",
                        m.name, m.unit
                    );
                    if !detailed {
                        continue;
                    }
                    let numbers = match &m.data {
                        Some(Data::Gauge(g)) => &g.data_points[..],
                        Some(Data::Sum(s)) => &s.data_points[..],
                        _ => &[],
                    };
                    for p in numbers {
                        let v = match p.value {
                            Some(number_data_point::Value::AsInt(i)) => i.to_string(),
                            Some(number_data_point::Value::AsDouble(d)) => d.to_string(),
                            None => "<none>".into(),
                        };
                        let _ = writeln!(
                            out,
                            "      {{{}}} {v} @ {}",
                            attrs(&p.attributes),
                            p.time_unix_nano
                        );
                    }
                }
            }
        }
        out
    }
}

impl Render for ExportLogsServiceRequest {
    fn render(&self, detailed: bool) -> String {
        let mut out = String::new();
        for rl in &self.resource_logs {
            resource_line(&mut out, &rl.resource);
            for sl in &rl.scope_logs {
                let _ = writeln!(
                    out,
                    "  Scope {}",
                    sl.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("")
                );
                for l in &sl.log_records {
                    let _ = write!(out, "    [{}] {}", l.severity_text, value(&l.body));
                    if detailed {
                        let _ = write!(
                            out,
                            " time={} severity={} trace_id={} span_id={} attributes={{{}}}",
                            l.time_unix_nano,
                            l.severity_number,
                            hex(&l.trace_id),
                            hex(&l.span_id),
                            attrs(&l.attributes)
                        );
                    }
                    out.push('\n');
                }
            }
        }
        out
    }
}
