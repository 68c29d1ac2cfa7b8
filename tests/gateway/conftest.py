"""Shared fixtures of the gateway tests: loopback upstreams and a running gateway.

Every test talks to a real uvicorn server on 127.0.0.1 (a :class:`GatewayServer` in a
thread) with the official ``openai`` / ``anthropic`` SDKs or raw httpx, in front of
:class:`~router.testing_http.ScriptedServer` fault servers or a
:class:`~sim.twin.server.TwinServer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from router.gateway import GatewayServer, GatewaySettings
from router.testing_http import ScriptedServer, Step
from tests.gateway.helpers import PROVIDER_KEY, PROVIDER_KEY_ENV


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
    monkeypatch.delenv("COSTROUTE_GATEWAY_KEY", raising=False)
    return PROVIDER_KEY


@pytest.fixture
def servers() -> Iterator[Callable[..., ScriptedServer]]:
    """``servers(*steps, default=...)`` starts a ScriptedServer (stopped after the test)."""
    with ExitStack() as stack:

        def start(*steps: Step, default: Step | None = None) -> ScriptedServer:
            return stack.enter_context(ScriptedServer(*steps, default=default))

        yield start


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayServer]]:
    """``gateway(config, **settings)`` starts a gateway on a free loopback port."""
    with ExitStack() as stack:

        def start(config: Any, *, key: str | None = None, **settings: Any) -> GatewayServer:
            settings.setdefault("port", 0)
            settings.setdefault("watch", False)
            settings.setdefault("drain_timeout_s", 2.0)
            return stack.enter_context(GatewayServer(config, GatewaySettings(**settings), key=key))

        yield start
