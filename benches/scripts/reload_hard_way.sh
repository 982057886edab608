#!/usr/bin/env bash
# The hard way through reloads: a backend that answers every request 300 ms late, 5,000
# spans/s over gRPC, two bad OTLP/HTTP posts per reload, 200 idle connections, and 10
# reloads, most rebuilding the exporter (its old instance drains), one keeping it.
#   benches/scripts/reload_hard_way.sh [PATH/TO/sidekick]   (needs otelbench: OB; ports 14317/14318, 18888, 24317/24318)
set -u
OB=${OB:-$PWD/target/otelbench/release/otelbench}
BIN=$(realpath "${1:-target/dist/sidekick}")
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cfg() { cat <<YAML
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:14317}
      http: {endpoint: 127.0.0.1:14318}
processors:
  batch:
    timeout: $1
exporters:
  otlp:
    endpoint: http://127.0.0.1:24317
    compression: none
    timeout: $2
service:
  telemetry: {metrics: {address: 127.0.0.1:18888}}
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [otlp]}
YAML
}
cfg 200ms 5s > hard.yaml
$OB sink --grpc 127.0.0.1:24317 --http 127.0.0.1:24318 --mode decode --track-ids --delay-ms 300 > sink.json 2>/dev/null & SP=$!
sleep 0.3
$BIN --config "$WORK/hard.yaml" > sk.log 2>&1 & CP=$!
sleep 1
python3 - <<'PY' & IP=$!
import socket, time
conns = [socket.create_connection(("127.0.0.1", 14317)) for _ in range(100)] + [socket.create_connection(("127.0.0.1", 14318)) for _ in range(100)]
time.sleep(22)
PY
$OB blast --proto grpc --target http://127.0.0.1:14317 --signal traces --rate 5000 --duration 15 --batch 100 --concurrency 4 --unique-ids > blast.txt 2>blast.err & BP=$!
sleep 1
for i in $(seq 1 10); do
  if [ $((i % 2)) = 1 ]; then cfg 100ms 5s; else cfg 100ms 6s; fi > hard.yaml.new
  [ $((i % 4)) = 0 ] && cfg 200ms 6s > hard.yaml.new
  mv hard.yaml.new hard.yaml; kill -HUP $CP
  curl -s -o /dev/null -w "%{http_code} " -X POST -H 'content-type: application/x-protobuf' --data-binary 'not protobuf at all' http://127.0.0.1:14318/v1/traces
  curl -s -o /dev/null -w "%{http_code} " -X POST -H 'content-type: application/json' --data '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0102030405060708","name":"x"}]}]}]}' http://127.0.0.1:14318/v1/traces
  sleep 1.3
done
echo
wait $BP
sleep 3
echo "anon_kb=$(awk '/RssAnon/{print $2}' /proc/$CP/status) hwm_kb=$(awk '/VmHWM/{print $2}' /proc/$CP/status)"
curl -s 127.0.0.1:18888/metrics | grep -E '^(sidekick_config_reloads_total|otelcol_receiver_(accepted|refused)_spans_total|otelcol_exporter_send_failed_spans_total|otelcol_exporter_sent_spans_total|sidekick_receiver_refused_requests_total)'
kill $CP; wait $CP; echo "exit=$?"
sleep 0.5
curl -s http://127.0.0.1:24318/stats | python3 -c "import json,sys; d=json.load(sys.stdin); print('sink spans', d['spans'], 'distinct', d['distinct_span_ids'], 'dups', d['dup_span_ids'])"
kill $SP; kill $IP 2>/dev/null
grep -o "sent_items=[^ ]*\|failed_requests=[^ ]*\|p99_ms=[^ ]*" blast.txt | tr '\n' ' '; echo
grep -c '"config reloaded\|config reloaded' sk.log; grep -o 'kept_exporters=[^ ]*' sk.log | sort | uniq -c; grep -E "dropped|could not deliver|drained" sk.log | cut -c1-220 | sort | uniq -c | head
