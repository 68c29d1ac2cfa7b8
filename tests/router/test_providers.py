"""The provider contract, checked over a real loopback HTTP server.

Most tests run against every HTTP provider (the ``flavour`` fixture): the same
failure scripted in each provider's dialect must map to the same ErrorKind.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from router.errors import InputError
from router.outcome import ErrorKind
from router.providers import (
    AnthropicProvider,
    Completion,
    Endpoint,
    LiteLLMProvider,
    ModelProvider,
    OpenAIProvider,
    ProviderError,
    make_provider,
    scrub,
)
from router.testing_http import (
    SSE,
    Chunk,
    Echo,
    Hang,
    Json,
    RateLimit,
    Raw,
    Reply,
    Reset,
    ScriptedServer,
    Truncated,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_error,
    openai_stream,
)

KEY_ENV = "COSTROUTE_TEST_API_KEY"
KEY = "sk-test-DISTINCTIVE-7f3a9c1e5b2d8046"
MESSAGES = [
    {"role": "system", "content": "You write SQL."},
    {"role": "user", "content": "Count the rows of t."},
]
#: Scheduling slack allowed past a deadline on a loaded CI machine.
SLACK_S = 0.4


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


@dataclass(frozen=True)
class Flavour:
    """One provider dialect: how to build its bodies and streams."""

    kind: str
    ok: Callable[..., dict[str, Any]]
    error: Callable[[str], dict[str, Any]]
    context_error: dict[str, Any]
    stream: Callable[..., list[Chunk]]
    stream_done: bool  # whether the dialect's streams end with data: [DONE]
    refusal: dict[str, Any]

    def endpoint(self, server: ScriptedServer, **kw: Any) -> Endpoint:
        return Endpoint(
            kind=self.kind,  # type: ignore[arg-type]
            base_url=server.url + ("/v1" if self.kind == "openai" else ""),
            model="m-1",
            api_key_env=KEY_ENV,
            **kw,
        )

    def ok_body(self, text: str = "SELECT count(*) FROM t", pt: int = 12, ct: int = 7) -> Any:
        if self.kind == "openai":
            return self.ok(text, prompt_tokens=pt, completion_tokens=ct)
        return self.ok(text, input_tokens=pt, output_tokens=ct)

    def unterminated_stream(self) -> list[Chunk]:
        """A stream cleanly closed before any finish reason or terminator."""
        events = self.stream(("SEL", "ECT"))
        return events[:-3] if self.kind == "anthropic" else events[:-2]


OPENAI = Flavour(
    kind="openai",
    ok=openai_completion,
    error=lambda message: openai_error(message),
    context_error=openai_error(
        "This model's maximum context length is 8192 tokens.", code="context_length_exceeded"
    ),
    stream=openai_stream,
    stream_done=True,
    refusal=openai_completion("partial", finish_reason="content_filter"),
)
ANTHROPIC = Flavour(
    kind="anthropic",
    ok=anthropic_message,
    error=lambda message: anthropic_error(message),
    context_error=anthropic_error("prompt is too long: 210000 tokens > 200000 maximum"),
    stream=anthropic_stream,
    stream_done=False,
    refusal=anthropic_message("", stop_reason="refusal"),
)


@pytest.fixture(params=[OPENAI, ANTHROPIC], ids=lambda f: f.kind)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param


def call(endpoint: Endpoint, *, timeout_s: float = 3.0, **kw: Any) -> Completion:
    """One attempt on a fresh provider, from sync test code."""

    async def go() -> Completion:
        async with make_provider(endpoint, **kw) as provider:
            return await provider.complete(MESSAGES, timeout_s=timeout_s)

    return asyncio.run(go())


def fail(endpoint: Endpoint, *, timeout_s: float = 3.0, **kw: Any) -> ProviderError:
    """The ProviderError of one attempt that must fail."""
    with pytest.raises(ProviderError) as info:
        call(endpoint, timeout_s=timeout_s, **kw)
    err = info.value
    assert KEY not in str(err) and KEY not in repr(err)
    return err


def scripted(flavour: Flavour, *steps: Reply, **endpoint_kw: Any) -> ProviderError:
    with ScriptedServer(*steps) as server:
        return fail(flavour.endpoint(server, **endpoint_kw))


# -- success -------------------------------------------------------------------------------


def test_success_parses_text_usage_and_sends_credentials(flavour: Flavour) -> None:
    with ScriptedServer(Json(flavour.ok_body())) as server:
        done = call(flavour.endpoint(server, max_tokens=64, temperature=0.0))
    assert done.text == "SELECT count(*) FROM t"
    assert (done.prompt_tokens, done.completion_tokens) == (12, 7)
    assert done.raw_finish_reason in ("stop", "end_turn")
    assert 0 < done.latency_s < 3
    assert done.cost_usd(1.0, 2.0) == pytest.approx((12 * 1.0 + 7 * 2.0) / 1e6)
    (request,) = server.requests
    sent = request.json()
    assert request.method == "POST"
    assert sent["model"] == "m-1" and sent["max_tokens"] == 64 and sent["temperature"] == 0.0
    if flavour.kind == "openai":
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert sent["messages"] == MESSAGES
    else:
        assert request.path == "/v1/messages"
        assert request.headers["x-api-key"] == KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert sent["system"] == "You write SQL."
        assert sent["messages"] == [MESSAGES[1]]


# -- HTTP status mapping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (502, "error", ErrorKind.SERVER_ERROR),
        (503, "error", ErrorKind.SERVER_ERROR),
        (529, "error", ErrorKind.SERVER_ERROR),  # Anthropic's "overloaded"
        (500, "<html>Internal error</html>", ErrorKind.SERVER_ERROR),
        (400, "error", ErrorKind.BAD_REQUEST),
        (404, "error", ErrorKind.BAD_REQUEST),
        (400, "context", ErrorKind.CONTEXT_LENGTH),
        (413, "error", ErrorKind.CONTEXT_LENGTH),
        (401, "error", ErrorKind.AUTH),
        (403, "error", ErrorKind.AUTH),
    ],
)
def test_status_maps_to_kind(flavour: Flavour, status: int, body: str, kind: ErrorKind) -> None:
    if body == "error":
        reply: Reply = Json(flavour.error("nope"), status)
    elif body == "context":
        reply = Json(flavour.context_error, status)
    else:
        reply = Raw(body, status, "text/html")
    err = scripted(flavour, reply)
    assert err.kind is kind
    assert err.status == status
    assert str(err).startswith(f"{kind.value}: HTTP {status}")


def test_openai_400_content_policy_is_content_filter() -> None:
    body = openai_error("Your request was rejected", code="content_policy_violation")
    assert scripted(OPENAI, Json(body, 400)).kind is ErrorKind.CONTENT_FILTER


def test_refusal_is_content_filter(flavour: Flavour) -> None:
    err = scripted(flavour, Json(flavour.refusal))
    assert err.kind is ErrorKind.CONTENT_FILTER


def test_429_retry_after_seconds(flavour: Flavour) -> None:
    err = scripted(flavour, RateLimit(retry_after=7))
    assert (err.kind, err.status, err.retry_after_s) == (ErrorKind.RATE_LIMITED, 429, 7.0)


def test_429_retry_after_http_date(flavour: Flavour) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    err = scripted(flavour, RateLimit(retry_after=format_datetime(when, usegmt=True)))
    assert err.kind is ErrorKind.RATE_LIMITED
    assert err.retry_after_s is not None and 27 <= err.retry_after_s <= 31


def test_429_retry_after_ms_wins_and_bad_values_are_ignored() -> None:
    assert scripted(OPENAI, RateLimit(retry_after=9, retry_after_ms=1500)).retry_after_s == 1.5
    err = scripted(OPENAI, RateLimit(retry_after="soon"))
    assert err.kind is ErrorKind.RATE_LIMITED and err.retry_after_s is None


# -- transport failures -----------------------------------------------------------------


def test_hang_is_a_first_token_timeout_at_the_attempt_deadline(flavour: Flavour) -> None:
    with ScriptedServer(Hang()) as server:
        started = time.perf_counter()
        err = fail(flavour.endpoint(server), timeout_s=0.5)
        elapsed = time.perf_counter() - started
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "response headers" in err.detail
    assert 0.45 <= elapsed < 0.5 + SLACK_S


def test_read_timeout_before_headers_is_first_token_timeout() -> None:
    with ScriptedServer(Json(openai_completion(), delay_s=2.0)) as server:
        started = time.perf_counter()
        err = fail(OPENAI.endpoint(server, read_timeout_s=0.2), timeout_s=5)
        assert time.perf_counter() - started < 0.2 + SLACK_S
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "ReadTimeout" in err.detail


def test_read_timeout_after_headers_is_timeout(flavour: Flavour) -> None:
    with ScriptedServer(Json(flavour.ok_body(), body_delay_s=2.0)) as server:
        started = time.perf_counter()
        err = fail(flavour.endpoint(server, read_timeout_s=0.2), timeout_s=5)
        assert time.perf_counter() - started < 0.2 + SLACK_S
    assert err.kind is ErrorKind.TIMEOUT and "ReadTimeout" in err.detail


def test_deadline_after_headers_is_timeout(flavour: Flavour) -> None:
    with ScriptedServer(Json(flavour.ok_body(), body_delay_s=2.0)) as server:
        err = fail(flavour.endpoint(server, first_token_timeout_s=0.2), timeout_s=0.5)
    assert err.kind is ErrorKind.TIMEOUT and "started" in err.detail


def test_connection_refused_is_connect() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=KEY_ENV)
    err = fail(endpoint)
    assert err.kind is ErrorKind.CONNECT and "ConnectError" in err.detail


def test_reset_mid_body_is_connection(flavour: Flavour) -> None:
    assert scripted(flavour, Reset()).kind is ErrorKind.CONNECTION


def test_truncated_body_is_connection(flavour: Flavour) -> None:
    assert scripted(flavour, Truncated()).kind is ErrorKind.CONNECTION


def test_non_json_is_malformed(flavour: Flavour) -> None:
    err = scripted(flavour, Raw("<html>gateway says hi</html>", 200, "text/html"))
    assert err.kind is ErrorKind.MALFORMED and "not JSON" in err.detail


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"choices": []},
        {"choices": [{"index": 0}]},
        {"choices": [{"message": {"role": "assistant", "content": None}}]},
        {"choices": [{"message": {"role": "assistant", "content": 42}}]},
        {"choices": [{"message": {"content": "x"}, "finish_reason": 3}]},
        {**openai_completion(), "usage": {"prompt_tokens": "ten", "completion_tokens": 1}},
    ],
)
def test_openai_wrong_shape_is_malformed(body: Any) -> None:
    assert scripted(OPENAI, Json(body)).kind is ErrorKind.MALFORMED


@pytest.mark.parametrize(
    "body",
    [
        {"type": "message"},
        {"content": "text, not blocks"},
        {"content": [{"type": "text", "text": None}]},
        {"content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}]},
        {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": "not an object"}]},
        {"content": [{"type": "tool_use", "name": "f", "input": {}}]},
    ],
)
def test_anthropic_wrong_shape_is_malformed(body: Any) -> None:
    assert scripted(ANTHROPIC, Json(body)).kind is ErrorKind.MALFORMED


def test_error_body_with_status_200_is_classified() -> None:
    body = anthropic_error("Overloaded", type="overloaded_error")
    assert scripted(ANTHROPIC, Json(body)).kind is ErrorKind.SERVER_ERROR


# -- streaming ---------------------------------------------------------------------------


def test_stream_success(flavour: Flavour) -> None:
    events = flavour.stream(("SELECT ", "1"), **_usage_kw(flavour, 11, 3))
    with ScriptedServer(SSE(events, done=flavour.stream_done)) as server:
        done = call(flavour.endpoint(server, stream=True, stall_timeout_s=1))
    assert done.text == "SELECT 1"
    assert (done.prompt_tokens, done.completion_tokens) == (11, 3)
    assert server.requests[0].json()["stream"] is True


def test_stream_request_answered_with_plain_json_is_accepted(flavour: Flavour) -> None:
    with ScriptedServer(Json(flavour.ok_body("plain"))) as server:
        assert call(flavour.endpoint(server, stream=True)).text == "plain"
    assert server.requests[0].headers["accept"] == "text/event-stream"


def test_stream_without_usage_reports_zero() -> None:
    with ScriptedServer(SSE(openai_stream(("a",), usage=None))) as server:
        done = call(OPENAI.endpoint(server, stream=True))
    assert (done.text, done.prompt_tokens, done.completion_tokens) == ("a", 0, 0)


def test_stream_cut_is_connection(flavour: Flavour) -> None:
    err = scripted(
        flavour, SSE(flavour.stream(), done=flavour.stream_done, cut_after=3), stream=True
    )
    assert err.kind is ErrorKind.CONNECTION and "partial answer discarded" in err.detail


def test_stream_without_terminator_is_connection(flavour: Flavour) -> None:
    err = scripted(flavour, SSE(flavour.unterminated_stream(), done=False), stream=True)
    assert err.kind is ErrorKind.CONNECTION and "terminator" in err.detail


def test_openai_stream_with_finish_reason_but_no_done_is_complete() -> None:
    with ScriptedServer(SSE(openai_stream(("ok",)), done=False)) as server:
        assert call(OPENAI.endpoint(server, stream=True)).text == "ok"


def test_stream_stall_is_timeout(flavour: Flavour) -> None:
    events = flavour.stream(("SEL", "ECT", " 1"))
    events[4] = replace(events[4], delay_s=2.0)  # after the first tokens, the stream stalls
    with ScriptedServer(SSE(events, done=flavour.stream_done)) as server:
        started = time.perf_counter()
        err = fail(flavour.endpoint(server, stream=True, stall_timeout_s=0.3), timeout_s=5)
        elapsed = time.perf_counter() - started
    assert err.kind is ErrorKind.TIMEOUT and "stalled" in err.detail
    assert elapsed < 0.3 + SLACK_S


def test_stream_late_first_token_is_first_token_timeout(flavour: Flavour) -> None:
    events = flavour.stream(("SELECT 1",))
    # The role/message_start event arrives at once; the first token never in time.
    events[1] = replace(events[1], delay_s=2.0)
    with ScriptedServer(SSE(events, done=flavour.stream_done)) as server:
        started = time.perf_counter()
        endpoint = flavour.endpoint(
            server, stream=True, first_token_timeout_s=0.3, stall_timeout_s=5
        )
        err = fail(endpoint, timeout_s=5)
        elapsed = time.perf_counter() - started
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "first token" in err.detail
    assert elapsed < 0.3 + SLACK_S


def test_stream_headers_later_than_first_token_timeout_is_first_token_timeout() -> None:
    with ScriptedServer(SSE(openai_stream(), delay_s=2.0)) as server:
        err = fail(OPENAI.endpoint(server, stream=True, first_token_timeout_s=0.3), timeout_s=5)
    assert err.kind is ErrorKind.FIRST_TOKEN_TIMEOUT and "first-token" in err.detail


def test_slow_drip_stream_obeys_the_whole_attempt_deadline(flavour: Flavour) -> None:
    events = [replace(c, delay_s=0.1) for c in flavour.stream(("x",) * 30)]
    with ScriptedServer(SSE(events, done=flavour.stream_done)) as server:
        started = time.perf_counter()
        err = fail(flavour.endpoint(server, stream=True, stall_timeout_s=1), timeout_s=0.6)
        elapsed = time.perf_counter() - started
    assert err.kind is ErrorKind.TIMEOUT
    assert elapsed < 0.6 + SLACK_S


def test_stream_http_error_status_is_classified(flavour: Flavour) -> None:
    assert scripted(flavour, RateLimit(retry_after=3), stream=True).retry_after_s == 3.0


def test_stream_refusal_is_content_filter() -> None:
    openai_events = openai_stream(("par",), finish_reason="content_filter")
    assert scripted(OPENAI, SSE(openai_events), stream=True).kind is ErrorKind.CONTENT_FILTER
    claude_events = anthropic_stream(("I",), stop_reason="refusal")
    err = scripted(ANTHROPIC, SSE(claude_events, done=False), stream=True)
    assert err.kind is ErrorKind.CONTENT_FILTER


def test_stream_bad_chunk_is_malformed() -> None:
    events = [openai_stream()[0], Chunk("{not json")]
    assert scripted(OPENAI, SSE(events), stream=True).kind is ErrorKind.MALFORMED


def test_anthropic_stream_error_event_is_classified() -> None:
    events = anthropic_stream(("par",))[:4]
    events.append(
        Chunk(anthropic_error("Overloaded", type="overloaded_error"), event="error"),
    )
    err = scripted(ANTHROPIC, SSE(events, done=False), stream=True)
    assert err.kind is ErrorKind.SERVER_ERROR and "Overloaded" in err.detail


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 400, 500])
def test_key_never_leaks_even_when_the_server_echoes_headers(flavour: Flavour, status: int) -> None:
    with ScriptedServer(Echo(status)) as server:
        err = fail(flavour.endpoint(server))
    assert server.requests[0].headers.get(
        "authorization", server.requests[0].headers.get("x-api-key")
    )
    assert "[REDACTED]" in err.detail
    for text in (str(err), repr(err), err.detail, str(err.args)):
        assert KEY not in text
        assert KEY[8:] not in text  # not even the key without its prefix


def test_key_never_leaks_from_a_stream_error_event() -> None:
    events = [Chunk({"error": {"message": f"bad key {KEY}", "type": "server_error"}})]
    err = scripted(OPENAI, SSE(events, done=False), stream=True)
    assert err.kind is ErrorKind.SERVER_ERROR and KEY not in err.detail


def test_scrub_redacts_credentials() -> None:
    text = f'{{"authorization": "Bearer abc.def", "x-api-key": "k1"}} token {KEY}'
    clean = scrub(text, [KEY])
    assert "abc.def" not in clean and "k1" not in clean and KEY not in clean


def test_missing_key_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    endpoint = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_ENV)
    with pytest.raises(InputError, match=KEY_ENV):
        OpenAIProvider(endpoint)


def test_endpoint_rejects_a_pasted_key_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY)
    assert KEY not in str(info.value)


# -- construction, testing aids, other implementations ---------------------------------


def test_make_provider_dispatches_on_kind() -> None:
    def endpoint(kind: str) -> Endpoint:
        return Endpoint.model_validate(
            {"kind": kind, "base_url": "http://127.0.0.1:9", "model": "m", "api_key_env": KEY_ENV}
        )

    async def build(kind: str) -> ModelProvider:
        async with make_provider(endpoint(kind)) as provider:
            return provider

    assert isinstance(asyncio.run(build("openai")), OpenAIProvider)
    assert isinstance(asyncio.run(build("anthropic")), AnthropicProvider)
    with pytest.raises(InputError):
        OpenAIProvider(endpoint("anthropic"))


def test_bad_arguments_are_input_errors() -> None:
    endpoint = Endpoint(base_url="http://127.0.0.1:9/v1", model="m")
    provider = OpenAIProvider(endpoint)
    with pytest.raises(InputError):
        asyncio.run(provider.complete([{"role": "user"}], timeout_s=1))  # type: ignore[list-item]
    with pytest.raises(InputError):
        asyncio.run(provider.complete(MESSAGES, timeout_s=0))
    asyncio.run(provider.aclose())


def test_openai_over_mock_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(200, json=openai_completion("ok", prompt_tokens=3))
        return httpx.Response(429, headers={"Retry-After": "2"}, json=openai_error("slow"))

    endpoint = Endpoint(base_url="https://api.example.test/v1", model="m", api_key_env=KEY_ENV)

    async def go() -> tuple[Completion, ProviderError]:
        async with OpenAIProvider(endpoint, transport=httpx.MockTransport(handler)) as p:
            done = await p.complete(MESSAGES, timeout_s=1)
            with pytest.raises(ProviderError) as info:
                await p.complete(MESSAGES, timeout_s=1)
            return done, info.value

    done, err = asyncio.run(go())
    assert done.text == "ok" and done.prompt_tokens == 3
    assert (err.kind, err.retry_after_s) == (ErrorKind.RATE_LIMITED, 2.0)
    assert str(seen[0].url) == "https://api.example.test/v1/chat/completions"
    assert json.loads(seen[0].content)["messages"] == MESSAGES


def test_shared_client_is_not_closed_by_the_provider() -> None:
    async def go() -> bool:
        with ScriptedServer(Json(openai_completion())) as server:
            async with httpx.AsyncClient() as client:
                async with OpenAIProvider(OPENAI.endpoint(server), client=client) as provider:
                    await provider.complete(MESSAGES, timeout_s=2)
                return client.is_closed

    assert asyncio.run(go()) is False


def test_scripted_server_in_async_mode_and_callable_steps() -> None:
    async def go() -> list[str]:
        def by_model(request: Any) -> Reply:
            return Json(openai_completion(request.json()["model"]))

        async with ScriptedServer(by_model, Hang()) as server:
            async with OpenAIProvider(OPENAI.endpoint(server)) as provider:
                first = await provider.complete(MESSAGES, timeout_s=2)
                with pytest.raises(ProviderError):
                    await provider.complete(MESSAGES, timeout_s=0.2)
                with pytest.raises(ProviderError) as info:  # script exhausted: default 500
                    await provider.complete(MESSAGES, timeout_s=2)
            return [first.text, info.value.kind.value]

    assert asyncio.run(go()) == ["m-1", "server_error"]


# -- LiteLLM -----------------------------------------------------------------------------


class _FakeLiteLLMError(Exception):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def _fake_litellm(behaviour: Callable[[dict[str, Any]], Any]) -> types.ModuleType:
    """A stand-in module with LiteLLM's exception NAMES and ``acompletion``."""
    module = types.ModuleType("litellm")
    names = ["APIConnectionError", "RateLimitError", "ServiceUnavailableError"]
    names += ["AuthenticationError", "InternalServerError"]
    for name in names:
        setattr(module, name, type(name, (_FakeLiteLLMError,), {}))
    bad_request = type("BadRequestError", (_FakeLiteLLMError,), {})
    module.BadRequestError = bad_request  # type: ignore[attr-defined]
    for name in ("ContextWindowExceededError", "ContentPolicyViolationError"):
        setattr(module, name, type(name, (bad_request,), {}))
    module.Timeout = type("Timeout", (module.APIConnectionError,), {})  # type: ignore[attr-defined]

    async def acompletion(**kwargs: Any) -> Any:
        return await behaviour(kwargs)

    module.acompletion = acompletion  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("RateLimitError", ErrorKind.RATE_LIMITED),
        ("Timeout", ErrorKind.FIRST_TOKEN_TIMEOUT),  # non-streamed: nothing came back
        ("APIConnectionError", ErrorKind.CONNECTION),
        ("BadRequestError", ErrorKind.BAD_REQUEST),
        ("ContextWindowExceededError", ErrorKind.CONTEXT_LENGTH),
        ("ContentPolicyViolationError", ErrorKind.CONTENT_FILTER),
        ("AuthenticationError", ErrorKind.AUTH),
        ("ServiceUnavailableError", ErrorKind.SERVER_ERROR),
        ("InternalServerError", ErrorKind.SERVER_ERROR),
    ],
)
def test_litellm_exceptions_map_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, kind: ErrorKind
) -> None:
    holder: dict[str, types.ModuleType] = {}

    async def behaviour(kwargs: dict[str, Any]) -> Any:
        raise getattr(holder["m"], name)(f"upstream said no (key {KEY})", 400)

    holder["m"] = _fake_litellm(behaviour)
    monkeypatch.setitem(sys.modules, "litellm", holder["m"])
    endpoint = Endpoint(kind="litellm", base_url="", model="openai/m", api_key_env=KEY_ENV)
    err = fail(endpoint)
    assert err.kind is kind and KEY not in err.detail


def test_litellm_success_and_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    async def behaviour(kwargs: dict[str, Any]) -> Any:
        if kwargs["messages"][-1]["content"] == "hang":
            await asyncio.sleep(10)
        assert kwargs["num_retries"] == 0 and kwargs["api_key"] == KEY
        return {
            "model": "openai/m",
            "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        }

    monkeypatch.setitem(sys.modules, "litellm", _fake_litellm(behaviour))
    endpoint = Endpoint(kind="litellm", base_url="", model="openai/m", api_key_env=KEY_ENV)
    done = call(endpoint)
    assert (done.text, done.prompt_tokens, done.completion_tokens) == ("ok", 4, 2)

    async def hang() -> None:
        await LiteLLMProvider(endpoint).complete(
            [{"role": "user", "content": "hang"}], timeout_s=0.2
        )

    with pytest.raises(ProviderError) as info:
        asyncio.run(hang())
    assert info.value.kind is ErrorKind.FIRST_TOKEN_TIMEOUT


def test_litellm_missing_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litellm", None)  # makes `import litellm` fail
    endpoint = Endpoint(kind="litellm", base_url="", model="openai/m")
    with pytest.raises(InputError, match=r"pip install"):
        LiteLLMProvider(endpoint)


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
def test_real_litellm_over_the_loopback_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read when litellm is first imported: its bundled cost map, no fetch from the network.
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "true")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with ScriptedServer(Json(openai_completion("hi")), Json(openai_error("x"), 503)) as server:
        endpoint = Endpoint(
            kind="litellm", base_url=server.url + "/v1", model="openai/m-1", api_key_env=KEY_ENV
        )
        assert call(endpoint).text == "hi"
        assert fail(endpoint).kind is ErrorKind.SERVER_ERROR


def _usage_kw(flavour: Flavour, prompt: int, completion: int) -> dict[str, Any]:
    if flavour.kind == "openai":
        return {"usage": (prompt, completion)}
    return {"input_tokens": prompt, "output_tokens": completion}
