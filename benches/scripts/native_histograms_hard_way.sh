#!/usr/bin/env bash
# Native histograms the hard way: Sidekick scrapes a protobuf page (2,000 native
# histograms, a classic histogram, a summary, a counter, and one inconsistent native
# family of 5 series) every second and remote-writes it, configured for remote-write 2.0,
# to a 1.0-only sink that answers every request 300 ms late, while 200 idle connections
# sit on its OTLP/HTTP port. Prints peak RSS, Sidekick's counters before SIGTERM, its exit
# status, the sink's counts and the log lines that matter.
#
#   native_histograms_hard_way.sh SIDEKICK PAGE.bin
#
# PAGE.bin: `testkit::gen::protobuf_page(2000)` plus the broken family (see BENCHMARKS.md).
# Env: OB (otelbench binary), SECONDS_RUN [60].
set -u
SK_BIN=$1; PAGE=$2
OB=${OB:-target/otelbench/release/otelbench}; RUN=${SECONDS_RUN:-60}
dir=$(mktemp -d)
cat > "$dir/serve.py" <<PY
import http.server
page = open("$PAGE", "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers(); self.wfile.write(page)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 29101), H).serve_forever()
PY
cat > "$dir/idle.py" <<PY
import socket, time
socks = [socket.create_connection(("127.0.0.1", 24318)) for _ in range(200)]
time.sleep($RUN + 10)
PY
cat > "$dir/sk.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http: {endpoint: 127.0.0.1:24318}
  prometheus:
    config:
      scrape_configs:
        - job_name: native
          scrape_interval: 1s
          scrape_native_histograms: true
          static_configs:
            - targets: ["127.0.0.1:29101"]
processors:
  batch:
exporters:
  prometheusremotewrite:
    endpoint: http://127.0.0.1:29090/api/v1/write
    protobuf_message: io.prometheus.write.v2.Request
service:
  telemetry: {metrics: {address: 127.0.0.1:18888}}
  pipelines:
    metrics: {receivers: [otlp, prometheus], processors: [batch], exporters: [prometheusremotewrite]}
YAML
python3 "$dir/serve.py" & SRV=$!
"$OB" sink --rw 127.0.0.1:29090 --delay-ms 300 >/dev/null 2>&1 & SINK=$!
sleep 0.5
"$SK_BIN" --config "$dir/sk.yaml" > "$dir/sk.log" 2>&1 & SK=$!
sleep 1
python3 "$dir/idle.py" & IDLE=$!
sleep "$RUN"
grep -E "^(VmHWM|RssAnon)" /proc/$SK/status
curl -s 127.0.0.1:18888/metrics | grep -E "^otelcol_receiver_accepted_metric_points_total\{receiver=\"prometheus\"|^otelcol_exporter_(sent|send_failed)_metric_points|^sidekick_scrape_refused_families"
kill -TERM $SK; wait $SK; echo "sidekick exit $?"
curl -s 127.0.0.1:29090/stats; echo
kill $SRV $SINK $IDLE 2>/dev/null
grep -E "from now on|left out|stopped;" "$dir/sk.log" | cut -c1-200
rm -rf "$dir"
