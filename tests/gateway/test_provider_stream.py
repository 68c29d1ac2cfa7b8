"""The providers' streaming API and the aiohttp transport, over real loopback servers.

``provider.stream`` must hand over the answer as it arrives and end with the same
Completion ``complete`` gives; fail with the same kinds; honour the whole attempt's
deadline even while its caller is busy between events. The aiohttp transport must
make the HTTP providers classify every failure exactly as over httpx's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from router.outcome import ErrorKind
from router.providers import Completion, Endpoint, ModelProvider, ProviderError, make_provider
from router.providers.aiohttp_transport import AiohttpTransport
from router.providers.base import StreamEnd, TextDelta, ToolCallDelta
from router.providers.http1 import Http1Transport
from router.testing_http import (
    SSE,
    Hang,
    Json,
    RateLimit,
    Reply,
    Reset,
    ScriptedServer,
    Truncated,
    anthropic_message,
    anthropic_stream,
    anthropic_tool_use,
    openai_completion,
    openai_stream,
    openai_tool_call,
)

MESSAGES = [{"role": "user", "content": "Count the rows of t."}]
KINDS = ("openai", "anthropic")
#: The pooled transports with a direct line: each must keep the providers' contract.
TRANSPORTS = {"aiohttp": AiohttpTransport, "http1": Http1Transport}


def ep(kind: str, server: ScriptedServer, **kw: Any) -> Endpoint:
    base = server.url + ("/v1" if kind == "openai" else "")
    return Endpoint(kind=kind, base_url=base, model="m-1", api_key_env=None, **kw)  # type: ignore[arg-type]


def stream_of(kind: str, pieces: tuple[str, ...], **kw: Any) -> SSE:
    if kind == "openai":
        return SSE(openai_stream(pieces, **kw))
    return SSE(anthropic_stream(pieces, **kw), done=False)


async def collect(
    provider: ModelProvider, timeout_s: float = 3.0, pause_s: float = 0.0, **kw: Any
) -> tuple[list[Any], BaseException | None]:
    events: list[Any] = []
    try:
        async with contextlib.aclosing(provider.stream(MESSAGES, timeout_s=timeout_s, **kw)) as it:
            async for event in it:
                events.append(event)
                await asyncio.sleep(pause_s)
    except ProviderError as exc:
        return events, exc
    return events, None


@pytest.mark.parametrize("kind", KINDS)
def test_stream_yields_deltas_then_the_same_completion_as_complete(kind: str) -> None:
    calls = (
        [openai_tool_call("c1", "run", {"cmd": "ls"})]
        if kind == "openai"
        else [anthropic_tool_use("c1", "run", {"cmd": "ls"})]
    )
    key = "tool_calls" if kind == "openai" else "tool_uses"

    async def main() -> tuple[list[Any], Completion]:
        async with ScriptedServer(
            stream_of(kind, ("SEL", "ECT 1"), **{key: calls}),
            stream_of(kind, ("SEL", "ECT 1"), **{key: calls}),
        ) as server:
            async with make_provider(ep(kind, server)) as provider:  # endpoint.stream False
                events, error = await collect(provider)
                assert error is None
                assert server.requests[0].json()["stream"] is True  # streamed all the same
            async with make_provider(ep(kind, server, stream=True)) as provider:
                whole = await provider.complete(MESSAGES, timeout_s=3)
            return events, whole

    events, whole = asyncio.run(main())
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    tools = [e for e in events if isinstance(e, ToolCallDelta)]
    end = events[-1]
    assert texts == ["SEL", "ECT 1"]
    assert isinstance(end, StreamEnd) and end.completion.text == "SELECT 1"
    assert tools[0].index == 0 and (tools[0].id, tools[0].name) == ("c1", "run")
    assert all(t.index == 0 and t.id is None for t in tools[1:])
    (call,) = end.completion.tool_calls or []
    assert (call["id"], call["function"]["name"]) == ("c1", "run")
    assert json.loads(call["function"]["arguments"]) == {"cmd": "ls"}
    assert end.completion.ttft_s is not None and end.completion.prompt_tokens == 10
    same = ("text", "prompt_tokens", "completion_tokens", "model", "raw_finish_reason")
    assert [getattr(end.completion, f) for f in same] == [getattr(whole, f) for f in same]
    assert end.completion.tool_calls == whole.tool_calls


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (RateLimit(retry_after=2), ErrorKind.RATE_LIMITED),
        (Json({"error": {"message": "down"}}, status=503), ErrorKind.SERVER_ERROR),
        (Hang(), ErrorKind.FIRST_TOKEN_TIMEOUT),
        (SSE(openai_stream(("a", "b")), cut_after=2), ErrorKind.CONNECTION),
    ],
    ids=["429", "503", "hang", "cut"],
)
def test_stream_failures_have_completes_kinds(reply: Reply, kind: ErrorKind) -> None:
    async def main() -> tuple[list[Any], BaseException | None]:
        async with ScriptedServer(reply) as server:
            async with make_provider(ep("openai", server)) as provider:
                return await collect(provider, timeout_s=0.5)

    events, error = asyncio.run(main())
    assert isinstance(error, ProviderError) and error.kind is kind
    if kind is ErrorKind.RATE_LIMITED:
        assert error.retry_after_s == 2
    if kind is ErrorKind.CONNECTION:  # content came before the cut: the caller saw it
        assert [e.text for e in events] == ["a"]
    else:
        assert events == []


def test_the_deadline_holds_while_the_caller_is_busy_between_events() -> None:
    slow = SSE([replace(c, delay_s=0.05) for c in openai_stream(tuple("abcdefghij"))])

    async def main() -> tuple[list[Any], BaseException | None, float]:
        async with ScriptedServer(slow) as server:
            async with make_provider(ep("openai", server)) as provider:
                t0 = time.monotonic()
                events, error = await collect(provider, timeout_s=0.4, pause_s=0.1)
                return events, error, time.monotonic() - t0

    events, error, took = asyncio.run(main())
    assert isinstance(error, ProviderError) and error.kind is ErrorKind.TIMEOUT
    assert 0 < len(events) < 10 and took < 0.4 + 0.1 + 0.5  # the deadline, not the stream


def test_the_default_stream_of_a_provider_that_cannot_stream_yields_the_whole_answer() -> None:
    class Whole(ModelProvider):
        endpoint = Endpoint(kind="litellm", base_url="", model="x")

        async def complete(self, messages, *, timeout_s, tools=None, tool_choice=None):  # noqa: ANN001, ANN202
            call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            return Completion("hi", 1, 2, "x", 0.0, "stop", tool_calls=[call])

        async def aclose(self) -> None:
            pass

    events, error = asyncio.run(collect(Whole()))
    assert error is None
    assert events[:2] == [TextDelta("hi"), ToolCallDelta(0, "t", "f", "{}")]
    assert isinstance(events[2], StreamEnd) and events[2].completion.text == "hi"


def test_closing_a_stream_early_releases_its_connection() -> None:
    stall = SSE([replace(c, delay_s=30.0) if i == 2 else c for i, c in enumerate(openai_stream())])

    async def main() -> float:
        async with ScriptedServer(stall) as server:
            async with make_provider(ep("openai", server)) as provider:
                it = provider.stream(MESSAGES, timeout_s=60)
                first = await anext(it)
                assert first == TextDelta("Hel")
                t0 = time.monotonic()
                await it.aclose()
                return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0  # closed at once: not after the 30 s stall


# -- the pooled transports behind the HTTP providers -----------------------------------------


@pytest.mark.parametrize("transport_name", sorted(TRANSPORTS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("reply", "expected", "options"),
    [
        ("ok", None, {}),
        (RateLimit(retry_after=1.5), ErrorKind.RATE_LIMITED, {}),
        (Hang(), ErrorKind.FIRST_TOKEN_TIMEOUT, {"first_token_timeout_s": 0.3}),
        (
            Json({"x": 1}, body_delay_s=1.0),
            ErrorKind.TIMEOUT,
            {"read_timeout_s": 0.3},
        ),
        (Reset(), ErrorKind.CONNECTION, {}),
        (Truncated(), ErrorKind.CONNECTION, {}),
        ("stream-cut", ErrorKind.CONNECTION, {"stream": True}),
        ("stream-stall", ErrorKind.TIMEOUT, {"stream": True, "stall_timeout_s": 0.3}),
    ],
    ids=["ok", "429", "hang", "slow-body", "reset", "truncated", "stream-cut", "stream-stall"],
)
def test_the_pooled_transports_keep_the_provider_contract(
    transport_name: str,
    kind: str,
    reply: object,
    expected: ErrorKind | None,
    options: dict[str, Any],
) -> None:
    pieces = ("SEL", "ECT 1")
    events = list(stream_of(kind, pieces).chunks)
    if reply == "ok":
        reply = Json(
            openai_completion("SELECT 1") if kind == "openai" else anthropic_message("SELECT 1")
        )
    elif reply == "stream-cut":
        reply = SSE(events, done=False, cut_after=3)
    elif reply == "stream-stall":  # a stall after the first text delta
        second = 2 if kind == "openai" else 4
        reply = SSE([replace(c, delay_s=2.0) if i == second else c for i, c in enumerate(events)])

    async def main() -> Completion | ProviderError:
        async with ScriptedServer(reply) as server:  # type: ignore[arg-type]
            transport = TRANSPORTS[transport_name]()
            try:
                endpoint = ep(kind, server, **options)
                async with make_provider(endpoint, transport=transport) as provider:
                    try:
                        return await provider.complete(MESSAGES, timeout_s=3)
                    except ProviderError as exc:
                        return exc
            finally:
                await transport.aclose()

    got = asyncio.run(main())
    if expected is None:
        assert isinstance(got, Completion) and got.text == "SELECT 1"
    else:
        assert isinstance(got, ProviderError) and got.kind is expected, got
        if expected is ErrorKind.RATE_LIMITED:
            assert got.retry_after_s == 1.5


def test_the_aiohttp_transport_refused_connection_is_connect_and_it_reuses_connections() -> None:
    async def refused() -> ProviderError:
        transport = AiohttpTransport()
        endpoint = Endpoint(kind="openai", base_url="http://127.0.0.1:9/v1", model="m")
        async with make_provider(endpoint, transport=transport) as provider:
            with pytest.raises(ProviderError) as info:
                await provider.complete(MESSAGES, timeout_s=3)
            return info.value

    assert asyncio.run(refused()).kind is ErrorKind.CONNECT

    async def pooled() -> int:
        transport = AiohttpTransport()
        async with ScriptedServer(default=Json(openai_completion("x"))) as server:
            async with httpx.AsyncClient(transport=transport) as client:
                for _ in range(5):
                    response = await client.post(server.url + "/v1/chat/completions", json={})
                    assert response.json()["choices"][0]["message"]["content"] == "x"
                # One server task per open connection: five requests, one connection.
                return len(server._tasks)

    assert asyncio.run(pooled()) == 1


def test_providers_over_the_aiohttp_transport_take_its_direct_line() -> None:
    endpoint = Endpoint(kind="openai", base_url="http://127.0.0.1:9/v1", model="m")
    transport = AiohttpTransport()
    assert make_provider(endpoint, transport=transport)._line is not None  # type: ignore[attr-defined]
    assert make_provider(endpoint)._line is None  # type: ignore[attr-defined]  # httpx's own
    with_client = make_provider(endpoint, client=httpx.AsyncClient(transport=transport))
    assert with_client._line is None  # type: ignore[attr-defined]  # a client given: used as is
