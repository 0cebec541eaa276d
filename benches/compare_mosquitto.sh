#!/usr/bin/env bash
# Broker throughput: `midge broker` against mosquitto (the Debian package) in the same run.
#
# Builds release binaries, starts both brokers on 127.0.0.1, and runs every scenario of
# benches/src/bin/loadgen.rs (fan-in and fan-out, QoS 0 and 1) against each broker in turn,
# alternating which goes first, ROUNDS times. Prints one result line per run, then a table:
# the median delivered messages/s of each broker, the ratio midge/mosquitto, and the
# acknowledged QoS 1 messages lost (summed over all rounds).
#
# Environment:
#   ROUNDS=3              rounds (each runs all scenarios on every broker)
#   QOS0_MESSAGES=200000  messages published per QoS 0 run
#   QOS1_MESSAGES=50000   messages published per QoS 1 run
#   CLIENTS=8             publishers (fan-in) or subscribers (fan-out)
#   LOADGEN_THREADS=1     worker threads of the load generator
#   WITH_DEFAULTS=1       also run a third broker: midge with its default configuration
#   MOSQUITTO=/usr/sbin/mosquitto
#
# Only 127.0.0.1 is used; every run is bounded (loadgen --time-limit, plus `timeout`); the
# brokers are killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
QOS0_MESSAGES=${QOS0_MESSAGES:-200000}
QOS1_MESSAGES=${QOS1_MESSAGES:-50000}
CLIENTS=${CLIENTS:-8}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
WITH_DEFAULTS=${WITH_DEFAULTS:-0}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
TIME_LIMIT=30

command -v "$MOSQUITTO" >/dev/null || { echo "mosquitto not found at $MOSQUITTO" >&2; exit 1; }

cargo build --release -p midge -p midge-benches
MIDGE=target/release/midge
LOADGEN=target/release/loadgen

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# A free TCP port on 127.0.0.1, from the kernel.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

MQ_PORT=$(free_port)
MIDGE_PORT=$(free_port)
DEFAULTS_PORT=$(free_port)

# mosquitto: no queue limits (0 = unlimited) so that it drops no QoS 1 message, and the same
# in-flight window towards each subscriber as midge's default (limits.max_inflight = 256).
cat >"$tmp/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 256
max_inflight_bytes 0
log_dest stderr
log_type error
log_type warning
EOF

# midge: the same lifted queue limits. inbox_capacity is the per-connection channel from the
# router; the session queue holds what does not fit in the in-flight window.
cat >"$tmp/midge.toml" <<EOF
[limits]
max_inflight = 256
inbox_capacity = 10000000
max_queued_bytes_total = 17179869184

[sessions]
max_queued_messages = 100000000
max_queued_bytes = 17179869184
EOF

"$MOSQUITTO" -c "$tmp/mosquitto.conf" 2>"$tmp/mosquitto.log" &
pids+=($!)
"$MIDGE" broker -p "$MIDGE_PORT" --bind 127.0.0.1 --config "$tmp/midge.toml" >"$tmp/midge.log" 2>&1 &
pids+=($!)
brokers=(mosquitto midge)
declare -A port=([mosquitto]=$MQ_PORT [midge]=$MIDGE_PORT)
if [ "$WITH_DEFAULTS" = 1 ]; then
  "$MIDGE" broker -p "$DEFAULTS_PORT" --bind 127.0.0.1 >"$tmp/midge-defaults.log" 2>&1 &
  pids+=($!)
  brokers+=(midge-defaults)
  port[midge-defaults]=$DEFAULTS_PORT
fi
for b in "${brokers[@]}"; do wait_port "${port[$b]}"; done

echo "mosquitto: $("$MOSQUITTO" -h 2>/dev/null | head -1)"
echo "midge:     $("$MIDGE" --version)"
echo "cores:     $(nproc)   rounds: $ROUNDS   clients: $CLIENTS   loadgen threads: $LOADGEN_THREADS"
echo

results="$tmp/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  order=("${brokers[@]}")
  if [ $((round % 2)) = 0 ]; then
    # Reverse the order every other round.
    order=()
    for ((i = ${#brokers[@]} - 1; i >= 0; i--)); do order+=("${brokers[$i]}"); done
  fi
  for scenario in fan-in fan-out; do
    for qos in 0 1; do
      if [ "$qos" = 0 ]; then n=$QOS0_MESSAGES; else n=$QOS1_MESSAGES; fi
      for b in "${order[@]}"; do
        line=$(timeout $((TIME_LIMIT + 30)) "$LOADGEN" --addr "127.0.0.1:${port[$b]}" \
          --scenario "$scenario" --qos "$qos" --messages "$n" --clients "$CLIENTS" \
          --threads "$LOADGEN_THREADS" --time-limit "$TIME_LIMIT" --label "$b") || true
        [ -n "$line" ] || line="label=$b scenario=$scenario qos=$qos msgs_per_s=0 lost=0 errors=loadgen_failed"
        echo "round=$round $line" | tee -a "$results"
      done
    done
  done
done

echo
echo "Median delivered messages/s over $ROUNDS rounds (QoS 0: $QOS0_MESSAGES, QoS 1: $QOS1_MESSAGES messages published per run, 64-byte payloads)"
awk -v brokers="${brokers[*]}" '
  {
    delete f
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    key = f["scenario"] " qos" f["qos"]
    rate[key, f["label"], ++count[key, f["label"]]] = f["msgs_per_s"]
    lost[key, f["label"]] += f["lost"]
    missing[key, f["label"]] += f["missing"]
    if (!(key in seen)) { seen[key] = 1; keys[++nkeys] = key }
  }
  function median(key, b,    n, i, j, t, v) {
    n = count[key, b]
    for (i = 1; i <= n; i++) v[i] = rate[key, b, i] + 0
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    if (n % 2) return v[(n + 1) / 2]
    return (v[n / 2] + v[n / 2 + 1]) / 2
  }
  END {
    nb = split(brokers, bs, " ")
    hdr = sprintf("| %-12s", "scenario")
    sep = "|--------------"
    for (i = 1; i <= nb; i++) { hdr = hdr sprintf(" | %14s", bs[i] " msg/s"); sep = sep "|----------------" }
    hdr = hdr " | midge/mosquitto |"; sep = sep "|-----------------|"
    for (i = 1; i <= nb; i++) { hdr = hdr sprintf(" %s lost QoS1 / undelivered |", bs[i]); sep = sep "---|" }
    print hdr; print sep
    for (k = 1; k <= nkeys; k++) {
      key = keys[k]
      row = sprintf("| %-12s", key)
      for (i = 1; i <= nb; i++) { m[bs[i]] = median(key, bs[i]); row = row sprintf(" | %14.0f", m[bs[i]]) }
      ratio = m["mosquitto"] > 0 ? m["midge"] / m["mosquitto"] : 0
      row = row sprintf(" | %15.2f |", ratio)
      for (i = 1; i <= nb; i++) row = row sprintf(" %d / %d |", lost[key, bs[i]], missing[key, bs[i]])
      print row
    }
  }' "$results"

for b in "${brokers[@]}"; do
  log="$tmp/$b.log"
  if [ -s "$log" ]; then
    echo
    echo "$b log (last lines):"
    tail -n 5 "$log"
  fi
done
