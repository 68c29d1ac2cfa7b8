#!/usr/bin/env bash
# Debian's redis-server for the shared-state tests (issue 13).
#
# Sourced by .ci/run:  . .ci/redis.sh; redis_install
# Run on its own:      .ci/redis.sh
#
# The tests start their own throwaway servers from the binary (pytest-redis's
# redis_proc on a free loopback port, and tests/shared/conftest.py's RedisServer for
# the kill-and-restart test), so CI only has to make sure the binary exists: without
# it those tests are skipped with the reason. redis_install installs the package when
# no redis-server is on PATH, without letting the package start its own service.

redis_install() {
    if command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]]; then
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        echo "redis.sh: redis-server is not installed; run as root or: apt-get install redis-server" >&2
        return 1
    fi
    echo "redis.sh: installing Debian's redis-server package" >&2
    local log rc=0 policy=/usr/sbin/policy-rc.d made=""
    log=$(mktemp)
    # Don't let the package start (or enable) Debian's own server on 6379: the tests
    # start theirs. (invoke-rc.d asks policy-rc.d; exit 101 = "not now".)
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
    fi
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            redis-server; } >"$log" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || cat "$log" >&2
    rm -f "$log"
    [[ -z $made ]] || rm -f "$policy"
    if [[ $rc -eq 0 ]]; then
        echo "redis.sh: $(redis-server --version | awk '{print $1, $2, $3}')" >&2
    fi
    return "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    redis_install
fi
