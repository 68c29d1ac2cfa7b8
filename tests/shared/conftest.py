"""Fixtures for the shared-state tests: a real Redis, and gateway replica processes.

Redis is Debian's ``redis-server`` binary, started by pytest-redis's ``redis_proc``
factory (one throwaway server for the session, on a free loopback port); tests that
kill and restart the server get one of their own (:class:`RedisServer`, append-only
file fsynced on every write, so a SIGKILL loses nothing acknowledged). Where the
binary is not installed these tests are skipped with the reason; ``.ci/run``
installs it.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers sit beside this file (on sys.path whatever pytest's import mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared_helpers import REDIS_SERVER, GatewayProcess, RedisServer  # noqa: E402

NO_REDIS = (
    "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)"
)

try:
    from pytest_redis import factories

    redis_session = factories.redis_proc(
        executable=REDIS_SERVER or "/usr/bin/redis-server", host="127.0.0.1", port=None
    )
except ImportError:  # pragma: no cover - the test extra installs pytest-redis
    factories = None  # type: ignore[assignment]


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A ``redis://`` URL of the session's throwaway server (skips without the binary)."""
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    if factories is None:
        pytest.skip("pytest-redis is not installed (pip install -e '.[test]')")
    proc = request.getfixturevalue("redis_session")
    return f"redis://{proc.host}:{proc.port}/0"


@pytest.fixture
def namespace() -> str:
    """A key namespace of this test's own (tests share the session's server)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    """Gateway processes a test starts (``gateways.append(...)``); all stopped after."""
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for r in started:
            r.close()
