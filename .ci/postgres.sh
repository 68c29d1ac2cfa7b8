#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests (issue 4, item 7).
#
# Sourced by .ci/run:  . .ci/postgres.sh; pg_start; trap pg_stop EXIT
# Run on its own:      .ci/postgres.sh COMMAND [ARG...]
#   starts the server, runs COMMAND with COSTROUTE_PG_URL exported, stops the
#   server and removes its files, and exits with COMMAND's status.
#
# pg_start installs Debian's `postgresql` package when no initdb/pg_ctl is found
# (without creating or starting Debian's own "main" cluster), initdb's a fresh
# cluster in a temporary directory as the `postgres` OS user (initdb refuses
# root), listens on 127.0.0.1 only, on a free port (never 5432's `main`
# cluster), creates a password-authenticated user and a database, and exports
#   COSTROUTE_PG_URL=postgresql://costroute:PASSWORD@127.0.0.1:PORT/costroute
# pg_stop stops the server and removes the directory (safe to call twice).

PG_DIR=""
PG_BIN=""
PG_AS=()

_pg_find_bin() {
    local d
    # Debian keeps the server binaries out of PATH, one directory per major version.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            PG_BIN=$d
            return 0
        fi
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        PG_BIN=$(dirname "$(readlink -f "$(command -v initdb)")")
        return 0
    fi
    return 1
}

_pg_install() {
    if [[ $EUID -ne 0 ]]; then
        echo "postgres.sh: PostgreSQL is not installed; run as root or: apt-get install postgresql" >&2
        return 1
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    local log rc=0 dir=/etc/postgresql-common/createcluster.d made=""
    local drop=$dir/zz-costroute-ci.conf
    log=$(mktemp)
    # Don't let the package create (and start) its own "main" cluster: only ours runs.
    # (postgresql-common reads createcluster.d; the file is removed after the install.)
    [[ -d $dir ]] || { mkdir -p "$dir" && made=1; }
    echo "create_main_cluster = false" >"$drop"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            postgresql; } >"$log" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || cat "$log" >&2
    rm -f "$drop" "$log"
    [[ -z $made ]] || rmdir --ignore-fail-on-non-empty "$dir"
    return "$rc"
}

_pg() { # run a PostgreSQL binary as the cluster's owner
    local exe=$1
    shift
    (cd "$PG_DIR" && "${PG_AS[@]}" "$PG_BIN/$exe" "$@")
}

pg_start() {
    if [[ -n $PG_DIR ]]; then
        return 0
    fi
    _pg_find_bin || { _pg_install && _pg_find_bin; } || {
        echo "postgres.sh: no initdb/pg_ctl after installing postgresql" >&2
        return 1
    }
    local port password
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/costroute-pg.XXXXXX")
    chmod 755 "$PG_DIR"
    if [[ $EUID -eq 0 ]]; then
        id -u postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" --shell /usr/sbin/nologin postgres
        chown postgres: "$PG_DIR"
        PG_AS=(runuser -u postgres --)
    else
        PG_AS=()
    fi
    # Peer-less local socket in $PG_DIR (trust, for setup only); TCP needs the password.
    _pg initdb --pgdata="$PG_DIR/data" --username=postgres --no-locale --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log" >&2
        return 1
    }
    cat >>"$PG_DIR/data/postgresql.conf" <<EOF
# costroute CI: throwaway server
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    _pg pg_ctl --pgdata="$PG_DIR/data" --log="$PG_DIR/server.log" --wait --timeout=60 start \
        >/dev/null || {
        cat "$PG_DIR/server.log" >&2
        return 1
    }
    _pg psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --host="$PG_DIR" --port="$port" \
        --username=postgres --dbname=postgres >/dev/null <<EOF
CREATE ROLE costroute LOGIN PASSWORD '$password';
CREATE DATABASE costroute OWNER costroute;
EOF
    export COSTROUTE_PG_URL="postgresql://costroute:$password@127.0.0.1:$port/costroute"
    echo "postgres.sh: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)" >&2
}

pg_stop() {
    if [[ -z $PG_DIR ]]; then
        return 0
    fi
    if [[ -f $PG_DIR/data/postmaster.pid ]]; then
        _pg pg_ctl --pgdata="$PG_DIR/data" --mode=fast --wait --timeout=30 stop >/dev/null 2>&1 ||
            _pg pg_ctl --pgdata="$PG_DIR/data" --mode=immediate --wait stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=""
    unset COSTROUTE_PG_URL
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    if [[ $# -eq 0 ]]; then
        echo "usage: $0 COMMAND [ARG...]  (runs COMMAND with COSTROUTE_PG_URL set)" >&2
        exit 2
    fi
    trap pg_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    pg_start
    "$@"
fi
