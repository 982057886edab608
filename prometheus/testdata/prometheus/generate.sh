#!/usr/bin/env bash
# Regenerates the real-world scrape pages the parser and translation tests read:
# the Debian prometheus-node-exporter's and the prometheus server's own /metrics. Needs
# both Debian packages installed. Debian 12's versions (node_exporter 1.5, Prometheus
# 2.42) answer in the Prometheus text format even when OpenMetrics is asked for, so the
# OpenMetrics cases live in the hand-written openmetrics.txt.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >/dev/null 2>&1 &
printf 'global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: self\n    static_configs: [{targets: ["127.0.0.1:19090"]}]\n' > "$tmp/prometheus.yml"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address=127.0.0.1:19090 >/dev/null 2>&1 &

for url in http://127.0.0.1:19100/metrics http://127.0.0.1:19090/metrics; do
  for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
done
sleep 3 # let Prometheus scrape itself so its histograms have data

text='text/plain;version=0.0.4'
curl -sf -H "Accept: $text" http://127.0.0.1:19100/metrics > node_exporter.prom
curl -sf -H "Accept: $text" http://127.0.0.1:19090/metrics > prometheus.prom
wc -l ./*.prom
