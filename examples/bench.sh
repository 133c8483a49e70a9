#!/usr/bin/env bash
# Re-runs every figure of docs/benchmarks.md and prints the tables (Markdown).
#
#   examples/bench.sh                    # everything, 1,000,000-device store included
#   STORE_SIZES=100000 examples/bench.sh # skip the million
#   N=500 LEVELS="1 32" STORE_SIZES=10000 CONF_SECONDS=2 examples/bench.sh   # quick check
#
# It builds release, starts capf on a temporary data directory on 127.0.0.1 (ports
# 23804, 26970 and, for the boot storm, TFTP on 26969), and runs the load generator
# on the same host. Results also go to
# target/bench/results.md; raw JSON reports to target/bench/.
set -euo pipefail

N=${N:-2000}                          # enrollments per concurrency level
LEVELS=${LEVELS:-"1 8 32 128"}
CONFIG_N=${CONFIG_N:-500}             # enrollments with partial + encrypted config
STORE_SIZES=${STORE_SIZES:-"100000 1000000"}
CONF_SECONDS=${CONF_SECONDS:-5}
IDLE=${IDLE:-1000}
STORM_N=${STORM_N:-5000}              # boot storm: phones (enrolled first, on a new node)
STORM_C=${STORM_C:-64}                # phones fetching at once over HTTP
STORM_TFTP_C=${STORM_TFTP_C:-64}      # ... over TFTP (at most 128)
STORM_ROUNDS=${STORM_ROUNDS:-6}       # HTTP rounds: the first fetch, then unchanged files
STORM_REUSE_ROUNDS=${STORM_REUSE_ROUNDS:-5}  # HTTP rounds, a phone's three files over one connection
STORM_TFTP_ROUNDS=${STORM_TFTP_ROUNDS:-3}  # TFTP rounds per block size
STORM_BLKSIZE=${STORM_BLKSIZE:-1428,512}
# The storm phones' base document: one of the size and shape CUCM writes (a two-line
# SIP phone, 18.6 KB), so the encrypted file is what a real phone fetches.
STORM_DOCUMENT=${STORM_DOCUMENT:-examples/data/cucm.cnf.xml}
BACKEND_N=${BACKEND_N:-2000}          # store backends: enrollments, then phones in a storm
BACKEND_STORM_N=${BACKEND_STORM_N:-2000}
SETTLE=${SETTLE:-150}                 # at most this many seconds of rest before each timed part (0: none)
# Which parts run (all by default): enroll idle builds storm scale pinned backends
SECTIONS=${SECTIONS:-"enroll idle builds storm scale pinned backends"}
PORT=${PORT:-23804}
HTTP_PORT=${HTTP_PORT:-26970}
TFTP_PORT=${TFTP_PORT:-26969}

cd "$(dirname "$0")/.."
cargo build --release --bins --examples >&2
BIN=$PWD/target/release
OUT=$PWD/target/bench
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/capf-bench.XXXXXX)
SERVER=

stop_server() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        # A server the storm's restart started is not this shell's child.
        while kill -0 "$SERVER" 2>/dev/null; do sleep 0.1; done
        SERVER=
    fi
}
PG_DIR=
cleanup() {
    stop_server
    [ -n "$PG_DIR" ] && .ci/postgres.sh stop "$PG_DIR" >/dev/null 2>&1
    rm -rf "$WORK"
}
runs() { [[ " $SECTIONS " == *" $1 "* ]]; }
trap cleanup EXIT

# A node whose limits let one host act as thousands of phones.
new_node() {
    rm -rf "$WORK/node"
    mkdir -p "$WORK/node"
    cat > "$WORK/node/capf.toml" <<EOF
node_name = "127.0.0.1"
listen = "127.0.0.1:$PORT"
http = "127.0.0.1:$HTTP_PORT"
tftp = "127.0.0.1:$TFTP_PORT"
max_sessions = 4096
max_failures_per_address = 1000000
message_timeout = 15
log_format = "json"
EOF
}

start_server() {
    "$BIN/capf" --data "$WORK/node" serve --init 2> "$WORK/serve.log" &
    SERVER=$!
    for _ in $(seq 100); do
        [ -S "$WORK/node/admin.sock" ] && return 0
        sleep 0.1
    done
    echo "capf did not start" >&2
    cat "$WORK/serve.log" >&2
    exit 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
loadgen() { "$BIN/examples/loadgen" --data "$WORK/node" --addr "127.0.0.1:$PORT" "$@"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# Server-side session durations (TLS handshake excluded) of the log lines from $1 on.
server_p99() {
    tail -n "+$1" "$WORK/serve.log" | python3 -c '
import json, sys
d = []
for line in sys.stdin:
    try:
        f = json.loads(line)["fields"]
    except Exception:
        continue
    if f.get("message") == "session ended" and f.get("result") == "Upgrade Success":
        d.append(f["duration_ms"])
d.sort()
print(f"{d[min(len(d)-1, int(len(d)*0.99))]}" if d else "-")'
}

# This machine (a VM on a shared host) does about a quarter less per CPU-second for
# minutes after both cores have been busy: the boot storm alone measured 20,769 files/s
# rested and 14,755 right after another run (docs/benchmarks.md). So the limit and each
# timed part start on a rested machine (one-minute load average below 0.5, or after
# SETTLE seconds), and the report says how long each waited.
SETTLED=""
settle() {
    local waited=0
    while [ "$waited" -lt "$SETTLE" ] && awk '{exit !($1 >= 0.5)}' /proc/loadavg; do
        sleep 5
        waited=$((waited + 5))
    done
    echo "rested ${waited}s before $1 (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    SETTLED+="${SETTLED:+, }$1 ${waited} s"
}

# -- the machine and its limit ------------------------------------------------------
CPUS=$(nproc)
MODEL=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
settle "the limit"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "openssl speed (single core, then $CPUS processes)..." >&2
SPEED1=$(openssl speed -seconds 5 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}')
SPEEDN=$(openssl speed -seconds 5 -multi "$CPUS" rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}')
# Two private-key operations per enrollment: the TLS handshake and the LSC.
LIMIT=$(python3 -c "print(round($SPEEDN / 2))")

# -- enrollment ---------------------------------------------------------------------
if runs enroll; then
settle enroll
new_node
start_server
FIRST=0
ENROLL_ROWS=""
for C in $LEVELS; do
    loadgen setup -n "$N" --first "$FIRST" >/dev/null
    LINE=$(($(wc -l < "$WORK/serve.log") + 1))
    loadgen enroll -n "$N" --first "$FIRST" -c "$C" --server-pid "$SERVER" --json > "$OUT/enroll-c$C.json"
    R="$OUT/enroll-c$C.json"
    EPS=$(json "$R" "round(d['enrollments_per_second'])")
    ENROLL_ROWS+="| $C | $N | $(json "$R" "d['failed']") | $EPS | $(python3 -c "print(f'{$EPS / $LIMIT:.0%}')") \
| $(json "$R" "round(d['enroll_latency']['p50_ms'],1)") | $(json "$R" "round(d['enroll_latency']['p95_ms'],1)") \
| $(json "$R" "round(d['enroll_latency']['p99_ms'],1)") | $(json "$R" "round(d['enroll_latency']['max_ms'],1)") \
| $(server_p99 "$LINE") | $(json "$R" "round(d['server_cpu_ms_per_enrollment'],2)") \
| $(json "$R" "round(d['loadgen_cpu_ms_per_enrollment'],2)") |
"
    FIRST=$((FIRST + N))
done

loadgen setup -n "$CONFIG_N" --first "$FIRST" --encrypted-config >/dev/null
loadgen enroll -n "$CONFIG_N" --first "$FIRST" -c 32 --config "http://127.0.0.1:$HTTP_PORT" --json > "$OUT/enroll-config.json"
R="$OUT/enroll-config.json"
CONFIG_ROW="| 32 | $CONFIG_N | $(json "$R" "d['failed']") | $(json "$R" "round(d['enrollments_per_second'])") \
| $(json "$R" "round(d['enroll_latency']['p99_ms'],1)") | $(json "$R" "round(d['config_latency']['p50_ms'],1)") \
| $(json "$R" "round(d['config_latency']['p99_ms'],1)") |"
stop_server
fi

# -- idle connections, on a fresh node ----------------------------------------------
if runs idle; then
new_node
start_server
sleep 1
loadgen idle -n "$IDLE" --server-pid "$SERVER" --hold 1 --json > "$OUT/idle.json"
IDLE_FRESH=$(json "$OUT/idle.json" "d['rss_before_kib']")
IDLE_WITH=$(json "$OUT/idle.json" "d['rss_with_connections_kib']")
IDLE_OPENED=$(json "$OUT/idle.json" "d['opened']")
stop_server
fi

# -- configuration builds -----------------------------------------------------------
if runs builds; then
settle builds
"$BIN/examples/confbench" --seconds "$CONF_SECONDS" --json > "$OUT/confbench.json"
CONF_ROWS=$(python3 - "$OUT/confbench.json" "$SPEED1" <<'EOF'
import json, sys
cases = json.load(open(sys.argv[1]))
one = float(sys.argv[2])
for c in cases:
    per_core = c["per_second"] / c["threads"]
    print(f"| {c['name']} | {c['threads']} | {c['per_second']:.0f} | {per_core:.0f} | {per_core / one:.0%} |")
EOF
)
fi

# -- boot storm, on a fresh node ----------------------------------------------------
if runs storm; then
settle storm
# The phones enroll with encrypted configuration, then fetch ITL, .sgn and .enc.sgn:
# over HTTP (the first fetch, then unchanged files), then over TFTP from 127.0.1.x;
# then capf is restarted and the phones fetch their files once more over HTTP, as
# after a power cut: memory empty, the files kept on disk.
new_node
start_server
loadgen setup -n "$STORM_N" --first 0 --encrypted-config --document "$STORM_DOCUMENT" >/dev/null
# The restart: SIGTERM, wait until the process has ended (a zombie of this shell
# counts as ended), start capf again on the same data directory, print its id.
RESTART="kill $SERVER; while [ -e /proc/$SERVER ] && ! grep -q '^State:.*Z' /proc/$SERVER/status 2>/dev/null; do sleep 0.1; done
'$BIN/capf' --data '$WORK/node' serve >/dev/null 2>>'$WORK/serve.log' &
echo \$! > '$WORK/restarted.pid'
echo \$!"
loadgen storm -n "$STORM_N" --first 0 -c "$STORM_C" --tftp-concurrency "$STORM_TFTP_C" \
    --http "http://127.0.0.1:$HTTP_PORT" --tftp "127.0.0.1:$TFTP_PORT" --blksize "$STORM_BLKSIZE" \
    --rounds "$STORM_ROUNDS" --http-reuse-rounds "$STORM_REUSE_ROUNDS" --tftp-rounds "$STORM_TFTP_ROUNDS" \
    --restart-command "$RESTART" --server-pid "$SERVER" --json > "$OUT/storm.json"
wait "$SERVER" 2>/dev/null || true
SERVER=$(cat "$WORK/restarted.pid")
KEPT_FILES=$(find "$WORK/node/kept-files" -type f | wc -l)
KEPT_BYTES=$(du -sb "$WORK/node/kept-files" | cut -f1)
stop_server
STORM_ROWS=$(python3 - "$OUT/storm.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def row(what, blk, rounds, r):
    l = r["file_latency"] or {}
    cpu = lambda k: f"{r[k]:.3f}" if r.get(k) is not None else "-"
    print(f"| {what} | {blk} | {rounds} | {r['concurrency']} | {r['files']} | {r['failed']} "
          f"| {r['files_per_second']:.0f} | {r['transfers_per_second']:.0f} "
          f"| {l.get('p50_ms', 0):.2f} | {l.get('p99_ms', 0):.2f} "
          f"| {cpu('server_cpu_ms_per_file')} | {cpu('loadgen_cpu_ms_per_file')} |")
for r in d["rounds"]:
    if r["first_fetch"]:
        row(f"{r['protocol'].upper()}, first fetch (built)", r["block_size"] or "-", 1, r)
names = {"http": "HTTP, unchanged, a connection per file",
         "http-reuse": "HTTP, unchanged, a connection per phone",
         "tftp": "TFTP, unchanged"}
for u in d["unchanged"]:
    row(names.get(u["protocol"], u["protocol"]), u["block_size"] or "-", u["rounds"], u)
for r in d["rounds"]:
    if r["after_restart"]:
        row(f"HTTP, after a restart (kept on disk; {r['verified_in_full']} files built again)", "-", 1, r)
EOF
)
STORM_MEMORY=$(python3 - "$OUT/storm.json" "$(wc -c < "$STORM_DOCUMENT")" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
doc = int(sys.argv[2])
f = d["file_bytes"]
n = d["enroll"]["enrolled"]
overhead = 192  # phone_config/cache.rs ENTRY_OVERHEAD
per_phone = f["partial_sgn"] + f["encrypted_sgn"] + 2 * overhead
first = next(r for r in d["rounds"] if r["first_fetch"])
before, after = d["server_rss_kib_before_storm"], first["server_rss_kib_after"]
print(f"Files: ITL {f['itl']} bytes (one for all), .sgn {f['partial_sgn']:.0f} bytes, .enc.sgn {f['encrypted_sgn']:.0f} bytes "
      f"(means over {n} phones, base document {doc} bytes). Counted against `config_cache_mib` per phone: {per_phone:.0f} bytes, so 100,000 phones "
      f"{per_phone * 100000 / 2**20:.0f} MiB (the default is 2048 MiB). Server RSS {before / 1024:.0f} MiB before the "
      f"first fetch, {after / 1024:.0f} MiB after it: {(after - before) * 1024 / n:.0f} bytes per phone.")
EOF
)
fi

# -- store scale --------------------------------------------------------------------
if runs scale; then
STORE_ROWS=""
for SIZE in $STORE_SIZES; do
    new_node
    start_server
    START=$(date +%s.%N)
    loadgen setup -n "$SIZE" --first 0 >/dev/null
    IMPORT=$(python3 -c "print(f'{$(date +%s.%N) - $START:.1f}')")
    RSS_IMPORT=$(rss_kib "$SERVER")
    START=$(date +%s.%N)
    for i in $(seq 20); do
        "$BIN/capf" --data "$WORK/node" device show "$(printf 'SEP%012X' $(( (RANDOM * 32768 + RANDOM) % SIZE )))" >/dev/null
    done
    SHOW=$(python3 -c "print(f'{($(date +%s.%N) - $START) / 20 * 1000:.1f}')")
    # Counted as it streams: top-level keys are indented by four spaces.
    START=$(date +%s.%N)
    LISTED=$("$BIN/capf" --data "$WORK/node" device list --json | grep -c '^    "name": ')
    LIST=$(python3 -c "print(f'{$(date +%s.%N) - $START:.2f}')")
    RSS_AFTER=$(rss_kib "$SERVER")
    stop_server
    BYTES=$(du -sb "$WORK/node/db" | cut -f1)
    "$BIN/examples/storebench" --data "$WORK/node" --count "$SIZE" --json > "$OUT/store-$SIZE.json"
    S="$OUT/store-$SIZE.json"
    STORE_ROWS+="| $SIZE | $IMPORT | $LIST ($LISTED listed) | $SHOW | $(json "$S" "round(d['lookup_p50_us'],1)") / $(json "$S" "round(d['lookup_p99_us'],1)") \
| $(python3 -c "print(f'{$BYTES / 1048576:.0f} MiB, {$BYTES / $SIZE / 1024:.2f} KiB/device')") | $((RSS_IMPORT / 1024)) / $((RSS_AFTER / 1024)) MiB \
| $(json "$S" "round(d['open_seconds'],1)") |
"
done
fi

# -- enrollment core against core (server on core 0, load generator on core 1) --------
if runs pinned; then
PINNED=""
if [ "$CPUS" -ge 2 ]; then
    for i in 1 2 3; do
        settle "pinned run $i"
        PINNED+="$(N="$N" examples/pinned-enroll.sh || echo "run $i failed (its diagnostics are on stderr)")"$'\n\n'
    done
fi
fi

# -- store backends: sled against PostgreSQL, same run --------------------------------
# The same node twice, once on its embedded sled store and once on a PostgreSQL
# database of its own (a throwaway cluster started by .ci/postgres.sh on 127.0.0.1,
# sharing the machine's cores): enrollment at C=32, then a boot storm. PostgreSQL's
# CPU (the postmaster, its backends and the backends already gone) is reported apart
# from capf's.
pg_cpu_ms() {
    [ -n "$PG_DIR" ] || { echo 0; return; }
    local master
    master=$(head -1 "$PG_DIR/data/postmaster.pid")
    python3 - "$master" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
master = sys.argv[1]
f = fields(master)
total = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            g = fields(pid)
        except OSError:
            continue
        if g[1] == master:
            total += int(g[11]) + int(g[12])
print(total * 1000 / tick)
PY
}

if runs backends; then
BACKEND_ROWS=""
for BACKEND in sled postgres; do
    settle "backend $BACKEND"
    new_node
    if [ "$BACKEND" = postgres ]; then
        if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null; then
            BACKEND_ROWS+="| postgres | (not installed: apt-get install postgresql) | | | | | | |
"
            continue
        fi
        PG_ENV=$(.ci/postgres.sh start)
        PG_URL=$(sed -n "s/^export CAPF_TEST_POSTGRES='\(.*\)'$/\1/p" <<<"$PG_ENV")
        PG_DIR=$(sed -n "s/^export CAPF_TEST_POSTGRES_DIR='\(.*\)'$/\1/p" <<<"$PG_ENV")
        echo "store = \"$PG_URL\"" >> "$WORK/node/capf.toml"
    fi
    start_server
    loadgen setup -n "$BACKEND_N" --first 0 >/dev/null
    PG0=$(pg_cpu_ms)
    loadgen enroll -n "$BACKEND_N" --first 0 -c 32 --server-pid "$SERVER" --json > "$OUT/backend-$BACKEND-enroll.json"
    PG1=$(pg_cpu_ms)
    loadgen setup -n "$BACKEND_STORM_N" --first "$BACKEND_N" --encrypted-config >/dev/null
    PG2=$(pg_cpu_ms)
    loadgen storm -n "$BACKEND_STORM_N" --first "$BACKEND_N" -c "$STORM_C" --tftp-concurrency "$STORM_TFTP_C" \
        --http "http://127.0.0.1:$HTTP_PORT" --tftp "127.0.0.1:$TFTP_PORT" --blksize 1428 \
        --rounds 3 --tftp-rounds 2 --server-pid "$SERVER" --json > "$OUT/backend-$BACKEND-storm.json"
    PG3=$(pg_cpu_ms)
    stop_server
    BACKEND_ROWS+=$(python3 - "$BACKEND" "$OUT/backend-$BACKEND-enroll.json" "$OUT/backend-$BACKEND-storm.json" "$BACKEND_N" "$PG0" "$PG1" "$PG2" "$PG3" <<'PY'
import json, sys
backend, enroll, storm = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
n = int(sys.argv[4])
pg0, pg1, pg2, pg3 = map(float, sys.argv[5:9])
def pg_per(ms, count):
    return f"{ms / count:.3f}" if count and backend == "postgres" else "-"
first = next(r for r in storm["rounds"] if r["first_fetch"] and r["protocol"] == "http")
http = next(u for u in storm["unchanged"] if u["protocol"] == "http")
tftp = next(u for u in storm["unchanged"] if u["protocol"] == "tftp")
files = sum(r["files"] for r in storm["rounds"])
failed = sum(r["failed"] for r in storm["rounds"])
print(f"| {backend} | {enroll['enrollments_per_second']:.0f} | {enroll['failed']} "
      f"| {enroll['enroll_latency']['p99_ms']:.1f} | {enroll['server_cpu_ms_per_enrollment']:.2f} "
      f"| {pg_per(pg1 - pg0, n)} | {first['files_per_second']:.0f} | {http['files_per_second']:.0f} "
      f"| {tftp['transfers_per_second']:.0f} | {failed} | {pg_per(pg3 - pg2, files)} |")
PY
)$'\n'
done
[ -n "$PG_DIR" ] && .ci/postgres.sh stop "$PG_DIR" >/dev/null 2>&1
PG_DIR=
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
{
cat <<EOF
Machine: $CPUS × $MODEL; $(openssl version | cut -d' ' -f1-2); load average before $LOAD_BEFORE, after $LOAD_AFTER.
Limit: \`openssl speed -seconds 5 rsa2048\` = $SPEED1 signs/s on one core; \`-multi $CPUS\` = $SPEEDN signs/s,
so $LIMIT enrollments/s at two private-key operations each.
Rest before each timed part (one-minute load average below 0.5, at most ${SETTLE} s): $SETTLED.
EOF
runs enroll && cat <<EOF

### Enrollment (a distinct RSA-2048 key per phone, null string, loadgen on the same host)

| C | phones | failed | enrollments/s | of limit | p50 ms | p95 ms | p99 ms | max ms | server p99 ms | server CPU ms/enr | loadgen CPU ms/enr |
|---|---|---|---|---|---|---|---|---|---|---|---|
$ENROLL_ROWS
### Enrollment followed by the signed partial and the encrypted configuration over HTTP

| C | phones | failed | enrollments/s | enroll p99 ms | config p50 ms | config p99 ms |
|---|---|---|---|---|---|---|
$CONFIG_ROW
EOF
runs pinned && cat <<EOF

### Enrollment core against core (\`examples/pinned-enroll.sh\`, three runs)

\`\`\`
${PINNED:-(one core only: not measured)}
\`\`\`
EOF
runs builds && cat <<EOF

### Configuration builds (\`ConfigService::fetch\` in-process)

| file | threads | files/s | per core | of one core's RSA-2048 signs/s |
|---|---|---|---|---|
$CONF_ROWS
EOF
runs idle && cat <<EOF

### Memory

| | RSS |
|---|---|
| fresh \`capf serve\` before the connections | $((IDLE_FRESH / 1024)) MiB |
| with $IDLE_OPENED of $IDLE connections idle after AUTH_REQUEST | $((IDLE_WITH / 1024)) MiB |
EOF
runs storm && cat <<EOF

### Boot storm ($STORM_N phones enrolled with encrypted configuration, base document \`$STORM_DOCUMENT\`; ITL, .sgn and .enc.sgn each)

| transport | TFTP blksize | rounds | C | files | failed | files/s | transfers/s | p50 ms | p99 ms | server CPU ms/file | loadgen CPU ms/file |
|---|---|---|---|---|---|---|---|---|---|---|---|
$STORM_ROWS

$STORM_MEMORY

Kept on disk (\`kept-files/\`) at the end: $KEPT_FILES files, $KEPT_BYTES bytes.
EOF
runs scale && cat <<EOF

### Store scale (devices imported with \`capf device import\` through the admin socket)

| devices | import s | \`device list --json\` s | \`device show\` ms (CLI) | lookup p50 / p99 µs (in-process) | db size | server RSS after import / after list+show | store open s |
|---|---|---|---|---|---|---|---|
$STORE_ROWS
EOF
runs backends && cat <<EOF

### Store backends, same run ($BACKEND_N enrollments at C=32, then a boot storm of $BACKEND_STORM_N phones: HTTP C=$STORM_C, TFTP C=$STORM_TFTP_C, blksize 1428)

| store | enrollments/s | failed | enroll p99 ms | capf CPU ms/enr | PostgreSQL CPU ms/enr | HTTP first fetch files/s | HTTP unchanged files/s | TFTP unchanged transfers/s | storm failed | PostgreSQL CPU ms/file |
|---|---|---|---|---|---|---|---|---|---|---|
$BACKEND_ROWS
EOF
true
} | tee "$OUT/results.md"
