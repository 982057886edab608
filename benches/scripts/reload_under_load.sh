#!/usr/bin/env bash
# 20,000 spans/s over gRPC into otlp → resource → batch → otlp while the config is
# reloaded 20 times (SIGHUP once a second): prints the reload counts, the spans sent and
# received (and duplicates), the refused requests and memory before and after.
#
#   benches/scripts/reload_under_load.sh PATH/TO/sidekick
#
# RELOADS=0 runs the same load without reloading, for the memory it takes by itself.
# Needs otelbench (OB, default target/otelbench/release/otelbench) and free ports 14317,
# 18888, 24317/24318 and 24417/24418. Works in a temporary directory.
set -u
OB=${OB:-$PWD/target/otelbench/release/otelbench}
BIN=$(realpath "$1")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cfg() { # $1 batch timeout, $2 extra attribute (or empty), $3 second exporter (0/1)
cat <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:14317
processors:
  batch:
    timeout: $1
  resource:
    attributes:
      - key: reload.generation
        value: "$2"
        action: upsert
exporters:
  otlp:
    endpoint: http://127.0.0.1:24317
    compression: none
  otlp/second:
    endpoint: http://127.0.0.1:24417
    compression: none
service:
  telemetry:
    metrics:
      address: 127.0.0.1:18888
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource, batch]
      exporters: [otlp$( [ "$3" = 1 ] && echo ", otlp/second")]
YAML
}
cfg 200ms g0 0 > reload.yaml
$OB sink --grpc 127.0.0.1:24317 --http 127.0.0.1:24318 --mode count --track-ids > sink.json 2>/dev/null & SP=$!
$OB sink --grpc 127.0.0.1:24417 --http 127.0.0.1:24418 --mode count > sink2.json 2>/dev/null & SP2=$!
sleep 0.3
$BIN --config $WORK/reload.yaml > reload.log 2>&1 & CP=$!
sleep 1
rss0=$(awk '/VmRSS/{print $2}' /proc/$CP/status); anon0=$(awk '/RssAnon/{print $2}' /proc/$CP/status); echo "anon_before_kb=$anon0"
$OB blast --proto grpc --target http://127.0.0.1:14317 --signal traces --rate 20000 --duration 24 --batch 100 --concurrency 4 --unique-ids > blast.txt 2>blast.err & BP=$!
sleep 2
for i in $(seq 1 "${RELOADS:-20}"); do
  case $((i % 4)) in
    1) cfg 100ms g$i 0 ;;   # batch timeout changed
    2) cfg 100ms g$i-attr 0 ;;  # attribute changed
    3) cfg 100ms g$i 1 ;;   # a second exporter added
    0) cfg 200ms g$i 0 ;;   # and removed
  esac > reload.yaml.new
  mv reload.yaml.new reload.yaml
  kill -HUP $CP
  sleep 1
done
wait $BP
sleep 3
rss1=$(awk '/VmRSS/{print $2}' /proc/$CP/status)
sleep 10
rss2=$(awk '/VmRSS/{print $2}' /proc/$CP/status)
anon2=$(awk '/RssAnon/{print $2}' /proc/$CP/status)
curl -s 127.0.0.1:18888/metrics | grep -E '^sidekick_config_reloads_total'
kill $CP; wait $CP; echo "exit=$?"
sleep 0.5
curl -s http://127.0.0.1:24318/stats | python3 -c "import json,sys; d=json.load(sys.stdin); print('sink spans', d['spans'], 'distinct', d['distinct_span_ids'], 'dups', d['dup_span_ids'])"
curl -s http://127.0.0.1:24418/stats | python3 -c "import json,sys; d=json.load(sys.stdin); print('second sink spans', d['spans'])"
kill $SP $SP2
grep -o "sent_items=[^ ]*\|failed_requests=[^ ]*\|ok_requests=[^ ]*\|p99_ms=[^ ]*\|max_ms=[^ ]*" blast.txt | tr '\n' ' '; echo
echo "rss_before_kb=$rss0 rss_after_kb=$rss1 rss_10s_later_kb=$rss2 anon_10s_later_kb=$anon2"
grep -c "config reloading" reload.log
