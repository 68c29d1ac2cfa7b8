"""Faults through the gateway, seen by real SDK clients: fallback before the first
token, a stream cut after it, 429 storms, every candidate open, client disconnects,
the gateway's own back-pressure, and 200 concurrent streams against a budget cap."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import anthropic
import httpx
import openai
import pytest

from router.gateway import GatewayServer
from router.testing_http import (
    SSE,
    Hang,
    Json,
    RateLimit,
    RecordedRequest,
    Reply,
    openai_completion,
    openai_error,
    openai_stream,
)
from tests.gateway.helpers import (
    OK,
    endpoint,
    ledger_state,
    make_config,
    metric,
    scrape,
    wait_for,
)

PROMPT = [{"role": "user", "content": "Return a JSON object."}]


def oa(gw: GatewayServer, **kw: object) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", **kw)


def an(gw: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)


def metrics_text(gw: GatewayServer) -> str:
    return httpx.get(gw.url + "/metrics").text


def streamed_text(chunks: list) -> str:  # noqa: ANN001 - openai chunk objects
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- fallback before the first token, a cut after it ------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        # headers and a role chunk, then the connection closes: no content yet
        SSE(openai_stream(("never",))[:1], done=False, cut_after=1),
        # accepted, then silence past the endpoint's first-token timeout
        Hang(),
        # a 503 before anything
        Json(openai_error("overloaded", type="server_error"), status=503),
    ],
    ids=["cut-before-content", "silent", "503"],
)
def test_a_stream_falls_back_freely_before_the_first_content_byte(
    servers, gateway, failure
) -> None:
    bad = servers(failure)
    good = servers(SSE(openai_stream(("Hel", "lo"))), SSE(openai_stream(("Hel", "lo"))))
    config = make_config(
        {"a": endpoint(bad.url, first_token_timeout_s=0.3), "b": endpoint(good.url)}
    )
    gw = gateway(config)
    with oa(gw).chat.completions.with_streaming_response.create(
        model="auto", messages=PROMPT, stream=True
    ) as response:
        assert response.headers["x-costroute-model"] == "b"
        chunks = list(response.parse())
    assert streamed_text(chunks) == "Hello"
    assert chunks[0].model == "b"
    assert len(bad.requests) == 1 and len(good.requests) == 1
    text = scrape(gw, "costroute_requests_total", 1, route="default", model="b", outcome="ok")
    assert metric(text, "costroute_attempts_total", model="a", kind="ok") == 0
    assert (
        sum(
            metric(text, "costroute_attempts_total", model="a", kind=k)
            for k in ("connection", "first_token_timeout", "server_error")
        )
        == 1
    )
    # The Anthropic dialect falls back the same way.
    bad.push(failure)
    with an(gw).messages.stream(model="auto", max_tokens=64, messages=PROMPT) as stream:
        assert "".join(stream.text_stream) == "Hello"
    assert len(bad.requests) == 2 and len(good.requests) == 2


def test_a_stream_cut_after_content_ends_with_an_error_event_and_is_recorded(
    servers, gateway, tmp_path
) -> None:
    cut = SSE(openai_stream(("Hel", "lo", " world")), cut_after=3)  # role, Hel, lo, then FIN
    bad = servers(cut, cut)
    good = servers(default=SSE(openai_stream(("never used",))))
    record = tmp_path / "gw.ndjson"
    attempts = tmp_path / "gw-attempts.ndjson"
    gw = gateway(
        make_config(
            {"a": endpoint(bad.url), "b": endpoint(good.url)}, route={"attempts_per_model": 2}
        ),
        record=record,
        record_attempts=attempts,
    )
    stream = oa(gw).chat.completions.create(model="auto", messages=PROMPT, stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert streamed_text(received) == "Hello"  # what was sent stays sent
    assert "cut" in info.value.message and "connection" in info.value.message
    assert info.value.body["code"] == "upstream_error"
    assert good.requests == []  # no fallback after content reached the client
    assert len(bad.requests) == 1  # and no retry either

    # Anthropic: the same cut is a well-formed `error` event the SDK raises for.
    with pytest.raises(anthropic.APIStatusError) as ainfo:
        with an(gw).messages.stream(model="auto", max_tokens=64, messages=PROMPT) as astream:
            pieces = []
            for piece in astream.text_stream:
                pieces.append(piece)
    assert "".join(pieces) == "Hello"
    assert ainfo.value.body["error"]["type"] == "api_error"
    assert good.requests == []

    assert ledger_state(gw) == (0.0, {})
    breaker = gw.gateway.router.policy.breakers[0]
    assert gw.call(lambda: breaker.consecutive) == 2  # both cuts counted against "a"
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["success"], r["model"], r["error_kind"]) for r in rows] == [
        (False, "a", "connection"),
        (False, "a", "connection"),
    ]
    tries = [json.loads(line) for line in attempts.read_text().splitlines()]
    assert [(t["model"], t["attempt"], t["outcome"]) for t in tries] == [
        ("a", 1, "connection"),
        ("a", 1, "connection"),
    ]
    scrape(gw, "costroute_requests_total", 2, route="default", model="a", outcome="stream_cut")


def test_a_buffered_route_validates_before_sending_and_falls_back_on_a_wrong_answer(
    servers, gateway
) -> None:
    wrong = servers(SSE(openai_stream(("Sure! Here", " is some prose."))))
    right = servers(Json(openai_completion('{"a": 1}')))
    config = make_config(
        {"a": endpoint(wrong.url, stream=True), "b": endpoint(right.url)},
        {"json_parse": ["a", "b"]},
        route={"buffer": True},
    )
    gw = gateway(config)
    chunks = list(oa(gw).chat.completions.create(model="json", messages=PROMPT, stream=True))
    assert streamed_text(chunks) == '{"a": 1}'  # nothing of the wrong answer reached us
    assert {c.model for c in chunks} == {"b"}
    text = metrics_text(gw)
    assert metric(text, "costroute_attempts_total", model="a", kind="validation") == 1


# -- rate limits -------------------------------------------------------------------------


class Timed(Reply):
    """Plays ``reply`` and notes when the request arrived."""

    def __init__(self, reply: Reply, log: list[float]) -> None:
        self.reply = reply
        self.log = log

    async def play(self, conn, request: RecordedRequest) -> bool:  # noqa: ANN001
        self.log.append(time.monotonic())
        return await self.reply.play(conn, request)


def test_the_router_waits_out_a_providers_retry_after_before_retrying(servers, gateway) -> None:
    arrivals: list[float] = []
    limited = RateLimit(retry_after_ms=300)
    up = servers(Timed(limited, arrivals), Timed(limited, arrivals), Timed(OK, arrivals))
    config = make_config(
        {"a": endpoint(up.url)},
        route={"attempts_per_model": 3, "backoff": {"base_s": 0.01, "jitter": "none"}},
    )
    gw = gateway(config)
    answer = oa(gw).chat.completions.create(model="auto", messages=PROMPT)
    assert answer.choices[0].message.content == '{"ok": true}'
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 2 and all(gap >= 0.3 for gap in gaps), gaps


def test_a_429_storm_is_passed_on_with_retry_after_and_the_sdks_honour_it(servers, gateway) -> None:
    clients = 20
    lock = threading.Lock()
    served = {"429": 0}
    seen: set[tuple[str, str]] = set()

    def storm(provider: str) -> Callable[[RecordedRequest], Reply]:
        # Each provider rate-limits each client's first request, then serves it. Keyed
        # on the client (its prompt), not on arrival order: under load a fast client's
        # retry can reach a provider before a slow client's first try does.
        def reply(request: RecordedRequest) -> Reply:
            key = (provider, request.json()["messages"][-1]["content"])
            with lock:
                if key not in seen:
                    seen.add(key)
                    served["429"] += 1
                    return RateLimit(retry_after_ms=400)
            return OK

        return reply

    a = servers(default=storm("a"))
    b = servers(default=storm("b"))
    gw = gateway(make_config({"a": endpoint(a.url), "b": endpoint(b.url)}))

    # Without retries the client sees the gateway's 429 and its Retry-After.
    with pytest.raises(openai.RateLimitError) as info:
        oa(gw).chat.completions.create(model="auto", messages=PROMPT)
    headers = info.value.response.headers
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "400"
    assert info.value.body["code"] == "rate_limited"
    with lock:
        served["429"] = 0

    async def one(client: openai.AsyncOpenAI, i: int) -> float:
        t0 = time.monotonic()
        prompt = [{"role": "user", "content": f"Return a JSON object for client {i}."}]
        answer = await client.chat.completions.create(model="auto", messages=prompt)
        assert answer.choices[0].message.content == '{"ok": true}'
        return time.monotonic() - t0

    async def storm_of_clients() -> list[float]:
        async with openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="unused", max_retries=2
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(clients)))

    t0 = time.monotonic()
    took = asyncio.run(storm_of_clients())
    assert served["429"] == 2 * clients  # each client's first try met the storm at a and b
    # a: the lone request, each client's first try and its retry (served); b: the lone
    # request and each client's first try.
    assert (len(a.requests), len(b.requests)) == (1 + 2 * clients, 1 + clients)
    # Every client waited out the Retry-After it was given, no longer than it needed.
    assert min(took) >= 0.4 and time.monotonic() - t0 < 5.0


# -- every candidate open ------------------------------------------------------------------


def test_every_candidate_open_is_a_503_with_retry_after_until_the_soonest_readmission(
    servers, gateway
) -> None:
    down = Json(openai_error("internal error", type="server_error"), status=500)
    a, b = servers(default=down), servers(default=down)
    config = make_config(
        {"a": endpoint(a.url), "b": endpoint(b.url)},
        breaker={"consecutive_failures": 1, "open_base_s": 30, "reprobe_s": 5, "jitter": 0},
    )
    gw = gateway(config)
    with pytest.raises(openai.APIStatusError) as first:
        oa(gw).chat.completions.create(model="auto", messages=PROMPT)
    assert first.value.status_code == 502  # both failed (and both breakers opened)
    t_open = time.monotonic()

    with pytest.raises(openai.InternalServerError) as info:
        oa(gw).chat.completions.create(model="auto", messages=PROMPT)
    response = info.value.response
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    waited = time.monotonic() - t_open
    assert 30_000 - 1000 * waited - 1000 <= int(response.headers["retry-after-ms"]) <= 30_000
    assert info.value.body["code"] == "no_candidate"
    assert "breaker_open" in info.value.message
    with pytest.raises(anthropic.InternalServerError) as ainfo:
        an(gw).messages.create(model="auto", max_tokens=10, messages=PROMPT)
    assert ainfo.value.status_code == 503
    assert ainfo.value.body["error"]["type"] == "overloaded_error"
    assert ainfo.value.response.headers["retry-after"] == "30"
    assert len(a.requests) == len(b.requests) == 1  # skipped: never called again
    text = metrics_text(gw)
    assert metric(text, "costroute_breaker_state", model="a") == 2
    assert 28 < metric(text, "costroute_breaker_open_seconds", model="b") <= 30


# -- the client goes away ---------------------------------------------------------------------


def test_a_client_that_disconnects_cancels_the_upstream_call_and_its_reservation(
    servers, gateway
) -> None:
    stall = SSE(
        [
            replace(c, delay_s=30.0) if i == 2 else c
            for i, c in enumerate(openai_stream(("Hel", "lo")))
        ]
    )
    up = servers(Hang(), stall, Hang())
    gw = gateway(make_config({"a": endpoint(up.url)}))
    assert ledger_state(gw) == (0.0, {})

    # 1. A streamed request waiting for its first token.
    client = oa(gw, timeout=httpx.Timeout(5.0, read=0.5))
    done = threading.Event()

    def waiting() -> None:
        with pytest.raises(openai.APITimeoutError):
            list(client.chat.completions.create(model="auto", messages=PROMPT, stream=True))
        done.set()

    worker = threading.Thread(target=waiting)
    worker.start()
    wait_for(lambda: len(up.requests) == 1, what="the upstream call")
    reserved, holds = ledger_state(gw)
    assert reserved == pytest.approx(0.01) and len(holds) == 1  # held while in flight
    worker.join(5)
    assert done.is_set()
    wait_for(lambda: ledger_state(gw) == (0.0, {}), what="the reservation to be released")

    # 2. A stream that has started, then the client closes it.
    stream = oa(gw).chat.completions.create(model="auto", messages=PROMPT, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "Hel"
    assert len(ledger_state(gw)[1]) == 1
    stream.close()
    wait_for(lambda: ledger_state(gw) == (0.0, {}), what="the reservation to be released")

    # 3. A plain request.
    with pytest.raises(openai.APITimeoutError):
        oa(gw, timeout=0.5).chat.completions.create(model="auto", messages=PROMPT)
    wait_for(lambda: ledger_state(gw) == (0.0, {}), what="the reservation to be released")
    policy = gw.gateway.router.policy
    assert gw.call(lambda: (policy.ledger.spent_total, policy.breakers[0].consecutive)) == (0.0, 0)
    text = scrape(
        gw, "costroute_requests_total", 3, route="default", model="-", outcome="cancelled"
    )
    assert metric(text, "costroute_requests_in_flight") == 0


# -- back-pressure and budgets -------------------------------------------------------------------


def test_the_gateways_own_concurrency_limit_answers_429_with_retry_after(servers, gateway) -> None:
    slow = Json(OK.body, delay_s=0.6)
    up = servers(default=slow)
    gw = gateway(
        make_config({"a": endpoint(up.url)}), max_concurrency=2, overload_retry_after_s=0.3
    )

    async def burst(retries: int) -> list[object]:
        async with openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="unused", max_retries=retries
        ) as client:
            calls = [
                client.chat.completions.create(model="auto", messages=PROMPT) for _ in range(4)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(burst(0))
    limited = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(limited) == 2 and len(outcomes) - len(limited) == 2
    assert limited[0].response.headers["retry-after-ms"] == "300"
    assert limited[0].body["code"] == "gateway_overloaded"
    assert len(up.requests) == 2  # the refused ones never reached a provider
    assert all(not isinstance(o, Exception) for o in asyncio.run(burst(5)))


def test_200_concurrent_streams_never_overspend_a_budget_cap(servers, gateway) -> None:
    events = openai_stream(("{", "}"))
    events[1] = replace(events[1], delay_s=0.6)  # every stream is still open when the last starts
    up = servers(default=SSE(events))
    cap = 0.5  # 50 tasks at $0.01
    gw = gateway(
        make_config({"a": endpoint(up.url)}, budget={"daily_cap_usd": cap}),
        max_concurrency=400,
    )

    async def one(client: openai.AsyncOpenAI) -> str:
        try:
            stream = await client.chat.completions.create(
                model="auto", messages=PROMPT, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        except openai.APIStatusError as exc:
            assert exc.response.headers["retry-after"]
            return str(exc.status_code)

    async def all_at_once() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="unused", max_retries=0
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(200)))

    outcomes = asyncio.run(all_at_once())
    assert outcomes.count("{}") == 50 and outcomes.count("503") == 150
    ledger = gw.gateway.router.policy.ledger
    spent, reserved, holds = gw.call(
        lambda: (ledger.spent_total, ledger.reserved_total, dict(ledger.holds))
    )
    assert spent <= cap + 1e-12 and spent == pytest.approx(cap)
    assert (reserved, holds) == (0.0, {})
    assert len(up.requests) == 50
    text = metrics_text(gw)
    assert metric(text, "costroute_budget_remaining_usd", scope="global") == pytest.approx(0.0)
    assert metric(text, "costroute_budget_alerts_total", scope="global", fraction="1") == 1


def test_a_provider_that_breaks_its_contract_is_a_500_in_the_clients_format() -> None:
    from router.gateway import GatewayServer, GatewaySettings
    from router.providers import Endpoint, ModelProvider

    class Buggy(ModelProvider):
        endpoint = Endpoint(kind="openai", base_url="http://127.0.0.1:9/v1", model="m")

        async def complete(self, messages, *, timeout_s, tools=None, tool_choice=None):  # noqa: ANN001, ANN202
            raise KeyError("a bug, not a ProviderError")

        async def aclose(self) -> None:
            pass

    config = make_config({"a": endpoint("http://127.0.0.1:9")})
    settings = GatewaySettings(port=0, watch=False)
    with GatewayServer(config, settings, providers={"a": Buggy()}) as gw:
        with pytest.raises(openai.InternalServerError) as info:
            oa(gw).chat.completions.create(model="auto", messages=PROMPT)
        assert info.value.status_code == 500 and info.value.body["code"] == "gateway_error"
        assert ledger_state(gw) == (0.0, {})  # the run was aborted: nothing held
