#!/usr/bin/env bash
# Enrollment measured core against core (issue #15 point 3): capf pinned to one core,
# the load generator to the other, so what the server costs is not hidden by the load
# generator sharing its core. Reports enrollments/s against that one core's
# `openssl speed rsa2048` (measured in the same run, on the same core) and the server's
# CPU per enrollment in RSA-2048 signature equivalents.
#
#   cargo build --release --bins --examples
#   examples/pinned-enroll.sh                  # N=2000 C=32, server on core 0, load on core 1
#   N=4000 C=64 SERVER_CPU=1 LOAD_CPU=0 examples/pinned-enroll.sh
set -euo pipefail
N=${N:-2000}
C=${C:-32}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Below the ephemeral range (32768-60999 on Linux): after a load test, a client socket
# may hold any port in it, and the listener could not bind.
PORT=${PORT:-23814}
cd "$(dirname "$0")/.."
B=$PWD/target/release
W=$(mktemp -d /tmp/capf-pinned.XXXXXX)
trap 'kill $S 2>/dev/null && wait $S 2>/dev/null; rm -rf "$W"' EXIT
mkdir "$W/node"
cat > "$W/node/capf.toml" <<T
node_name = "127.0.0.1"
listen = "127.0.0.1:$PORT"
http = "off"
max_sessions = 4096
max_failures_per_address = 1000000
message_timeout = 15
T
SIGNS=$(taskset -c "$SERVER_CPU" openssl speed -seconds 5 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}')
taskset -c "$SERVER_CPU" "$B/capf" --data "$W/node" serve --init 2>"$W/serve.log" & S=$!
for _ in $(seq 100); do [ -S "$W/node/admin.sock" ] && break; sleep 0.1; done
taskset -c "$LOAD_CPU" "$B/examples/loadgen" --data "$W/node" --addr 127.0.0.1:$PORT setup -n "$N" >/dev/null 2>&1
R=$(taskset -c "$LOAD_CPU" "$B/examples/loadgen" --data "$W/node" --addr 127.0.0.1:$PORT \
    enroll -n "$N" -c "$C" --server-pid "$S" --json 2>"$W/loadgen.log")
if ! python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(d["succeeded"] == 0 or d["server_cpu_ms_per_enrollment"] is None)' "$R" 2>/dev/null; then
    echo "pinned-enroll: the run failed; loadgen said:" >&2
    echo "$R" >&2
    tail -20 "$W/loadgen.log" >&2
    echo "capf said (last lines):" >&2
    tail -20 "$W/serve.log" >&2
    kill -0 "$S" 2>/dev/null || echo "capf is no longer running" >&2
    exit 1
fi
python3 - "$SIGNS" "$R" <<'PY'
import json, sys
signs = float(sys.argv[1]); d = json.loads(sys.argv[2])
eps = d["enrollments_per_second"]; cpu = d["server_cpu_ms_per_enrollment"]
sign_ms = 1000.0 / signs
print(f"one core: openssl speed rsa2048 = {signs:.1f} signs/s ({sign_ms:.3f} ms each)")
print(f"enrollments/s = {eps:.0f} ({eps / signs:.0%} of that core's signs/s), failed {d['failed']}")
print(f"server CPU per enrollment = {cpu:.3f} ms = {cpu / sign_ms:.2f} RSA-2048 signature equivalents")
print(f"p50/p99 enroll latency = {d['enroll_latency']['p50_ms']:.1f} / {d['enroll_latency']['p99_ms']:.1f} ms")
PY
