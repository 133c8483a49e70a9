#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests of the PostgreSQL store backend
# (docs/cluster.md "Store backends"). It belongs to nobody else: initdb into a new
# temporary directory, owned by an unprivileged user (initdb refuses root), listening
# only on a Unix socket in that directory and on 127.0.0.1 at a free port.
#
#   eval "$(.ci/postgres.sh start)"   # exports CAPF_TEST_POSTGRES and CAPF_TEST_POSTGRES_DIR
#   .ci/postgres.sh stop "$CAPF_TEST_POSTGRES_DIR"
#
# `start` prints shell `export` lines on stdout (everything else goes to stderr). The
# URL names the database `capf_test`, user `capf` over TCP on 127.0.0.1; the socket
# directory is `$CAPF_TEST_POSTGRES_DIR/socket` for psql.
set -euo pipefail

pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
    echo "no PostgreSQL server found (apt-get install postgresql)" >&2
    exit 1
}

# The unprivileged user the cluster runs as when started by root.
CI_USER=capf-ci

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$CI_USER" -- "$@"
    else
        "$@"
    fi
}

free_port() {
    # Port 0 on 127.0.0.1: the kernel picks a free one. (Released before PostgreSQL
    # binds it; a race with another process is possible and would fail the start.)
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || shuf -i 20000-60000 -n 1
}

# Starts the server of the cluster in $2 on port $3.
run_server() {
    local bin=$1 dir=$2 port=$3
    # fsync stays on: the store's tests check that a commit is what makes a change
    # durable, and nothing here is slow enough to be worth lying about.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c max_connections=200" \
        start >&2 || { cat "$dir/server.log" >&2; exit 1; }
}

start() {
    local bin dir port
    bin=$(pg_bin)
    if [ "$(id -u)" -eq 0 ] && ! id "$CI_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$CI_USER"
    fi
    dir=$(mktemp -d /tmp/capf-postgres.XXXXXX)
    chmod 0755 "$dir"
    mkdir "$dir/data" "$dir/socket"
    [ "$(id -u)" -eq 0 ] && chown -R "$CI_USER" "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U capf --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    run_server "$bin" "$dir" "$port"
    as_owner "$bin/createdb" -h "$dir/socket" -p "$port" -U capf capf_test >&2
    echo "$port" >"$dir/port"
    echo "export CAPF_TEST_POSTGRES='postgres://capf@127.0.0.1:$port/capf_test'"
    echo "export CAPF_TEST_POSTGRES_DIR='$dir'"
}

stop() {
    local bin dir=${1:-${CAPF_TEST_POSTGRES_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "usage: $0 stop DIR" >&2; exit 1; }
    bin=$(pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
}

# The database going away and coming back, as a restart or failover does to its
# clients (tests/cluster.rs): `pause DIR` stops the server, `resume DIR` starts it
# again on the same port with the same data.
pause() {
    local dir=${1:-}
    [ -n "$dir" ] && [ -f "$dir/port" ] || { echo "usage: $0 pause DIR" >&2; exit 1; }
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >&2
}

resume() {
    local dir=${1:-}
    [ -n "$dir" ] && [ -f "$dir/port" ] || { echo "usage: $0 resume DIR" >&2; exit 1; }
    run_server "$(pg_bin)" "$dir" "$(cat "$dir/port")"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
pause) pause "${2:-}" ;;
resume) resume "${2:-}" ;;
*) echo "usage: $0 start | stop DIR | pause DIR | resume DIR" >&2; exit 1 ;;
esac
