#!/usr/bin/env bash
# Side-by-side broker comparison with `midge bench`: the midge broker (release build), mosquitto
# (Debian package) and, when `rumqttd` is on PATH, rumqttd, in one run.
# MIDGE_PROFILE=profiling builds and runs midge with the `profiling` profile instead: the same
# optimized code with debug symbols, for `perf record` on the broker while a scenario runs.
#
#   benches/compare.sh [--quick] [--rounds N] [--only a,b,...] [--transport T] [--check-bench]
#
# Each broker gets its own 127.0.0.1 port and comparable, raised limits (below). For every
# round, scenario and broker, the script starts a fresh broker, runs one `midge bench`
# scenario against it with --broker-pid, and stops it; the order of the brokers alternates
# from round to round. At the end it prints a table of medians with ratios to mosquitto.
#
# Scenarios (the reference table in docs/benchmarks.md; --quick shrinks the counts about 5x):
#   fanin-qos0   8 publishers x 100k messages of 64 B -> 1 subscriber on <prefix>/+   (msg/s)
#   fanin-qos1   the same at QoS 1, 16 in flight per publisher                         (msg/s)
#   fanout-qos0  1 publisher x 20k messages -> 100 subscribers                         (deliveries/s)
#   latency      1 publisher -> 1 subscriber, 1000 msg/s for 5 s, QoS 0               (p99 µs)
#   conn         10,000 idle connections: time to connect, broker RSS per connection
#   filters      10,000 subscribers with distinct filters (exact, +, # in turn),
#                100k messages on random topics, each matching one subscriber          (deliveries/s)
# Run only when named in --only:
#   fanout-qos1  1 publisher x 20k messages -> 100 subscribers at QoS 1, 16 in flight  (deliveries/s)
#   handshakes   conn with a full TLS handshake for every connection (no resumption);
#                tls and wss only                                  (connections/s, broker CPU)
#   auth-conn    conn with a user name and password: mosquitto and midge read the same
#                password file of 300 users, made by mosquitto_passwd ($7$, its default
#                cost); 10,000 connections as one of the users       (connections/s, broker CPU)
#   auth-conn-argon2  the same, 2,000 connections, midge on an argon2id file of the same users
#                (midge passwd, its default cost), mosquitto on the $7$ file as the reference
#   acl-fanin    fanin-qos0 with credentials, on bench/fanin/<i> -> bench/fanin/+, against
#                midge with the password file and no ACL (midge), midge with a generated
#                1,000-line ACL file as well (midge-acl), and mosquitto with both files;
#                reports midge-acl / midge                                           (msg/s)
#   fanin-metrics  what serving metrics costs: fan-in QoS 0, 8 publishers x 1M messages of
#                64 B -> 1 subscriber (about 5 s at 1.6M msg/s; --quick 250k), against midge
#                without [http] (midge) and midge with [http] bind on a loopback port whose
#                /metrics `midge bench --scrape` GETs every second while the run lasts
#                (midge-metrics); reports midge-metrics / midge   (msg/s; target >= 0.97)
# The auth scenarios leave out midge-base and rumqttd. Their files are in the script's
# temporary directory; midge gets max_failed_attempts = 0, so that 64 connections checked
# at once from 127.0.0.1 are not refused as a storm of guesses (every password is right).
#
# Durable persistence, run only when named in --only; midge and mosquitto only, each run
# from an empty store in the script's temporary directory:
#   durable-fanin  fanin-qos1 (8 publishers, 16 in flight each, 64 B) into ONE subscriber
#                with a persistent session (--persistent); midge with [persistence] path and
#                sync = "always", mosquitto with persistence true and persistence_location
#                (its default autosave_interval, 1800 s)   (msg/s; PUBACK latency p50, p99)
#   durable-fanin-interval  the same, midge with sync = "interval", sync_interval_ms = 1000
#   offline-queue  1,000 persistent sessions subscribed and left offline (sub --persistent
#                --disconnect-after-subscribe), then 1,000 QoS 1 messages of 64 B published to
#                all of them (1M queued): broker RSS before and after queueing, the store's
#                size on disk after a stop, the time from the restarted broker's start to its
#                first CONNACK, and the time to reconnect the 1,000 sessions and drain all 1M
#                messages. --quick: 200 sessions.
# Bridges, run only when named in --only; tcp only:
#   bridge-qos0  a local broker L bridged to a remote mosquitto R, one topic bench/# out at
#                QoS 0: 4 publishers x 100k messages of 64 B at L (bench/<i>), 1 subscriber
#                at R on bench/# (--quick: 20k each). L is midge (a [[bridge]] table, MQTT
#                3.1.1, try_private, clean_start false) or mosquitto (a `connection` block,
#                bridge_protocol_version mqttv311, try_private, cleansession false); R is the
#                same mosquitto for both, started fresh for each run. Reports what R delivered
#                per second (first to last delivery), loss (what L acknowledged, or wrote at
#                QoS 0, that R never delivered), duplicates, and the CPU time of L and of R
#                per message; broker `midge` is midge bridging, `mosquitto` mosquitto bridging.
#                midge as L serves [http] on a loopback port; after each run the script reads
#                its /metrics and splits midge's loss into what its bridge dropped and counted
#                (midge_bridge_dropped_total), what its sessions dropped and counted
#                (midge_dropped_messages_total) and what no counter accounts for
#   bridge-qos1  the same at QoS 1 (every hop QoS 1, 16 in flight per publisher), 4 x 50k
#                (--quick: 10k each); nothing acknowledged may be lost
# Each run waits until a probe published at L on bench/ready arrives at R before it starts.
# BRIDGE_RATE=N paces each publisher at N msg/s (midge bench pub -R) instead of flat out: what
# each bridge carries when offered less than it can take.
#
# The acknowledgements do not promise the same. midge's PUBACK (sync = "always") comes once
# the message is on disk (fsync), for every persistent session that must receive it.
# mosquitto acknowledges at once and writes its store every autosave_interval (1800 s by
# default) and when it exits: a crash loses what it acknowledged since. With sync = "interval"
# (durable-fanin-interval), midge makes a promise closer to mosquitto's: a crash loses up to
# the last second.
#
# --transport tcp|tls|ws|wss (default tcp) runs the scenarios over that transport: MQTT over
# TLS, over WebSocket, or over WebSocket on TLS. The script makes a throwaway CA and an ECDSA
# P-256 server certificate for 127.0.0.1 with `openssl` in its temporary directory; every
# broker gets the same certificate, and `midge bench` trusts the CA (--cafile). With a
# transport other than tcp the table adds connections per second (conn, handshakes) and the
# broker's CPU time per run; rumqttd is left out (the script configures it for TCP only), and
# midge-base gets midge's configuration, so it needs a build with `[[listener]]` tables.
# Over tls and wss, `conn` resumes TLS sessions where the broker allows it, as reconnecting
# clients do; `handshakes` makes every connection a full handshake.
#
# --check-bench shows that the load generator is not the bottleneck: against each broker it
# runs fan-in (QoS 0 and 1) and fan-out once as a single bench process and once split over
# three processes (`sub` plus two `pub`, or two `sub` plus one `pub`), and prints both rates.
#
# Environment: MOSQUITTO=/usr/sbin/mosquitto, RUMQTTD=$(command -v rumqttd),
# MOSQUITTO_PASSWD=$(command -v mosquitto_passwd) (the auth scenarios),
# MIDGE_BASE=path/to/another/midge (adds that build as broker `midge-base`, with midge's
# configuration: a change against the build before it, in the same run; the table adds
# midge / midge-base),
# BENCH_THREADS (worker threads of each bench process; default: all CPUs).
# Every run is bounded (`midge bench -d`, plus `timeout`); brokers are killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
ROUNDS=3
ONLY=""
CHECK_BENCH=0
TRANSPORT=tcp
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --check-bench) CHECK_BENCH=1 ;;
    --transport) TRANSPORT=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "$TRANSPORT" in
  tcp|tls|ws|wss) ;;
  *) echo "unknown transport $TRANSPORT: use tcp, tls, ws or wss" >&2; exit 2 ;;
esac

MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
RUMQTTD=${RUMQTTD:-$(command -v rumqttd || true)}
if [ "$TRANSPORT" != tcp ] && [ -n "$RUMQTTD" ]; then
  echo "note: rumqttd left out: this script configures it for TCP only" >&2
  RUMQTTD=""
fi
command -v "$MOSQUITTO" >/dev/null || { echo "mosquitto not found at $MOSQUITTO (apt-get install mosquitto)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed for the table" >&2; exit 1; }

PROFILE=${MIDGE_PROFILE:-release}
cargo build --profile "$PROFILE" -p midge
MIDGE=${CARGO_TARGET_DIR:-target}/$PROFILE/midge
THREADS_ARG=()
[ -n "${BENCH_THREADS:-}" ] && THREADS_ARG=(--threads "$BENCH_THREADS")

# 10,000 connections need as many descriptors in the bench and in each broker.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ]; then
  echo "open-file limit $(ulimit -n) is too low for 10,000 connections" >&2
  exit 1
fi

if [ "$QUICK" = 1 ]; then
  N_FANIN=20000; N_FANOUT=4000; N_LATENCY=2000; N_CONN=2000; N_FILTERS=2000; N_FILTER_MSGS=20000
  N_ARGON2=400; OQ_SESSIONS=200; N_METRICS=250000; N_BRIDGE0=20000; N_BRIDGE1=10000
else
  N_FANIN=100000; N_FANOUT=20000; N_LATENCY=5000; N_CONN=10000; N_FILTERS=10000; N_FILTER_MSGS=100000
  N_ARGON2=2000; OQ_SESSIONS=1000; N_METRICS=1000000; N_BRIDGE0=100000; N_BRIDGE1=50000
fi
# offline-queue: messages queued for every session (4 publishers share them).
OQ_MESSAGES=1000
# Bridges: publishers at L; N_BRIDGE0 and N_BRIDGE1 messages each (QoS 0 and 1).
BRIDGE_PUBS=4

declare -A SCENARIO=(
  [fanin-qos0]="fanin -c 8 -n $N_FANIN -q 0 -s 64"
  [fanin-qos1]="fanin -c 8 -n $N_FANIN -q 1 --inflight 16 -s 64"
  [fanout-qos0]="fanout -c 100 -n $N_FANOUT -q 0 -s 64"
  [fanout-qos1]="fanout -c 100 -n $N_FANOUT -q 1 --inflight 16 -s 64"
  [latency]="latency -R 1000 -n $N_LATENCY -q 0 -s 64"
  [conn]="conn -c $N_CONN --settle 1s --concurrency 64"
  [handshakes]="conn -c $N_CONN --settle 1s --concurrency 64 --no-tls-resumption"
  [filters]="filters -c $N_FILTERS -n $N_FILTER_MSGS -q 0 -s 64 --concurrency 64"
  [auth-conn]="conn -c $N_CONN --settle 1s --concurrency 64"
  [auth-conn-argon2]="conn -c $N_ARGON2 --settle 1s --concurrency 64"
  [acl-fanin]="fanin -c 8 -n $N_FANIN -q 0 -s 64 --prefix bench/fanin"
  [fanin-metrics]="fanin -c 8 -n $N_METRICS -q 0 -s 64"
  [durable-fanin]="fanin -c 8 -n $N_FANIN -q 1 --inflight 16 -s 64 --persistent"
  [durable-fanin-interval]="fanin -c 8 -n $N_FANIN -q 1 --inflight 16 -s 64 --persistent"
  # Several runs of midge bench and two broker starts: offline_queue below.
  [offline-queue]="sub pub sub"
  # Bridges: the publishers' arguments at L (bridge_run below).
  [bridge-qos0]="-c $BRIDGE_PUBS -n $N_BRIDGE0 -q 0 -s 64"
  [bridge-qos1]="-c $BRIDGE_PUBS -n $N_BRIDGE1 -q 1 --inflight 16 -s 64"
)
is_auth() { case "$1" in auth-conn|auth-conn-argon2|acl-fanin) return 0 ;; *) return 1 ;; esac; }
is_durable() { case "$1" in durable-fanin|durable-fanin-interval|offline-queue) return 0 ;; *) return 1 ;; esac; }
is_bridge() { case "$1" in bridge-qos0|bridge-qos1) return 0 ;; *) return 1 ;; esac; }
ORDER=(fanin-qos0 fanin-qos1 fanout-qos0 latency conn filters)
if [ -n "$ONLY" ]; then IFS=, read -r -a ORDER <<<"$ONLY"; fi
for s in "${ORDER[@]}"; do [ -n "${SCENARIO[$s]:-}" ] || { echo "unknown scenario $s" >&2; exit 2; }; done
for s in "${ORDER[@]}"; do
  if [ "$s" = handshakes ] && [ "$TRANSPORT" != tls ] && [ "$TRANSPORT" != wss ]; then
    echo "handshakes needs --transport tls or wss" >&2
    exit 2
  fi
  if is_bridge "$s" && [ "$TRANSPORT" != tcp ]; then
    echo "$s runs over tcp only" >&2
    exit 2
  fi
done

tmp=$(mktemp -d)
BROKER_PID=""
# The bridge scenarios' remote mosquitto.
REMOTE_PID=""
cleanup() {
  [ -n "$BROKER_PID" ] && kill -9 "$BROKER_PID" 2>/dev/null || true
  [ -n "$REMOTE_PID" ] && kill -9 "$REMOTE_PID" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

declare -A PORT=([mosquitto]=$(free_port) [midge]=$(free_port) [midge-base]=$(free_port) [rumqttd]=$(free_port) [midge-acl]=$(free_port) [midge-metrics]=$(free_port) [remote]=$(free_port))
# fanin-metrics: midge-metrics's HTTP endpoint ([http] bind), scraped by the bench.
HTTP_PORT=$(free_port)
# Bridges: midge's HTTP endpoint as L, read once after each run (its drop counters).
BRIDGE_HTTP_PORT=$(free_port)

# TLS: a throwaway CA and a server certificate for 127.0.0.1 and localhost, both ECDSA P-256.
if [ "$TRANSPORT" = tls ] || [ "$TRANSPORT" = wss ]; then
  command -v openssl >/dev/null || { echo "openssl is needed for --transport $TRANSPORT" >&2; exit 1; }
  (
    cd "$tmp"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -days 2 -subj "/CN=compare.sh throwaway CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
    openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null
  )
  # mosquitto drops root privileges (to the user mosquitto) before it reads them.
  chmod 755 "$tmp"
  chmod 644 "$tmp/ca.pem" "$tmp/server.pem" "$tmp/server.key"
fi

# What each broker's first listener adds for the transport, and midge bench's address.
case "$TRANSPORT" in
  tcp) MOSQUITTO_LISTENER=""; MIDGE_LISTENER="" ;;
  tls)
    MOSQUITTO_LISTENER="cafile $tmp/ca.pem
certfile $tmp/server.pem
keyfile $tmp/server.key"
    MIDGE_LISTENER='[listener.tls]
cert = "server.pem"
key = "server.key"' ;;
  ws)
    MOSQUITTO_LISTENER="protocol websockets"
    MIDGE_LISTENER='protocol = "ws"
path = "/mqtt"' ;;
  wss)
    MOSQUITTO_LISTENER="protocol websockets
cafile $tmp/ca.pem
certfile $tmp/server.pem
keyfile $tmp/server.key"
    MIDGE_LISTENER='protocol = "ws"
path = "/mqtt"
[listener.tls]
cert = "server.pem"
key = "server.key"' ;;
esac
target_args() {
  case "$TRANSPORT" in
    tcp) echo "-p ${PORT[$1]}" ;;
    tls) echo "-L mqtts://127.0.0.1:${PORT[$1]} --cafile $tmp/ca.pem" ;;
    ws) echo "-L ws://127.0.0.1:${PORT[$1]}/mqtt" ;;
    wss) echo "-L wss://127.0.0.1:${PORT[$1]}/mqtt --cafile $tmp/ca.pem" ;;
  esac
}

# Comparable limits: no queue limit that would drop QoS 1 messages, 256 messages in flight
# towards each client, no connection limit below 20,000, no accept delay, Nagle off.
cat >"$tmp/mosquitto.conf" <<EOF
listener ${PORT[mosquitto]} 127.0.0.1${MOSQUITTO_LISTENER:+
$MOSQUITTO_LISTENER}
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 256
max_inflight_bytes 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
# mosquitto does not start with websockets listeners alone: add a plain one.
if [ "$TRANSPORT" = ws ] || [ "$TRANSPORT" = wss ]; then
  printf 'listener %s 127.0.0.1\n' "$(free_port)" >>"$tmp/mosquitto.conf"
fi

cat >"$tmp/midge.toml" <<EOF
[limits]
max_connections = 100000
max_inflight = 256
inbox_capacity = 10000000
max_queued_bytes_total = 17179869184

[sessions]
max_queued_messages = 100000000
max_queued_bytes = 17179869184
EOF
if [ "$TRANSPORT" != tcp ]; then
  # --bind and -p below apply to this first listener (midge-base gets its own port).
  printf '\n[[listener]]\nbind = "127.0.0.1:%s"\n%s\n' "${PORT[midge]}" "$MIDGE_LISTENER" >>"$tmp/midge.toml"
fi

cat >"$tmp/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 256
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:${PORT[rumqttd]}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 256
    dynamic_filters = true
EOF

BROKERS=(mosquitto midge)
[ -n "${MIDGE_BASE:-}" ] && BROKERS+=(midge-base)
[ -n "$RUMQTTD" ] && BROKERS+=(rumqttd)

# brokers_of SCENARIO: the brokers a scenario runs against, in the order of odd rounds.
brokers_of() {
  case "$1" in
    auth-conn|auth-conn-argon2|durable-fanin|durable-fanin-interval|offline-queue) echo mosquitto midge ;;
    bridge-qos0|bridge-qos1) echo mosquitto midge ;;
    acl-fanin) echo mosquitto midge midge-acl ;;
    fanin-metrics) echo midge midge-metrics ;;
    *) echo "${BROKERS[@]}" ;;
  esac
}

# The auth scenarios: 300 users with random passwords; the bench connects as BENCH_USER.
# mosquitto_passwd -U hashes a plain user:password file with its default ($7$, PBKDF2-SHA512
# at its default iterations); midge passwd -U does the same with its default (argon2id).
NEED_AUTH=0
for s in "${ORDER[@]}"; do is_auth "$s" && NEED_AUTH=1; done
N_USERS=300
BENCH_USER=user150
: >"$tmp/labels"
if [ "$NEED_AUTH" = 1 ]; then
  MOSQUITTO_PASSWD=${MOSQUITTO_PASSWD:-$(command -v mosquitto_passwd || true)}
  [ -n "$MOSQUITTO_PASSWD" ] || { echo "mosquitto_passwd is needed for the auth scenarios (apt-get install mosquitto)" >&2; exit 1; }
  python3 - "$tmp/users.txt" "$N_USERS" <<'PY'
import secrets, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(f"user{i}:{secrets.token_urlsafe(12)}\n")
PY
  BENCH_PASS=$(grep "^$BENCH_USER:" "$tmp/users.txt" | cut -d: -f2-)
  cp "$tmp/users.txt" "$tmp/passwd-7"
  "$MOSQUITTO_PASSWD" -U "$tmp/passwd-7"
  for s in "${ORDER[@]}"; do
    if [ "$s" = auth-conn-argon2 ]; then
      cp "$tmp/users.txt" "$tmp/passwd-argon2"
      "$MIDGE" passwd -U "$tmp/passwd-argon2"
    fi
  done
  # acl (acl-fanin): 1,000 lines. Anonymous rules; ten patterns, which apply to every client
  # (on %c and %u, four of them denies, one deny whose first level is +); and a block for
  # each of the 300 users with two or three rules (grants with and without wildcards, some
  # denies). BENCH_USER's block grants the bench's publishers bench/fanin/<i> and its
  # subscriber bench/fanin/+, and denies bench/fanin/admin/#.
  HAS_ACL=0
  for s in "${ORDER[@]}"; do [ "$s" = acl-fanin ] && HAS_ACL=1; done
  [ "$HAS_ACL" = 0 ] || python3 - "$tmp/acl" "$N_USERS" "$BENCH_USER" <<'PY'
import sys
path, n, bench = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [
    "# acl-fanin: generated by benches/compare.sh",
    "topic read public/#",
    "topic read weather/+/today",
    "topic deny public/admin/#",
    "pattern readwrite devices/%c/#",
    "pattern read devices/%u/status",
    "pattern write clients/%c/state",
    "pattern read shared/%u/#",
    "pattern write logs/%u/%c",
    "pattern read inbox/%c/#",
    "pattern deny devices/%c/firmware/#",
    "pattern deny shared/%u/private",
    "pattern deny inbox/%c/spam",
    "pattern deny +/%u/secret/#",
]
users = []
for i in range(n):
    u = f"user{i}"
    if u == bench:
        block = ["topic write bench/fanin/+", "topic read bench/fanin/+", "topic deny bench/fanin/admin/#"]
    else:
        block = [f"topic readwrite home/{u}/#", f"topic read sensors/+/{u}"]
    users.append([f"user {u}"] + block)
total = len(lines) + sum(len(b) for b in users)
# Up to 1,000 lines: a third rule for users other than the bench's, in turn, spread over
# the file (a deny, a write, a read with a wildcard).
extra = [
    lambda u: f"topic deny home/{u}/locked/#",
    lambda u: f"topic write alerts/{u}",
    lambda u: f"topic read rooms/+/{u}/#",
]
i = 0
while total < 1000:
    b = users[(i * 7) % n]
    if b[0] != f"user {bench}" and len(b) == 3:
        b.append(extra[i % 3](b[0].split()[1]))
        total += 1
    i += 1
for b in users:
    lines += b
assert len(lines) == 1000, len(lines)
open(path, "w").write("\n".join(lines) + "\n")
PY
  # mosquitto reads its files after it drops root privileges (to the user mosquitto).
  chmod 755 "$tmp"
  chmod 644 "$tmp"/passwd-* "$tmp"/acl 2>/dev/null || true
  HASH_7=$(python3 - "$tmp/passwd-7" <<'PY'
import sys
h = open(sys.argv[1]).readline().strip().split(":", 1)[1]
print(f"$7$ PBKDF2-SHA512, {h.split('$')[2]} iterations" if h.startswith("$7$") else h[:12])
PY
)
  for s in "${ORDER[@]}"; do
    is_auth "$s" || continue
    midge_file=$tmp/passwd-7
    midge_hash=$HASH_7
    if [ "$s" = auth-conn-argon2 ]; then
      midge_file=$tmp/passwd-argon2
      midge_hash=$(python3 - "$midge_file" <<'PY'
import sys
h = open(sys.argv[1]).readline().strip().split(":", 1)[1]
parts = h.split("$")
print(f"argon2id {parts[3]}" if h.startswith("$argon2id$") else h[:12])
PY
)
    fi
    acl_line=""
    [ "$s" = acl-fanin ] && acl_line="acl_file $tmp/acl"
    # No allow_anonymous true from the shared configuration: every client gives a password.
    { grep -v '^allow_anonymous' "$tmp/mosquitto.conf"
      printf 'allow_anonymous false\npassword_file %s\n%s\n' "$tmp/passwd-7" "$acl_line"
    } >"$tmp/mosquitto-$s.conf"
    { cat "$tmp/midge.toml"
      printf '\n[auth]\nallow_anonymous = false\npassword_file = "%s"\nmax_failed_attempts = 0\n' "$midge_file"
    } >"$tmp/midge-$s.toml"
    echo "$s mosquitto $HASH_7${acl_line:+, ACL}" >>"$tmp/labels"
    echo "$s midge $midge_hash" >>"$tmp/labels"
    if [ "$s" = acl-fanin ]; then
      { cat "$tmp/midge-$s.toml"; printf 'acl_file = "%s"\n' "$tmp/acl"; } >"$tmp/midge-acl-$s.toml"
      echo "$s midge-acl $midge_hash, ACL" >>"$tmp/labels"
    fi
  done
fi

# Durable scenarios: both brokers keep their store in $tmp/store, emptied before each run.
# mosquitto drops root privileges (to the user mosquitto) before it writes there.
for s in "${ORDER[@]}"; do
  is_durable "$s" || continue
  mkdir -p "$tmp/store"
  chmod 755 "$tmp"
  chmod 777 "$tmp/store"
  sed "s|^persistence false\$|persistence true\npersistence_location $tmp/store/|" "$tmp/mosquitto.conf" >"$tmp/mosquitto-$s.conf"
  grep -q '^persistence true' "$tmp/mosquitto-$s.conf"
  sync='sync = "always"'
  [ "$s" = durable-fanin-interval ] && sync='sync = "interval"
sync_interval_ms = 1000'
  { cat "$tmp/midge.toml"
    printf '\n[persistence]\npath = "%s"\n%s\n' "$tmp/store/midge.redb" "$sync"
  } >"$tmp/midge-$s.toml"
done

# fanin-metrics: midge's configuration with the HTTP endpoint on (no token: /metrics needs none).
{ cat "$tmp/midge.toml"
  printf '\n[http]\nbind = "127.0.0.1:%s"\n' "$HTTP_PORT"
} >"$tmp/midge-metrics.toml"

# Bridges: the remote R is mosquitto with the shared configuration on its own port; the local
# broker L (`midge` or `mosquitto`, on its usual port) adds one bridge to R, bench/# out at the
# scenario's QoS, MQTT 3.1.1 on both, the remote keeping the bridge's session. mosquitto's
# queue and in-flight limits are global, so its bridge gets the shared ones (no queue limit,
# 256 in flight); midge's bridge session is bounded by [sessions] like any other.
# mosquitto 2.0.11 leaves Nagle on for its bridge's socket (set_tcp_nodelay covers accepted
# clients only), and no option changes that; midge sets TCP_NODELAY on every socket.
for s in "${ORDER[@]}"; do
  is_bridge "$s" || continue
  q=${s#bridge-qos}
  sed "s|^listener ${PORT[mosquitto]} 127.0.0.1\$|listener ${PORT[remote]} 127.0.0.1|" "$tmp/mosquitto.conf" >"$tmp/remote.conf"
  grep -q "^listener ${PORT[remote]} " "$tmp/remote.conf"
  { cat "$tmp/mosquitto.conf"
    printf '\nconnection bench\naddress 127.0.0.1:%s\ntopic bench/# out %s\n' "${PORT[remote]}" "$q"
    printf 'bridge_protocol_version mqttv311\ntry_private true\ncleansession false\n'
  } >"$tmp/mosquitto-$s.conf"
  { cat "$tmp/midge.toml"
    printf '\n[auth]\nallow_anonymous = true\n'
    printf '\n[[bridge]]\nname = "bench"\naddress = ["127.0.0.1:%s"]\n' "${PORT[remote]}"
    printf 'protocol_version = "3.1.1"\ntry_private = true\nclean_start = false\n'
    printf '\n[[bridge.topic]]\npattern = "bench/#"\ndirection = "out"\nqos = %s\n' "$q"
    printf '\n[http]\nbind = "127.0.0.1:%s"\n' "$BRIDGE_HTTP_PORT"
  } >"$tmp/midge-$s.toml"
done

# The configuration file of broker $1 in scenario $2.
conf_of() {
  case "$1" in
    mosquitto) if [ -e "$tmp/mosquitto-$2.conf" ]; then echo "$tmp/mosquitto-$2.conf"; else echo "$tmp/mosquitto.conf"; fi ;;
    midge) if [ -e "$tmp/midge-$2.toml" ]; then echo "$tmp/midge-$2.toml"; else echo "$tmp/midge.toml"; fi ;;
    midge-acl) echo "$tmp/midge-acl-$2.toml" ;;
    midge-metrics) echo "$tmp/midge-metrics.toml" ;;
    midge-base) echo "$tmp/midge.toml" ;;
    rumqttd) echo "$tmp/rumqttd.toml" ;;
  esac
}

# What midge bench adds against broker $2 in scenario $1: midge-metrics's /metrics, scraped
# every second while the run lasts.
extra_of() {
  if [ "$2" = midge-metrics ]; then
    printf '%s\n' --scrape "http://127.0.0.1:$HTTP_PORT/metrics" --scrape-interval-ms 1000
  fi
}

# midge bench's credentials in scenario $1.
creds_of() {
  if is_auth "$1"; then printf '%s\n' -u "$BENCH_USER" -P "$BENCH_PASS"; fi
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# start_broker BROKER [SCENARIO]: the scenario picks the configuration (conf_of).
start_broker() {
  launch_broker "$@"
  wait_port "${PORT[$1]}"
  if [ "$1" = midge-metrics ]; then wait_port "$HTTP_PORT"; fi
}

# launch_broker BROKER [SCENARIO]: start_broker without waiting for the port.
launch_broker() {
  local conf
  conf=$(conf_of "$1" "${2:-}")
  case "$1" in
    mosquitto) "$MOSQUITTO" -c "$conf" 2>>"$tmp/mosquitto.log" & ;;
    midge|midge-acl|midge-metrics) "$MIDGE" broker --bind 127.0.0.1 -p "${PORT[$1]}" --config "$conf" >>"$tmp/$1.log" 2>&1 & ;;
    midge-base) "$MIDGE_BASE" broker --bind 127.0.0.1 -p "${PORT[midge-base]}" --config "$conf" >>"$tmp/midge-base.log" 2>&1 & ;;
    rumqttd) "$RUMQTTD" --config "$conf" >>"$tmp/rumqttd.log" 2>&1 & ;;
  esac
  BROKER_PID=$!
}

# stop_broker [SECONDS]: SIGTERM, and SIGKILL after SECONDS (5) if the broker still runs.
stop_broker() {
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq $((${1:-5} * 10))); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}

# bench BROKER ARGS... -> JSON on stdout; exit code 0 or 3 (a run with losses) counts.
# Each run is bounded by BENCH_SECS (-d), and by timeout 3 minutes later.
BENCH_SECS=120
bench() {
  local b=$1; shift
  # shellcheck disable=SC2046 # target_args is a word list
  timeout $((BENCH_SECS + 180)) "$MIDGE" bench "$@" $(target_args "$b") --quiet --json -d "${BENCH_SECS}s" "${THREADS_ARG[@]}"
}

echo "machine:   $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "mosquitto: $("$MOSQUITTO" -h 2>/dev/null | head -1)"
echo "midge:     $("$MIDGE" --version) ($(git rev-parse --short HEAD))"
[ -n "${MIDGE_BASE:-}" ] && echo "midge-base: $MIDGE_BASE"
[ -n "$RUMQTTD" ] && echo "rumqttd:   $RUMQTTD"
echo "rounds:    $ROUNDS$([ "$QUICK" = 1 ] && echo ', quick')"
if [ "$NEED_AUTH" = 1 ]; then
  echo "auth:      $N_USERS users, bench as $BENCH_USER; mosquitto_passwd file: $HASH_7$([ -e "$tmp/passwd-argon2" ] && echo "; midge passwd file: $(sed -n 1p "$tmp/passwd-argon2" | cut -d'$' -f2,4)")"
  [ -e "$tmp/acl" ] && echo "acl:       $(wc -l <"$tmp/acl") lines, $(grep -c '^topic\|^pattern' "$tmp/acl") rules, $(grep -c '^user' "$tmp/acl") users, $(grep -c '^pattern' "$tmp/acl") patterns"
fi
[ "$TRANSPORT" != tcp ] && echo "transport: $TRANSPORT"
[ -n "${BRIDGE_RATE:-}" ] && echo "bridges:   publishers paced at $BRIDGE_RATE msg/s each"
for s in "${ORDER[@]}"; do
  if is_durable "$s"; then
    echo "stores:    $tmp/store on $(df --output=fstype,source "$tmp" | tail -1 | tr -s ' '); mosquitto autosave_interval 1800 s (its default)"
    break
  fi
done
echo

# get FILE PATH... prints the JSON values at dotted PATHs (e.g. broker_usage.cpu_s).
get() {
  python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
out = []
for path in sys.argv[2:]:
    v = d
    for k in path.split("."):
        v = v[k]
    out.append(f"{v:.0f}" if isinstance(v, float) and v >= 100 else f"{v:.2f}" if isinstance(v, float) else str(v))
print(" ".join(out))
EOF
}

wait_ready() {
  for _ in $(seq 400); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "bench subscribers did not get ready: $(cat "$1")" >&2
  return 1
}

if [ "$CHECK_BENCH" = 1 ]; then
  # One bench process against three splitting the same load: if the split is not faster, a
  # single process keeps up with the broker.
  for b in "${BROKERS[@]}"; do
    for round in $(seq "$ROUNDS"); do
      for q in 0 1; do
        start_broker "$b"
        bench "$b" fanin -c 8 -n "$N_FANIN" -q $q --inflight 16 --broker-pid "$BROKER_PID" >"$tmp/one.json" || true
        stop_broker
        start_broker "$b"
        bench "$b" sub -t "split/+" -q $q -n $((N_FANIN * 8)) --idle 10s --broker-pid "$BROKER_PID" >"$tmp/sub.json" 2>"$tmp/sub.err" &
        sub=$!
        wait_ready "$tmp/sub.err"
        bench "$b" pub -t "split/%i" -c 4 -n "$N_FANIN" -q $q --inflight 16 -s 64 --id-prefix split-a >"$tmp/pub1.json" &
        p1=$!
        bench "$b" pub -t "split/%i" -c 4 -n "$N_FANIN" -q $q --inflight 16 -s 64 --id-prefix split-b --index-offset 4 >"$tmp/pub2.json" || true
        wait "$p1" || true
        wait "$sub" || true
        stop_broker
        echo "$b round $round, fan-in QoS $q, 8 x $N_FANIN -> 1:"
        echo "  one process:     $(get "$tmp/one.json" delivery_rate delivered) (msg/s, delivered); bench CPU $(get "$tmp/one.json" bench_cpu_s) s, broker CPU $(get "$tmp/one.json" broker_usage.cpu_s) s"
        echo "  three processes: $(get "$tmp/sub.json" delivery_rate delivered) (msg/s, delivered); bench CPU $(get "$tmp/sub.json" bench_cpu_s) + $(get "$tmp/pub1.json" bench_cpu_s) + $(get "$tmp/pub2.json" bench_cpu_s) s, broker CPU $(get "$tmp/sub.json" broker_usage.cpu_s) s"
      done

      start_broker "$b"
      bench "$b" fanout -c 100 -n "$N_FANOUT" --broker-pid "$BROKER_PID" >"$tmp/one.json" || true
      stop_broker
      start_broker "$b"
      bench "$b" sub -t "fo/x" -c 50 -n $((N_FANOUT * 50)) --idle 10s --id-prefix fo-a --broker-pid "$BROKER_PID" >"$tmp/fo0.json" 2>"$tmp/fo0.err" &
      s0=$!
      bench "$b" sub -t "fo/x" -c 50 -n $((N_FANOUT * 50)) --idle 10s --id-prefix fo-b >"$tmp/fo1.json" 2>"$tmp/fo1.err" &
      s1=$!
      wait_ready "$tmp/fo0.err"
      wait_ready "$tmp/fo1.err"
      bench "$b" pub -t "fo/x" -n "$N_FANOUT" -s 64 >"$tmp/pub1.json" || true
      wait "$s0" || true
      wait "$s1" || true
      stop_broker
      echo "$b round $round, fan-out QoS 0, 1 x $N_FANOUT -> 100:"
      echo "  one process:     $(get "$tmp/one.json" delivery_rate delivered) (deliveries/s, delivered); bench CPU $(get "$tmp/one.json" bench_cpu_s) s, broker CPU $(get "$tmp/one.json" broker_usage.cpu_s) s"
      echo "  three processes: $(get "$tmp/fo0.json" delivery_rate delivered) + $(get "$tmp/fo1.json" delivery_rate delivered) (deliveries/s, delivered); bench CPU $(get "$tmp/fo0.json" bench_cpu_s) + $(get "$tmp/fo1.json" bench_cpu_s) + $(get "$tmp/pub1.json" bench_cpu_s) s, broker CPU $(get "$tmp/fo0.json" broker_usage.cpu_s) s"
    done
  done
  exit 0
fi

# ready_after BROKER T0: seconds from T0 (date +%s.%N) until the broker answers a CONNECT with
# a CONNACK: listening is not enough, a broker may listen before it has loaded its store.
ready_after() {
  python3 - "${PORT[$1]}" "$2" 300 <<'PY'
import socket, sys, time
port, t0, limit = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
cid = b"compare-ready"
body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
connect = bytes([0x10, len(body)]) + body
while time.time() - t0 < limit:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
            s.sendall(connect)
            ack = b""
            while len(ack) < 4:
                part = s.recv(4 - len(ack))
                if not part:
                    break
                ack += part
            if ack[:2] == b"\x20\x02" and ack[3:4] == b"\x00":
                ready = time.time()
                s.sendall(b"\xe0\x00")
                print(f"{ready - t0:.3f}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.002)
sys.exit(f"no CONNACK from 127.0.0.1:{port} within {limit:.0f} s")
PY
}

rss_now() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$BROKER_PID/status"; }

# The store file(s) of broker $1 in bytes (0 when there is none yet).
store_bytes() {
  case "$1" in
    mosquitto) stat -c %s "$tmp/store/mosquitto.db" 2>/dev/null || echo 0 ;;
    *) stat -c %s "$tmp/store/midge.redb" 2>/dev/null || echo 0 ;;
  esac
}

# offline_queue BROKER OUT: the offline-queue scenario; its figures as one JSON object in OUT.
# Each step's own JSON is kept beside it (OUT.sessions, OUT.pub, OUT.drain).
offline_queue() {
  local b=$1 out=$2 code=0 t0 first_start rss_empty rss_sessions rss_queued store_running
  local stop_s store_stopped restart_s rss_restarted drain_s rss_drained
  rm -rf "${tmp:?}/store"/*
  t0=$(date +%s.%N)
  launch_broker "$b" offline-queue
  first_start=$(ready_after "$b" "$t0") || return 1
  rss_empty=$(rss_now)
  bench "$b" sub -c "$OQ_SESSIONS" -t offline/q -q 1 --persistent --disconnect-after-subscribe \
    --id-prefix oq >"$out.sessions" 2>>"$out.err" || code=$?
  rss_sessions=$(rss_now)
  bench "$b" pub -t offline/q -c 4 -n $((OQ_MESSAGES / 4)) -q 1 --inflight 16 -s 64 --id-prefix oq-pub \
    --broker-pid "$BROKER_PID" >"$out.pub" 2>>"$out.err" || code=$?
  # Whatever the broker does after the last PUBACK, it has done in a second.
  sleep 1
  rss_queued=$(rss_now)
  store_running=$(store_bytes "$b")
  # mosquitto writes its whole store as it exits: give it the time.
  t0=$(date +%s.%N)
  stop_broker 120
  stop_s=$(python3 -c "import time; print(f'{time.time() - $t0:.3f}')")
  store_stopped=$(store_bytes "$b")
  t0=$(date +%s.%N)
  launch_broker "$b" offline-queue
  restart_s=$(ready_after "$b" "$t0") || return 1
  rss_restarted=$(rss_now)
  t0=$(date +%s.%N)
  bench "$b" sub -c "$OQ_SESSIONS" -t offline/q -q 1 --persistent --id-prefix oq \
    -n $((OQ_SESSIONS * OQ_MESSAGES)) --idle 10s --broker-pid "$BROKER_PID" >"$out.drain" 2>>"$out.err" || code=$?
  drain_s=$(python3 -c "import time; print(f'{time.time() - $t0:.3f}')")
  rss_drained=$(rss_now)
  stop_broker 120
  python3 - "$out" "$OQ_SESSIONS" "$OQ_MESSAGES" "$first_start" "$rss_empty" "$rss_sessions" \
    "$rss_queued" "$store_running" "$stop_s" "$store_stopped" "$restart_s" "$rss_restarted" \
    "$drain_s" "$rss_drained" <<'PY'
import json, sys
out = sys.argv[1]
(sessions, messages, first_start, rss_empty, rss_sessions, rss_queued, store_running, stop_s,
 store_stopped, restart_s, rss_restarted, drain_s, rss_drained) = [float(x) for x in sys.argv[2:]]
def load(suffix):
    try:
        return json.load(open(out + suffix))
    except Exception:
        return None
made, pub, drain = load(".sessions"), load(".pub"), load(".drain")
steps = [made, pub, drain]
acked = pub["acked"] if pub else 0
delivered = drain["delivered"] - drain["duplicates"] if drain else 0
d = {
    "scenario": "offline-queue",
    "sessions": int(sessions),
    "messages": int(messages),
    "queued": int(acked * sessions),
    "sessions_s": made["elapsed_s"] if made else None,
    "publish_rate": pub["publish_rate"] if pub else None,
    "ack_latency": pub.get("ack_latency") if pub else None,
    "first_start_s": first_start,
    "rss_empty_bytes": rss_empty,
    "rss_sessions_bytes": rss_sessions,
    "rss_queued_bytes": rss_queued,
    "rss_queue_growth_bytes": rss_queued - rss_sessions,
    "store_bytes_running": store_running,
    "store_bytes": store_stopped,
    "stop_s": stop_s,
    "restart_s": restart_s,
    "rss_restarted_bytes": rss_restarted,
    "drain_s": drain_s,
    "drained": drain["delivered"] if drain else 0,
    "drain_rate": delivered / drain_s if drain_s > 0 else 0,
    "rss_drained_bytes": rss_drained,
    # Acknowledged messages some session never got.
    "lost": max(0, int(acked * sessions) - delivered) + (drain["lost"] if drain else 0),
    "duplicates": drain["duplicates"] if drain else 0,
    "errors": sum(x["errors"] for x in steps if x) + sum(1 for x in steps if x is None),
    "bench_cpu_s": sum(x["bench_cpu_s"] for x in steps if x),
    # The broker's CPU while queueing and while draining.
    "broker_usage": {"cpu_s": sum((x.get("broker_usage") or {}).get("cpu_s", 0) for x in (pub, drain) if x)},
}
json.dump(d, open(out, "w"), indent=2)
PY
  return "$code"
}

stop_remote() {
  [ -n "$REMOTE_PID" ] || return 0
  kill -TERM "$REMOTE_PID" 2>/dev/null || true
  wait "$REMOTE_PID" 2>/dev/null || true
  REMOTE_PID=""
}

# Clock ticks of CPU time process $1 used so far (user + system, all threads), from /proc.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# bridge_ready L_PORT R_PORT: waits until a message published at L on bench/ready arrives at R
# through the bridge (connected, and subscribed where it must be). QoS 0 probes, one every
# 0.1 s, so that none is held back to arrive later; the caller waits a little more after.
bridge_ready() {
  local probe
  "$MIDGE" sub -p "$2" -t bench/ready -C 1 -W 30 >/dev/null 2>>"$tmp/probe.err" &
  probe=$!
  for _ in $(seq 300); do
    kill -0 "$probe" 2>/dev/null || break
    "$MIDGE" pub -p "$1" -t bench/ready -m ready >/dev/null 2>>"$tmp/probe.err" || true
    sleep 0.1
  done
  wait "$probe" || { echo "no message through the bridge from :$1 to :$2 within 30 s" >&2; return 1; }
  sleep 0.5
}

# bridge_run BROKER SCENARIO OUT: a fresh remote mosquitto R and a fresh BROKER as L bridged to
# it; 1 subscriber at R on bench/#, the scenario's publishers at L, started together. Writes
# the run's figures as one JSON object in OUT (each process's own JSON beside it: OUT.sub,
# OUT.pub); exit code 3 when something acknowledged at QoS 1 was lost.
bridge_run() {
  local b=$1 s=$2 out=$3 code=0 q per n l0 r0 l1 r1 sub pub_args
  q=${s#bridge-qos}
  per=N_BRIDGE$q
  n=$((BRIDGE_PUBS * ${!per}))
  read -r -a pub_args <<<"${SCENARIO[$s]}"
  pub_args+=(-R "${BRIDGE_RATE:-0}")
  "$MOSQUITTO" -c "$tmp/remote.conf" 2>>"$tmp/remote.log" &
  REMOTE_PID=$!
  wait_port "${PORT[remote]}" 2>>"$out.err" || return 1
  launch_broker "$b" "$s"
  if ! wait_port "${PORT[$b]}" 2>>"$out.err"; then
    tail -n 3 "$tmp/$b.log" >>"$out.err" 2>/dev/null
    return 1
  fi
  bridge_ready "${PORT[$b]}" "${PORT[remote]}" 2>>"$out.err" || return 1
  l0=$(cpu_ticks "$BROKER_PID")
  r0=$(cpu_ticks "$REMOTE_PID")
  bench remote sub -t 'bench/#' -q "$q" -n "$n" --idle 10s --id-prefix bridge-sub \
    --broker-pid "$REMOTE_PID" >"$out.sub" 2>"$out.sub.err" &
  sub=$!
  if ! wait_ready "$out.sub.err" 2>>"$out.err"; then
    kill "$sub" 2>/dev/null || true
    wait "$sub" 2>/dev/null || true
    return 1
  fi
  bench "$b" pub -t 'bench/%i' "${pub_args[@]}" --id-prefix bridge-pub --broker-pid "$BROKER_PID" \
    >"$out.pub" 2>"$out.pub.err" || code=$?
  wait "$sub" || code=$?
  for pid in "$BROKER_PID" "$REMOTE_PID"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$([ "$pid" = "$BROKER_PID" ] && echo "$b (L)" || echo "the remote") exited during the run" >>"$out.err"
      code=1
    fi
  done
  l1=$(cpu_ticks "$BROKER_PID" || echo "$l0")
  r1=$(cpu_ticks "$REMOTE_PID" || echo "$r0")
  # midge's counters of what it dropped: the bridge adds its clients' drops twice a second.
  if [ "$b" = midge ]; then
    sleep 1
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
      "http://127.0.0.1:$BRIDGE_HTTP_PORT/metrics" >"$out.metrics" 2>>"$out.err" || rm -f "$out.metrics"
  fi
  stop_broker
  stop_remote
  python3 - "$out" "$q" "$n" "$(( l1 - l0 ))" "$(( r1 - r0 ))" "$CLK_TCK" <<'PY' || code=$?
import json, sys
out, qos, n, l_ticks, r_ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(float, sys.argv[4:])
def load(suffix):
    try:
        return json.load(open(out + suffix))
    except Exception:
        return None
sub, pub = load(".sub"), load(".pub")
# QoS 1: what L acknowledged; QoS 0: what the publishers wrote to L.
acked = pub["acked"] if pub else 0
unique = sub["delivered"] - sub["duplicates"] - sub["untracked"] if sub else 0
# midge as L: its counters, summed over their labels (Prometheus text format).
counters = None
try:
    counters = {}
    for line in open(out + ".metrics"):
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        counters[name.split("{")[0]] = counters.get(name.split("{")[0], 0) + float(value)
except OSError:
    counters = None
d = {
    "scenario": f"bridge-qos{qos}",
    "qos": qos,
    "expected": n,
    "published": pub["published"] if pub else 0,
    "acked": acked,
    "publish_rate": pub["publish_rate"] if pub else None,
    "ack_latency": pub.get("ack_latency") if pub else None,
    "delivered": unique,
    "delivery_rate": sub["delivery_rate"] if sub else 0,
    "elapsed_s": sub["elapsed_s"] if sub else 0,
    "latency": sub.get("latency") if sub else None,
    "lost": max(0, acked - unique),
    # midge as L: what its bridge dropped (beyond its QoS 0 buffer) and its sessions dropped,
    # each counted by midge; the rest of the loss no counter accounts for.
    "bridge_dropped": int(counters.get("midge_bridge_dropped_total", 0)) if counters is not None else None,
    "sessions_dropped": int(counters.get("midge_dropped_messages_total", 0)) if counters is not None else None,
    "forwarded_out": int(counters.get("midge_bridge_forwarded_out_total", 0)) if counters is not None else None,
    # Gaps in the sequence numbers seen at R (loss before the last delivery of each stream).
    "gaps": sub["lost"] if sub else 0,
    "duplicates": sub["duplicates"] if sub else 0,
    "untracked": sub["untracked"] if sub else 0,
    "timed_out": bool(sub and sub["timed_out"]),
    "errors": sum(x["errors"] for x in (sub, pub) if x) + sum(1 for x in (sub, pub) if x is None),
    "error_messages": sum((x["error_messages"] for x in (sub, pub) if x), []),
    "bench_cpu_s": sum(x["bench_cpu_s"] for x in (sub, pub) if x),
    # From the subscriber's start to its end: L and R together, and each.
    "broker_usage": {"cpu_s": (l_ticks + r_ticks) / hz},
    "local_cpu_s": l_ticks / hz,
    "remote_cpu_s": r_ticks / hz,
}
if counters is not None:
    d["unaccounted"] = d["lost"] - d["bridge_dropped"] - d["sessions_dropped"]
json.dump(d, open(out, "w"), indent=2)
sys.exit(3 if qos > 0 and d["lost"] > 0 else 0)
PY
  return "$code"
}

results="$tmp/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  echo "round $round: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for s in "${ORDER[@]}"; do
    read -r -a brokers <<<"$(brokers_of "$s")"
    order=("${brokers[@]}")
    if [ $((round % 2)) = 0 ]; then
      order=()
      for ((i = ${#brokers[@]} - 1; i >= 0; i--)); do order+=("${brokers[$i]}"); done
    fi
    mapfile -t creds < <(creds_of "$s")
    # argon2id: about 20 connections/s on one verification thread here.
    BENCH_SECS=120
    [ "$s" = auth-conn-argon2 ] && BENCH_SECS=400
    [ "$s" = offline-queue ] && BENCH_SECS=300
    for b in "${order[@]}"; do
      out="$tmp/$round-$s-$b.json"
      if [ "$s" = offline-queue ]; then
        : >"$out.err"
        offline_queue "$b" "$out" && code=0 || code=$?
        [ -z "$BROKER_PID" ] || stop_broker 120
      elif is_bridge "$s"; then
        : >"$out.err"
        bridge_run "$b" "$s" "$out" && code=0 || code=$?
        [ -z "$BROKER_PID" ] || stop_broker
        stop_remote
      else
        if is_durable "$s"; then rm -rf "${tmp:?}/store"/*; fi
        start_broker "$b" "$s"
        mapfile -t extra < <(extra_of "$s" "$b")
        # shellcheck disable=SC2086 # the scenario is a word list
        bench "$b" ${SCENARIO[$s]} "${creds[@]}" "${extra[@]}" --broker-pid "$BROKER_PID" >"$out" 2>"$out.err" && code=0 || code=$?
        # A persistent broker writes what is pending as it stops.
        if is_durable "$s"; then stop_broker 60; else stop_broker; fi
      fi
      echo "$round $s $b $code $out" >>"$results"
      python3 - "$out" "$round" "$s" "$b" "$code" "$TRANSPORT" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import json, sys
path, rnd, s, b, code, transport, load = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception:
    err = open(path + ".err").read().strip().splitlines()
    print(f"round {rnd} {s:12} {b:10} FAILED (exit {code}): {err[-1] if err else ''}")
    sys.exit()
u = d.get("broker_usage") or {}
extra = ""
if s in ("conn", "handshakes", "auth-conn", "auth-conn-argon2"):
    extra = f"connect {d['elapsed_s']:.2f} s, {u.get('bytes_per_connection', 0):.0f} B/conn"
    if transport != "tcp" or s.startswith("auth"):
        extra += f", {d['connect_rate']:.0f} conn/s"
elif s == "latency":
    extra = f"p50 {d['latency']['p50_us']:.0f} µs, p99 {d['latency']['p99_us']:.0f} µs"
elif s.startswith("bridge-"):
    # L handles every message it took, R what reached it.
    extra = (f"{d['delivery_rate']:.0f} msg/s at R, {d['delivered']} of {d['acked']} delivered, "
             f"duplicates {d['duplicates']}, CPU per message L {d['local_cpu_s'] / max(d['acked'], 1) * 1e6:.2f} µs, "
             f"R {d['remote_cpu_s'] / max(d['delivered'], 1) * 1e6:.2f} µs")
    if d.get("unaccounted") is not None:
        extra += (f", dropped and counted by L's bridge {d['bridge_dropped']}, by its sessions "
                  f"{d['sessions_dropped']}, unaccounted {d['unaccounted']}")
    if d["timed_out"]:
        extra += ", TIMED OUT"
    err = open(path + ".err").read().strip().splitlines()
    if err:
        extra += f" [{err[-1]}]"
elif s == "offline-queue":
    mib = lambda x: f"{x / 2**20:.1f} MiB"
    extra = (f"{d['sessions']} sessions x {d['messages']}: RSS {mib(d['rss_sessions_bytes'])} -> "
             f"{mib(d['rss_queued_bytes'])} queued, store {mib(d['store_bytes'])}, stop {d['stop_s']:.2f} s, "
             f"restart {d['restart_s']:.2f} s (first start {d['first_start_s']:.2f} s) to "
             f"{mib(d['rss_restarted_bytes'])}, drain {d['drained']} in {d['drain_s']:.2f} s")
else:
    extra = f"{d['delivery_rate']:.0f} msg/s"
    if d.get("ack_latency"):
        extra += f", PUBACK p50 {d['ack_latency']['p50_us']:.0f} µs, p99 {d['ack_latency']['p99_us']:.0f} µs"
    if d.get("scrapes"):
        sc = d["scrapes"]
        extra += f", /metrics scraped {sc['ok']} of {sc['ok'] + sc['failed']} ({sc['last_bytes']} B, max {sc['max_ms']:.1f} ms)"
print(f"round {rnd} {s:12} {b:10} {extra}; lost {d['lost']}, errors {d['errors']}, "
      f"bench CPU {d['bench_cpu_s']:.2f} s, broker CPU {u.get('cpu_s', 0):.2f} s, load {load} (exit {code})")
EOF
    done
  done
done

echo
python3 - "$results" "$TRANSPORT" "${BROKERS[@]}" <<'EOF'
import json, statistics, sys
results, transport, brokers = sys.argv[1], sys.argv[2], sys.argv[3:]
rate = lambda d: d["delivery_rate"]
rss = lambda d: d["broker_usage"]["bytes_per_connection"]
cpu = lambda d: d["broker_usage"]["cpu_s"]
other = transport != "tcp"
rows = [
    ("fanin-qos0", "fan-in QoS 0, msg/s", rate, True),
    ("fanin-qos1", "fan-in QoS 1, msg/s", rate, True),
    ("fanout-qos0", "fan-out QoS 0, deliveries/s", rate, True),
    ("fanout-qos1", "fan-out QoS 1, deliveries/s", rate, True),
    ("latency", "latency at 1000 msg/s, p99 µs", lambda d: d["latency"]["p99_us"], False),
    ("conn", "idle connections: time to connect, s", lambda d: d["elapsed_s"], False),
] + ([("conn", "idle connections: connections per second", lambda d: d["connect_rate"], True)] if other else []) + [
    ("conn", "idle connections: broker RSS per connection, B", rss, False),
    ("handshakes", "full TLS handshakes: connections per second", lambda d: d["connect_rate"], True),
    ("handshakes", "full TLS handshakes: broker RSS per connection, B", rss, False),
    ("filters", "distinct filters, random topics, deliveries/s", rate, True),
    ("durable-fanin", "durable fan-in QoS 1 (midge sync always), msg/s", rate, True),
    ("durable-fanin", "durable fan-in: PUBACK latency p50, µs", lambda d: d["ack_latency"]["p50_us"], False),
    ("durable-fanin", "durable fan-in: PUBACK latency p99, µs", lambda d: d["ack_latency"]["p99_us"], False),
    ("durable-fanin-interval", "durable fan-in QoS 1 (midge sync interval 1 s), msg/s", rate, True),
    ("durable-fanin-interval", "durable fan-in, interval: PUBACK latency p50, µs", lambda d: d["ack_latency"]["p50_us"], False),
    ("durable-fanin-interval", "durable fan-in, interval: PUBACK latency p99, µs", lambda d: d["ack_latency"]["p99_us"], False),
    ("offline-queue", "offline queue: broker RSS with the sessions, MiB", lambda d: d["rss_sessions_bytes"] / 2**20, False),
    ("offline-queue", "offline queue: broker RSS growth from queueing, MiB", lambda d: d["rss_queue_growth_bytes"] / 2**20, False),
    ("offline-queue", "offline queue: queueing (publish) rate, msg/s", lambda d: d["publish_rate"], True),
    ("offline-queue", "offline queue: store on disk after a stop, MiB", lambda d: d["store_bytes"] / 2**20, False),
    ("offline-queue", "offline queue: stop (SIGTERM to exit), s", lambda d: d["stop_s"], False),
    ("offline-queue", "offline queue: first start (empty store) to CONNACK, s", lambda d: d["first_start_s"], False),
    ("offline-queue", "offline queue: restart to CONNACK, s", lambda d: d["restart_s"], False),
    ("offline-queue", "offline queue: broker RSS after the restart, MiB", lambda d: d["rss_restarted_bytes"] / 2**20, False),
    ("offline-queue", "offline queue: reconnect and drain, s", lambda d: d["drain_s"], False),
    ("offline-queue", "offline queue: drain, deliveries/s", lambda d: d["drain_rate"], True),
    ("bridge-qos0", "bridge to a remote mosquitto, QoS 0, msg/s delivered at the remote", rate, True),
    ("bridge-qos1", "bridge to a remote mosquitto, QoS 1, msg/s delivered at the remote", rate, True),
]
if other:
    # The broker's CPU time over the whole bench run (connecting included), per scenario.
    names = {"fanin-qos0": "fan-in QoS 0", "fanin-qos1": "fan-in QoS 1", "fanout-qos0": "fan-out QoS 0",
             "fanout-qos1": "fan-out QoS 1", "latency": "latency", "conn": "idle connections",
             "handshakes": "full TLS handshakes", "filters": "distinct filters"}
    rows += [(k, f"{v}: broker CPU per run, s", cpu, False) for k, v in names.items()]
runs = {}
for line in open(results):
    rnd, s, b, code, path = line.split()
    try:
        d = json.load(open(path))
    except Exception:
        d = None
    runs.setdefault((s, b), []).append(d)

def fmt(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.2f}"

others = [b for b in brokers if b != "mosquitto"]
# A change against the build before it: midge / midge-base as well.
pairs = [(b, "mosquitto") for b in others] + ([("midge", "midge-base")] if "midge-base" in brokers else [])
head = "| scenario | " + " | ".join(brokers) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " | lost, errors (" + ", ".join(brokers) + ") |"
table = []
for key, label, metric, higher in rows:
    if not any((key, b) in runs for b in brokers):
        continue
    med = {}
    bad = []
    for b in brokers:
        vals = []
        lost = errs = 0
        for d in runs.get((key, b), []):
            if d is None:
                errs += 1
                continue
            lost += d["lost"]
            errs += d["errors"]
            try:
                vals.append(float(metric(d)))
            except (KeyError, TypeError):
                pass
        med[b] = statistics.median(vals) if vals else None
        bad.append(f"{lost}, {errs}")
    ratios = []
    for b, base in pairs:
        m, o = med.get(base), med.get(b)
        r = o / m if m and o is not None else None
        ratios.append("–" if r is None else f"{r:.2f}" if r >= 0.1 else f"{r:.3f}")
    better = "higher is better" if higher else "lower is better"
    table.append(f"| {label} ({better}) | " + " | ".join(fmt(med[b]) for b in brokers) + " | " + " | ".join(ratios) + " | " + " / ".join(bad) + " |")
if table:
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    print("\n".join(table))
EOF

# The auth scenarios, each with its own brokers, the hash (and ACL) each used, and ratios.
python3 - "$results" "$tmp/labels" <<'EOF'
import json, statistics, sys
results, labels_path = sys.argv[1:]
labels = {}
for line in open(labels_path):
    s, b, label = line.rstrip("\n").split(" ", 2)
    labels[(s, b)] = label
runs = {}
for line in open(results):
    rnd, s, b, code, path = line.split()
    if (s, b) not in labels:
        continue
    try:
        d = json.load(open(path))
    except Exception:
        d = None
    runs.setdefault((s, b), []).append(d)
if not runs:
    sys.exit()

def fmt(x):
    if x is None:
        return "–"
    return f"{x:,.0f}".replace(",", " ") if x >= 100 else f"{x:.2f}"

metrics = {
    "auth-conn": ("connections/s", lambda d: d["connect_rate"]),
    "auth-conn-argon2": ("connections/s", lambda d: d["connect_rate"]),
    "acl-fanin": ("msg/s", lambda d: d["delivery_rate"]),
}
print()
print("| scenario | broker | password hash, ACL | median | per round | broker CPU per run, s (median) | broker CPU per connection or message, µs | lost, errors |")
print("|---|---|---|---:|---|---:|---:|---|")
med = {}
for (s, b), ds in runs.items():
    unit, metric = metrics[s]
    vals, cpus, per, lost, errs = [], [], [], 0, 0
    for d in ds:
        if d is None:
            errs += 1
            vals.append(None)
            continue
        lost += d["lost"]
        errs += d["errors"]
        vals.append(float(metric(d)))
        cpu = (d.get("broker_usage") or {}).get("cpu_s")
        if cpu is not None:
            cpus.append(cpu)
            n = d["connections"] if s.startswith("auth") else d["delivered"]
            if n:
                per.append(cpu / n * 1e6)
    ok = [v for v in vals if v is not None]
    med[(s, b)] = statistics.median(ok) if ok else None
    print(f"| {s} ({unit}) | {b} | {labels[(s, b)]} | {fmt(med[(s, b)])} | "
          + " / ".join(fmt(v) for v in vals) + f" | {fmt(statistics.median(cpus)) if cpus else '–'} | "
          + f"{fmt(statistics.median(per)) if per else '–'} | {lost}, {errs} |")
print()
def ratio(s, a, b, what):
    x, y = med.get((s, a)), med.get((s, b))
    if x is not None and y:
        print(f"{s}: {a} / {b} = {x / y:.2f}{what}" if x / y >= 0.1 else f"{s}: {a} / {b} = {x / y:.4f}{what}")
ratio("auth-conn", "midge", "mosquitto", "")
ratio("auth-conn-argon2", "midge", "mosquitto", " (midge on argon2id, mosquitto on $7$)")
ratio("acl-fanin", "midge-acl", "midge", " (midge with the ACL against without; target >= 0.90)")
ratio("acl-fanin", "midge-acl", "mosquitto", " (both with the ACL)")
EOF

# fanin-metrics: midge with its metrics scraped every second against midge without [http].
python3 - "$results" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    rnd, s, b, code, path = line.split()
    if s != "fanin-metrics":
        continue
    try:
        d = json.load(open(path))
    except Exception:
        d = None
    runs.setdefault(b, []).append(d)
if not runs:
    sys.exit()
fmt = lambda x: "–" if x is None else f"{x:,.0f}".replace(",", " ")
print()
print("| fan-in QoS 0 | msg/s, median | msg/s, per round | broker CPU per message, µs (median) | /metrics scrapes (ok of made, per round) | lost, errors |")
print("|---|---:|---|---:|---|---|")
med = {}
cpu = {}
for b in ("midge", "midge-metrics"):
    ds = runs.get(b, [])
    vals = [d["delivery_rate"] if d else None for d in ds]
    ok = [v for v in vals if v is not None]
    med[b] = statistics.median(ok) if ok else None
    per = [d["broker_usage"]["cpu_s"] / d["delivered"] * 1e6 for d in ds if d and d.get("broker_usage") and d["delivered"]]
    cpu[b] = statistics.median(per) if per else None
    scrapes = [f"{d['scrapes']['ok']} of {d['scrapes']['ok'] + d['scrapes']['failed']}" if d and d.get("scrapes") else "–" for d in ds]
    lost = sum(d["lost"] for d in ds if d)
    errs = sum(d["errors"] for d in ds if d) + sum(1 for d in ds if d is None)
    print(f"| {b} | {fmt(med[b])} | " + " / ".join(fmt(v) for v in vals) + f" | {'–' if cpu[b] is None else f'{cpu[b]:.2f}'} | " + " / ".join(scrapes) + f" | {lost}, {errs} |")
# A run whose scrapes all failed measured nothing of the metrics' cost.
unscraped = sum(1 for d in runs.get("midge-metrics", []) if d and (not d.get("scrapes") or d["scrapes"]["ok"] == 0))
if med.get("midge") and med.get("midge-metrics") is not None:
    r = med["midge-metrics"] / med["midge"]
    verdict = "met" if r >= 0.97 else "NOT met"
    print(f"\nfanin-metrics: midge-metrics / midge = {r:.3f} (target >= 0.97: {verdict})"
          + (f"; {unscraped} run(s) with no successful scrape" if unscraped else ""))
# The broker's CPU time per message does not move with the machine's other load as the rate does.
if cpu.get("midge") and cpu.get("midge-metrics") is not None:
    print(f"fanin-metrics: broker CPU per message, midge-metrics / midge = {cpu['midge-metrics'] / cpu['midge']:.3f}")
EOF

# Bridges: the local broker bridging to the same remote mosquitto, with each side's CPU.
python3 - "$results" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    rnd, s, b, code, path = line.split()
    if not s.startswith("bridge-"):
        continue
    try:
        d = json.load(open(path))
    except Exception:
        d = None
    runs.setdefault((s, b), []).append(d)
if not runs:
    sys.exit()
fmt = lambda x: "–" if x is None else f"{x:,.0f}".replace(",", " ") if x >= 100 else f"{x:.2f}"
med = lambda xs: statistics.median(xs) if xs else None
print()
print("| scenario | L, bridging | msg/s at R, median | per round | L's CPU per message taken, µs | R's CPU per message delivered, µs | lost (of what L took), duplicates, errors | of the lost, per round: dropped and counted by L's bridge + by L's sessions + unaccounted |")
print("|---|---|---:|---|---:|---:|---|---|")
rates = {}
for s in ("bridge-qos0", "bridge-qos1"):
    for b in ("mosquitto", "midge"):
        ds = runs.get((s, b))
        if not ds:
            continue
        ok = [d for d in ds if d]
        rates[(s, b)] = med([d["delivery_rate"] for d in ok])
        # L handles every message it took (acknowledged, or written at QoS 0), R what reached it.
        per_l = med([d["local_cpu_s"] / d["acked"] * 1e6 for d in ok if d["acked"]])
        per_r = med([d["remote_cpu_s"] / d["delivered"] * 1e6 for d in ok if d["delivered"]])
        lost = " / ".join(f"{d['lost']} of {d['acked']}" if d else "failed" for d in ds)
        dups = sum(d["duplicates"] for d in ok)
        errs = sum(d["errors"] for d in ok) + len(ds) - len(ok)
        split = " / ".join(
            f"{d['bridge_dropped']} + {d['sessions_dropped']} + {d['unaccounted']}" if d and d.get("unaccounted") is not None
            else "–" for d in ds)
        print(f"| {s} | {b} | {fmt(rates[(s, b)])} | " + " / ".join(fmt(d["delivery_rate"]) if d else "–" for d in ds)
              + f" | {fmt(per_l)} | {fmt(per_r)} | {lost}; {dups}; {errs} | {split} |")
print()
for s in ("bridge-qos0", "bridge-qos1"):
    m, o = rates.get((s, "midge")), rates.get((s, "mosquitto"))
    if m is not None and o:
        # A rate that counts only what arrived is not comparable to one with nothing lost.
        share = lambda b: sum(d["lost"] for d in runs[(s, b)] if d) / max(1, sum(d["acked"] for d in runs[(s, b)] if d))
        note = "" if share("midge") == share("mosquitto") == 0 else \
            f" (lost: midge {share('midge'):.2%}, mosquitto {share('mosquitto'):.2%} of what L took)"
        print(f"{s}: midge bridge / mosquitto bridge = {m / o:.2f}{note}")
    for b in ("mosquitto", "midge"):
        lost = sum(d["lost"] for d in runs.get((s, b), []) if d)
        if s == "bridge-qos1" and lost:
            print(f"{s}: {b} LOST {lost} messages it had acknowledged (QoS 1 must lose none)")
    unaccounted = sum(d["unaccounted"] for d in runs.get((s, "midge"), []) if d and d.get("unaccounted") is not None)
    if unaccounted:
        print(f"{s}: midge lost {unaccounted} messages that none of its counters accounts for")
EOF

for b in "${BROKERS[@]}" midge-acl midge-metrics remote; do
  if [ -s "$tmp/$b.log" ] && grep -qiE "error|warn|panic" "$tmp/$b.log"; then
    echo
    echo "$b log (last lines with errors or warnings):"
    grep -iE "error|warn|panic" "$tmp/$b.log" | tail -n 5
  fi
done
