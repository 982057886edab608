#!/usr/bin/env bash
# What filter, transform and probabilistic_sampler cost on a sidecar's traces: runs
# otelbench's measure_otlp_push.sh (4 clients x 100-span gRPC requests, 15 s) against
# three configs in turn — base (memory_limiter, resourcedetection, batch), filter (plus a
# filter dropping about 9% of the spans by http.route) and full (plus a transform set and
# a 50% hash_seed sampler) — and prints per run the CPU-seconds per million spans sent,
# peak RSS and peak RssAnon.
#
#   benches/scripts/processing.sh PATH/TO/sidekick [RUNS]      (RATE=200000 for a fixed rate)
#
# Needs otelbench (OB, default target/otelbench/release/otelbench) and free ports 14317,
# 24317 and 24318. Works in a temporary directory.
set -u
OB=${OB:-$PWD/target/otelbench/release/otelbench}
BIN=$(realpath "$1")
RUNS=${2:-3}
SCRIPT=$(realpath "$(dirname "$0")/../../../shared/tools/otelbench/scripts/measure_otlp_push.sh")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cfg() { # $1: the processors between resourcedetection and batch
cat <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:14317
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 400
  resourcedetection:
    detectors: [env, system]
  filter:
    traces:
      span:
        - IsMatch(attributes["http.route"], "^/api/v1/(orders|products)")
  transform:
    trace_statements:
      - context: span
        statements:
          - set(attributes["deployment.environment.name"], "prod")
  probabilistic_sampler:
    sampling_percentage: 50
  batch: {}
exporters:
  otlp:
    endpoint: http://127.0.0.1:24317
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      address: 127.0.0.1:0
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, resourcedetection, $1 batch]
      exporters: [otlp]
YAML
}
cfg "" >"$WORK/base.yaml"
cfg "filter," >"$WORK/filter.yaml"
cfg "filter, transform, probabilistic_sampler," >"$WORK/full.yaml"
# Runs the collector in place (exec) while recording its peak RssAnon.
cat >"$WORK/anon.sh" <<'SH'
#!/usr/bin/env bash
pid=$$
( max=0; while [ -e /proc/$pid/status ]; do
    v=$(awk '/^RssAnon/{print $2}' /proc/$pid/status 2>/dev/null)
    [ "${v:-0}" -gt "$max" ] && max=$v && echo "$max" >"$ANON_OUT"; sleep 0.1; done ) &
exec "$@"
SH
chmod +x "$WORK/anon.sh"
for run in $(seq "$RUNS"); do
  for name in base filter full; do
    ANON_OUT=$WORK/$name.anon OB=$OB OUT=$WORK RUNS=1 DURATION=15 BATCH=100 CONC=4 IDLE_S=2 \
      bash "$SCRIPT" "$name" traces -- "$WORK/anon.sh" "$BIN" --config "$WORK/$name.yaml" >/dev/null 2>&1
    line=$(grep "^$name-traces" "$WORK/summary.txt" | tail -1)
    python3 - "$name" "$line" "$(cat "$WORK/$name.anon" 2>/dev/null || echo 0)" <<'PY'
import re, sys
name, line, anon = sys.argv[1], sys.argv[2], int(sys.argv[3])
kv = lambda k: re.search(r'(?:^| )' + k + r'=([^ ]+)', line).group(1)
sent, cpu = int(kv('sent')), float(kv('coll_cpu_s'))
print(f"{name}: cpu_s_per_M_sent={cpu / sent * 1e6:.3f} spans_per_s={kv('blast_items_per_s')} "
      f"delivered={kv('sink_got')} dups={kv('dups')} peak_rss_mb={kv('peak_rss_mb')} "
      f"peak_anon_mb={anon / 1024:.1f} p99_ms={kv('p99_ms')}")
PY
  done
done
