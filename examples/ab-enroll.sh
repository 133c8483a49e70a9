#!/usr/bin/env bash
# Enrollment A/B: one build's enrollments/s and server CPU per enrollment at C=1 and
# C=32, on a new node of its own. Run two builds alternately in the same minutes to
# compare them on a noisy machine (docs/benchmarks.md "Re-run after the layout move").
#
#   git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release --bins --examples)
#   cargo build --release --bins --examples
#   for i in 1 2 3; do examples/ab-enroll.sh /tmp/before before; examples/ab-enroll.sh . after; done
#   LEVELS=1 examples/ab-enroll.sh . after        # C=1 only
#
# TREE must hold target/release/capf and target/release/examples/loadgen.
set -euo pipefail
TREE=${1:?usage: ab-enroll.sh TREE LABEL}; L=${2:-$TREE}
B=$TREE/target/release
W=$(mktemp -d /tmp/ab.XXXX); mkdir $W/node
cat > $W/node/capf.toml <<T
node_name = "127.0.0.1"
listen = "127.0.0.1:43804"
http = "127.0.0.1:46970"
max_sessions = 4096
max_failures_per_address = 1000000
message_timeout = 15
T
if $B/capf serve --help | grep -q -- "--init"; then INIT=--init; else INIT=; fi
$B/capf --data $W/node serve $INIT 2>$W/serve.log & S=$!
for i in $(seq 50); do [ -S $W/node/admin.sock ] && break; sleep 0.1; done
F=0
for C in ${LEVELS:-1 32}; do
  N=$([ $C = 1 ] && echo 1000 || echo 2000)
  $B/examples/loadgen --data $W/node --addr 127.0.0.1:43804 setup -n $N --first $F >/dev/null 2>&1
  R=$($B/examples/loadgen --data $W/node --addr 127.0.0.1:43804 enroll -n $N --first $F -c $C --server-pid $S --json 2>/dev/null)
  echo "$L C=$C $(echo "$R" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("eps=%d failed=%d server_cpu_ms=%.2f p99=%.1f" % (d["enrollments_per_second"], d["failed"], d["server_cpu_ms_per_enrollment"], d["enroll_latency"]["p99_ms"]))')"
  F=$((F+N))
done
kill $S; wait $S 2>/dev/null || true; rm -rf $W
