#!/usr/bin/env bash
# The vendored OpenSSL (default build) against the system one (system-openssl), in
# one run: clean `cargo build --release` time, size of target/release/capf, and
# RSA-2048 signs/s through capf's signing path (examples/rsasign.rs).
#
#   examples/openssl-bench.sh                      # CPU=1 ROUNDS=5 SIGN_SECONDS=5
#   CPU=0 ROUNDS=1 SIGN_SECONDS=1 examples/openssl-bench.sh
#
# Needs the system library for the second build (Debian: libssl-dev, pkg-config).
# Every command runs on one core (taskset -c $CPU) and one cargo job, so the two
# builds are timed alike; crate sources must already be downloaded (cargo fetch), so
# no download is timed. Each build goes to its own new target directory under OUT.
set -euo pipefail

CPU=${CPU:-1}
ROUNDS=${ROUNDS:-5}
SIGN_SECONDS=${SIGN_SECONDS:-5}
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/capf-openssl-bench.XXXXXX)}
mkdir -p "$OUT"
export CARGO_BUILD_JOBS=1
pin() { taskset -c "$CPU" "$@"; }

echo "# $(date -u '+%F %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), CPU $CPU"
echo "# $(rustc --version); system $(openssl version)"
cargo fetch --locked >/dev/null 2>&1
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$OUT/rsa2048.pem" 2>/dev/null

build() {
    local name=$1
    shift
    local dir=$OUT/$name
    rm -rf "$dir"
    echo "## $name: cargo build --release --locked $*   (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
    # Wall-clock, and the CPU time of cargo and everything it ran (rustc, cc, make).
    local TIMEFORMAT='%R %U %S' real user sys
    { time CARGO_TARGET_DIR=$dir pin cargo build --release --locked "$@" 2>"$OUT/$name.log"; } 2>"$OUT/$name.time"
    local bin=$dir/release/capf
    strip -o "$OUT/$name.stripped" "$bin"
    read -r real user sys <"$OUT/$name.time"
    awk -v n="$name" -v r="$real" -v u="$user" -v s="$sys" -v b="$(stat -c %s "$bin")" \
        -v t="$(stat -c %s "$OUT/$name.stripped")" 'BEGIN {
            printf "%s: clean build %.0f s (CPU %.0f s user + %.0f s sys); capf %d bytes (%.1f MiB), stripped %d bytes (%.1f MiB)\n",
                n, r, u, s, b, b / 1048576, t, t / 1048576 }'
    echo "$name: links $(ldd "$bin" | grep -oE 'lib(ssl|crypto)\.so[.0-9]*' | sort -u | xargs || true)"
    echo "$name: load after $(cut -d' ' -f1-3 /proc/loadavg)"
    # Not timed: the driver for the signing figure.
    CARGO_TARGET_DIR=$dir pin cargo build --release --locked --example rsasign "$@" 2>>"$OUT/$name.log"
}

build vendored
build system --no-default-features --features system-openssl

echo "## RSA-2048 signs/s, one thread, alternating, $ROUNDS rounds of $SIGN_SECONDS s per padding"
for round in $(seq "$ROUNDS"); do
    for name in vendored system; do
        echo "round $round $name: $(pin "$OUT/$name/release/examples/rsasign" --key "$OUT/rsa2048.pem" \
            --seconds "$SIGN_SECONDS" | paste -sd ';')"
    done
done
echo "## reference: pin openssl speed -seconds $SIGN_SECONDS rsa2048 (the system command line)"
pin openssl speed -seconds "$SIGN_SECONDS" rsa2048 2>/dev/null | grep -E '^rsa +2048'
echo "# done; builds in $OUT"
