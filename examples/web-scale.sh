#!/usr/bin/env bash
# The web admin's pages against a large store (issue #16: "fast at 1,000,000
# devices"): imports N devices into a new node on 127.0.0.1, logs in with curl and
# times the phone list (prefix search, paging, status and expiry filters), the
# dashboard (computed, then kept) and a phone page.
#
#   cargo build --release --bins --examples
#   examples/web-scale.sh                 # N=1000000
#   N=20000 examples/web-scale.sh         # quick check
set -euo pipefail
N=${N:-1000000}
cd "$(dirname "$0")/.."
B=$PWD/target/release
W=$(mktemp -d /tmp/capf-web-scale.XXXXXX)
D=$W/node
S=
trap '[ -n "$S" ] && kill $S 2>/dev/null; rm -rf "$W"' EXIT
"$B/capf" --data "$D" init --node-name 127.0.0.1 >/dev/null
cat > "$D/capf.toml" <<T
node_name = "127.0.0.1"
listen = "127.0.0.1:43899"
http = "off"
metrics = "off"
web = "127.0.0.1:48443"
T
"$B/capf" --data "$D" serve 2>"$W/serve.log" & S=$!
for _ in $(seq 100); do [ -S "$D/admin.sock" ] && break; sleep 0.1; done
t0=$(date +%s.%N)
"$B/examples/loadgen" --data "$D" --addr 127.0.0.1:43899 setup -n "$N" >/dev/null 2>&1
echo "imported $N devices in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
echo 'correct horse battery' | "$B/capf" --data "$D" admin-user add admin --password-stdin >/dev/null
J=$W/jar
U=https://127.0.0.1:48443
token=$(curl -sk -c "$J" "$U/login" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//; s/"$//')
curl -sk -b "$J" -c "$J" -o /dev/null -w "login: %{http_code}\n" --data-urlencode "csrf=$token" \
    --data-urlencode "name=admin" --data-urlencode "password=correct horse battery" "$U/login"
get() {
    curl -sk -b "$J" -o /dev/null -w "%{http_code} %{time_total}s  GET $1\n" "$U$1"
}
for path in "/phones" "/phones?prefix=SEP00000007" "/phones?prefix=SEP00000007&after=SEP0000000700FF" \
    "/phones?status=locked" "/phones?status=upgrade+success" "/phones?expires=30" \
    "/phones/SEP00000007A120"; do
    get "$path"; get "$path"
done
get "/"; get "/"
