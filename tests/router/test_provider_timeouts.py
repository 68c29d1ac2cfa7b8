"""How far an attempt got decides its failure kind: first-token timeout vs timeout,
connect vs connection. Checked over real loopback sockets for every HTTP provider."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from router.outcome import ErrorKind
from router.providers import Completion, Endpoint, ProviderError, make_provider
from router.testing_http import (
    SSE,
    Hang,
    Json,
    ScriptedServer,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_error,
    openai_stream,
)

KEY_ENV = "COSTROUTE_TEST_API_KEY"
KEY = "sk-test-DISTINCTIVE-7f3a9c1e5b2d8046"
MESSAGES = [{"role": "user", "content": "Count the rows of t."}]
#: Scheduling slack allowed past a deadline on a loaded CI machine.
SLACK_S = 0.4
KINDS = ("openai", "anthropic")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def endpoint_at(kind: str, url: str, **kw: Any) -> Endpoint:
    return Endpoint(
        kind=kind,  # type: ignore[arg-type]
        base_url=url + ("/v1" if kind == "openai" else ""),
        model="m-1",
        api_key_env=KEY_ENV,
        **kw,
    )


def attempt(ep: Endpoint, timeout_s: float = 5.0) -> Completion:
    async def go() -> Completion:
        async with make_provider(ep) as provider:
            return await provider.complete(MESSAGES, timeout_s=timeout_s)

    return asyncio.run(go())


def failure(ep: Endpoint, timeout_s: float = 5.0) -> tuple[ProviderError, float]:
    """The ProviderError of one failing attempt, and how long the attempt took."""
    started = time.perf_counter()
    with pytest.raises(ProviderError) as info:
        attempt(ep, timeout_s)
    err = info.value
    assert KEY not in str(err) and KEY not in repr(err)
    return err, time.perf_counter() - started


def stream_events(kind: str) -> tuple[list[Any], bool]:
    if kind == "openai":
        return openai_stream(("SEL", "ECT", " 1")), True
    return anthropic_stream(("SEL", "ECT", " 1")), False


# -- nothing came back: first_token_timeout ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_server_that_never_sends_headers_costs_one_first_token_timeout(
    kind: str, stream: bool
) -> None:
    with ScriptedServer(Hang()) as server:
        ep = endpoint_at(kind, server.url, stream=stream, first_token_timeout_s=0.3)
        err, elapsed = failure(ep, timeout_s=5)
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT
    assert "no response headers" in err.detail and "first-token timeout (0.3 s)" in err.detail
    assert 0.3 <= elapsed < 0.3 + SLACK_S  # the first-token timeout, not the 5 s deadline
    assert len(server.requests) == 1


def test_headers_but_no_first_token_is_a_first_token_timeout(kind: str) -> None:
    events, done = stream_events(kind)
    events[1] = replace(events[1], delay_s=3.0)  # headers and a preamble, then silence
    with ScriptedServer(SSE(events, done=done)) as server:
        ep = endpoint_at(kind, server.url, stream=True, first_token_timeout_s=0.3)
        err, elapsed = failure(ep)
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "no first token" in err.detail
    assert elapsed < 0.3 + SLACK_S


def test_stall_before_the_first_token_is_a_first_token_timeout(kind: str) -> None:
    events, done = stream_events(kind)
    events[1] = replace(events[1], delay_s=3.0)
    with ScriptedServer(SSE(events, done=done)) as server:
        # No first-token timeout: the stall timeout covers the wait for the first token.
        err, _ = failure(endpoint_at(kind, server.url, stream=True, stall_timeout_s=0.3))
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "stalled" in err.detail


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_attempt_deadline_before_anything_came_back_is_a_first_token_timeout(
    kind: str, stream: bool
) -> None:
    with ScriptedServer(Hang()) as server:
        err, elapsed = failure(endpoint_at(kind, server.url, stream=stream), timeout_s=0.4)
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "attempt's 0.4 s" in err.detail
    assert elapsed < 0.4 + SLACK_S


# -- the answer started: timeout ----------------------------------------------------------------


def test_a_mid_stream_stall_is_a_timeout(kind: str) -> None:
    events, done = stream_events(kind)
    index = 2 if kind == "openai" else 4  # after the first text token
    events[index] = replace(events[index], delay_s=3.0)
    with ScriptedServer(SSE(events, done=done)) as server:
        ep = endpoint_at(
            kind, server.url, stream=True, first_token_timeout_s=1.0, stall_timeout_s=0.3
        )
        err, elapsed = failure(ep)
    assert err.kind is ErrorKind.TIMEOUT and "stalled" in err.detail
    assert "partial answer discarded" in err.detail
    assert elapsed < 0.3 + SLACK_S


def test_the_deadline_mid_stream_is_a_timeout(kind: str) -> None:
    events, done = stream_events(kind)
    index = 2 if kind == "openai" else 4
    events[index] = replace(events[index], delay_s=3.0)
    with ScriptedServer(SSE(events, done=done)) as server:
        err, elapsed = failure(endpoint_at(kind, server.url, stream=True), timeout_s=0.5)
    assert err.kind is ErrorKind.TIMEOUT and "started" in err.detail
    assert elapsed < 0.5 + SLACK_S


def test_a_slow_body_after_prompt_headers_is_a_timeout_not_a_first_token_timeout(
    kind: str,
) -> None:
    body = openai_completion() if kind == "openai" else anthropic_message()
    with ScriptedServer(Json(body, body_delay_s=3.0)) as server:
        # The headers beat the first-token timeout; the body misses the deadline.
        ep = endpoint_at(kind, server.url, first_token_timeout_s=0.2)
        err, _ = failure(ep, timeout_s=0.6)
    assert err.kind is ErrorKind.TIMEOUT


def test_a_prompt_answer_is_not_affected_by_the_first_token_timeout(kind: str) -> None:
    body = openai_completion("hi") if kind == "openai" else anthropic_message("hi")
    with ScriptedServer(Json(body, delay_s=0.1)) as server:
        done = attempt(endpoint_at(kind, server.url, first_token_timeout_s=1.0))
    assert done.text == "hi" and done.ttft_s is None


def test_ttft_is_measured_on_streams(kind: str) -> None:
    events, done_marker = stream_events(kind)
    first_text = 1 if kind == "openai" else 3
    events[first_text] = replace(events[first_text], delay_s=0.25)
    with ScriptedServer(SSE(events, done=done_marker)) as server:
        done = attempt(endpoint_at(kind, server.url, stream=True))
    assert done.text == "SELECT 1"
    assert done.ttft_s is not None and 0.25 <= done.ttft_s <= done.latency_s


# -- connections ----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_refused_connection_is_connect(kind: str, stream: bool) -> None:
    ep = endpoint_at(kind, f"http://127.0.0.1:{_closed_port()}", stream=stream)
    err, _ = failure(ep)
    assert err.kind is ErrorKind.CONNECT and "ConnectError" in err.detail


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening port whose accept queue is full: new SYNs are dropped (Linux)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs on a full queue")
def test_a_connect_timeout_is_connect(full_backlog: int) -> None:
    ep = endpoint_at("openai", f"http://127.0.0.1:{full_backlog}", connect_timeout_s=0.2)
    err, elapsed = failure(ep)
    assert err.kind is ErrorKind.CONNECT and "ConnectTimeout" in err.detail
    assert elapsed < 0.2 + SLACK_S


def test_503_carries_retry_after(kind: str) -> None:
    body = openai_error("busy") if kind == "openai" else anthropic_error("busy", type="api_error")
    with ScriptedServer(Json(body, 503, headers={"Retry-After": "4"})) as server:
        err, _ = failure(endpoint_at(kind, server.url))
    assert (err.kind, err.status, err.retry_after_s) == (ErrorKind.SERVER_ERROR, 503, 4.0)


# -- LiteLLM: classified along the exception's cause chain ---------------------------------------


def _litellm_module(raise_: Any) -> types.ModuleType:
    module = types.ModuleType("litellm")

    async def acompletion(**kwargs: Any) -> Any:
        if kwargs.get("stream"):

            async def chunks() -> Any:
                yield {"choices": [{"delta": {"content": "SEL"}, "finish_reason": None}]}
                raise_()

            return chunks()
        raise_()

    module.acompletion = acompletion  # type: ignore[attr-defined]
    return module


# Stand-ins with the class NAMES LiteLLM, the OpenAI SDK and httpx use.
InternalServerError = type("InternalServerError", (Exception,), {})
APIConnectionError = type("APIConnectionError", (Exception,), {})
APITimeoutError = type("APITimeoutError", (APIConnectionError,), {})
Timeout = type("Timeout", (APITimeoutError,), {})
ConnectError = type("ConnectError", (Exception,), {})
ReadTimeout = type("ReadTimeout", (Exception,), {})
ReadError = type("ReadError", (Exception,), {})


def _chained(top: type[Exception], *below: type[Exception]) -> Any:
    """A function raising ``top`` from a chain of ``below`` (nearest first)."""

    def raise_() -> None:
        cause: BaseException | None = None
        for cls in reversed(below):
            exc = cls("detail")
            exc.__cause__ = cause
            cause = exc
        error = top("upstream failed")
        error.status_code = 500  # type: ignore[attr-defined]  # LiteLLM's label for it
        raise error from cause

    return raise_


@pytest.mark.parametrize(
    ("stream", "raise_", "expected"),
    [
        # LiteLLM reports a refused connection as a 500 InternalServerError; the chain
        # holds the SDK's APIConnectionError and httpx's ConnectError.
        (False, _chained(InternalServerError, APIConnectionError, ConnectError), ErrorKind.CONNECT),
        (False, _chained(Timeout, APITimeoutError, ReadTimeout), ErrorKind.FIRST_TOKEN_TIMEOUT),
        (True, _chained(Timeout, APITimeoutError, ReadTimeout), ErrorKind.TIMEOUT),
        (True, _chained(InternalServerError, APIConnectionError, ReadError), ErrorKind.CONNECTION),
        (False, _chained(InternalServerError), ErrorKind.SERVER_ERROR),
    ],
    ids=["refused", "timeout-plain", "timeout-mid-stream", "cut-mid-stream", "real-500"],
)
def test_litellm_failures_are_classified_along_the_cause_chain(
    monkeypatch: pytest.MonkeyPatch, stream: bool, raise_: Any, expected: ErrorKind
) -> None:
    monkeypatch.setitem(sys.modules, "litellm", _litellm_module(raise_))
    ep = Endpoint(kind="litellm", base_url="", model="openai/m", api_key_env=KEY_ENV, stream=stream)
    err, _ = failure(ep)
    assert err.kind is expected
    assert err.status == (500 if expected is ErrorKind.SERVER_ERROR else None)


def test_litellm_first_token_timeout_bounds_a_silent_call(monkeypatch: pytest.MonkeyPatch) -> None:
    async def silent(**kwargs: Any) -> Any:
        await asyncio.sleep(10)

    module = types.ModuleType("litellm")
    module.acompletion = silent  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "litellm", module)
    for stream in (False, True):
        ep = Endpoint(
            kind="litellm",
            base_url="",
            model="openai/m",
            api_key_env=KEY_ENV,
            stream=stream,
            first_token_timeout_s=0.2,
        )
        err, elapsed = failure(ep, timeout_s=5)
        assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "first-token timeout" in err.detail
        assert elapsed < 0.2 + SLACK_S
