"""Safe by default: the gateway key, body limits, secrets that never leave, one access
line and one trace record per request, and the metrics a scrape shows."""

from __future__ import annotations

import json
import logging

import anthropic
import httpx
import openai
import pytest

import router.gateway.app as gateway_app
from router.gateway import Gateway, GatewayError, GatewaySettings, is_loopback
from router.testing_http import Echo, Json, openai_error
from tests.gateway.helpers import OK, PROVIDER_KEY, endpoint, make_config, metric, scrape, wait_for

PROMPT = [{"role": "user", "content": "Return a JSON object. SECRET-PROMPT-TEXT"}]
GATEWAY_KEY = "gw-key-7c1d9e2f4a6b8c0d"


def oa(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_a_wrong_or_missing_gateway_key_is_a_401_checked_in_constant_time(
    servers, gateway, monkeypatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = gateway_app.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(gateway_app.hmac, "compare_digest", spy)
    up = servers(default=OK)
    gw = gateway(make_config({"a": endpoint(up.url)}), key=GATEWAY_KEY)

    with pytest.raises(openai.AuthenticationError) as info:
        oa(gw.url, "wrong").chat.completions.create(model="auto", messages=PROMPT)
    assert info.value.body["code"] == "invalid_api_key"
    assert compared[-1] == (b"wrong", GATEWAY_KEY.encode())
    with pytest.raises(anthropic.AuthenticationError) as ainfo:
        anthropic.Anthropic(base_url=gw.url, api_key="wrong", max_retries=0).messages.create(
            model="auto", max_tokens=5, messages=PROMPT
        )
    assert ainfo.value.body["error"]["type"] == "authentication_error"
    assert httpx.post(gw.url + "/v1/chat/completions", json={}).status_code == 401  # no key
    assert httpx.get(gw.url + "/metrics").status_code == 401
    assert httpx.get(gw.url + "/v1/models").status_code == 401
    assert up.requests == []

    # The right key, as a bearer token (OpenAI SDK) or x-api-key (Anthropic SDK).
    assert oa(gw.url, GATEWAY_KEY).chat.completions.create(model="auto", messages=PROMPT).choices
    message = anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)
    assert message.messages.create(model="auto", max_tokens=5, messages=PROMPT).content
    assert httpx.get(gw.url + "/metrics", headers={"x-api-key": GATEWAY_KEY}).status_code == 200
    assert httpx.get(gw.url + "/health").status_code == 200  # probes need no key
    assert len(up.requests) == 2


def test_binding_beyond_loopback_requires_a_key(monkeypatch) -> None:
    config = make_config({"a": endpoint("http://127.0.0.1:9")})
    monkeypatch.delenv("COSTROUTE_GATEWAY_KEY", raising=False)
    with pytest.raises(GatewayError, match="COSTROUTE_GATEWAY_KEY"):
        Gateway(config, GatewaySettings(host="0.0.0.0"))
    monkeypatch.setenv("COSTROUTE_GATEWAY_KEY", GATEWAY_KEY)
    assert Gateway(config, GatewaySettings(host="0.0.0.0"))._key == GATEWAY_KEY.encode()
    assert Gateway(config, GatewaySettings(host="127.0.0.1"))._key == GATEWAY_KEY.encode()
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.2")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_an_oversize_body_is_a_413_declared_or_chunked(servers, gateway) -> None:
    up = servers(default=OK)
    gw = gateway(make_config({"a": endpoint(up.url)}), max_body_bytes=2000)
    big = [{"role": "user", "content": "x" * 3000}]
    with pytest.raises(openai.APIStatusError) as info:
        oa(gw.url).chat.completions.create(model="auto", messages=big)
    assert info.value.status_code == 413 and info.value.body["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit is counted while reading
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    response = httpx.post(
        gw.url + "/v1/messages",
        content=chunks(),
        headers={"anthropic-version": "2023-06-01", "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    small = oa(gw.url).chat.completions.create(model="auto", messages=PROMPT)
    assert small.choices[0].message.content == '{"ok": true}'
    assert len(up.requests) == 1


def test_provider_keys_never_reach_the_client_the_log_the_metrics_or_the_recording(
    servers, gateway, caplog, tmp_path
) -> None:
    echo_401, echo_500 = servers(default=Echo(401)), servers(default=Echo(500))
    good = servers(default=OK)
    record = tmp_path / "gw.ndjson"
    attempts = tmp_path / "attempts.ndjson"
    config = make_config(
        {"a": endpoint(echo_401.url), "b": endpoint(echo_500.url), "c": endpoint(good.url)},
        {"default": ["a", "b"], "json_parse": ["a", "c"]},
    )
    gw = gateway(config, record=record, record_attempts=attempts)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(openai.APIStatusError) as info:
        oa(gw.url).chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 502
    # The upstreams really saw the key (and echoed it back to the gateway).
    assert PROVIDER_KEY in echo_401.requests[0].headers["authorization"]
    ok = oa(gw.url).chat.completions.create(model="json_parse", messages=PROMPT)
    assert ok.choices[0].message.content == '{"ok": true}'
    with pytest.raises(anthropic.APIStatusError) as ainfo:
        anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
            model="default", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    seen = {
        "client error": info.value.response.text + ainfo.value.response.text,
        "log": "\n".join(r.getMessage() for r in caplog.records),
        "metrics": httpx.get(gw.url + "/metrics").text,
        "recording": record.read_text() + attempts.read_text(),
    }
    assert "auth" in seen["client error"]  # the failures are explained...
    for where, text in seen.items():
        assert PROVIDER_KEY not in text, where  # ...without the key
        assert "SECRET-PROMPT-TEXT" not in text, where  # nor a prompt


def test_one_access_line_and_one_trace_record_per_request(
    servers, gateway, caplog, tmp_path
) -> None:
    up = servers(OK, Json(openai_error("boom", type="server_error"), status=500))
    record = tmp_path / "rec" / "gw.ndjson"
    gw = gateway(make_config({"a": endpoint(up.url)}), record=record)
    caplog.set_level(logging.INFO, logger="costroute.access")
    client = oa(gw.url)
    client.chat.completions.create(model="auto", messages=PROMPT)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="auto", messages=PROMPT)
    # Refused before routing: logged, not recorded.
    assert httpx.post(gw.url + "/v1/chat/completions", content=b"{").status_code == 400

    def access_lines() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "costroute.access"]

    # The line is written once the response is out: it may trail the client a little.
    wait_for(lambda: len(access_lines()) >= 3, what="the access lines")
    lines = access_lines()
    assert [(x["status"], x["route"], x["model"], x["outcome"], x["attempts"]) for x in lines] == [
        (200, "default", "a", "ok", 1),
        (502, "default", "a", "exhausted", 1),
        (400, "-", "-", "bad_request", 0),
    ]
    assert lines[0]["cost_usd"] == 0.01 and lines[0]["latency_ms"] > 0
    assert set(lines[0]) == {
        "ts",
        "id",
        "path",
        "dialect",
        "status",
        "stream",
        "route",
        "model",
        "attempts",
        "outcome",
        "latency_ms",
        "ttft_ms",
        "cost_usd",
    }
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["success"], r["model"], r["error_kind"], r["task_type"]) for r in rows] == [
        (True, "a", None, "json"),
        (False, "a", "server_error", "json"),
    ]
    assert rows[0]["prompt_tokens"] == 11 and rows[0]["completion_tokens"] == 7  # measured
    assert rows[0]["task_id"] == lines[0]["id"]


def test_metrics_show_requests_attempts_latency_spend_budget_and_breakers(servers, gateway) -> None:
    up = servers(OK, Json(openai_error("boom", type="server_error"), status=500), OK)
    config = make_config(
        {"a": endpoint(up.url)},
        budget={"daily_cap_usd": 1.0, "per_model_usd": {"a": 0.5}},
        breaker={"consecutive_failures": 5},
    )
    gw = gateway(config)
    client = oa(gw.url)
    client.chat.completions.create(model="auto", messages=PROMPT)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="auto", messages=PROMPT)
    list(client.chat.completions.create(model="auto", messages=PROMPT, stream=True))
    text = scrape(gw, "costroute_request_duration_seconds_count", 3, route="default")
    assert metric(text, "costroute_requests_total", route="default", model="a", outcome="ok") == 2
    assert metric(text, "costroute_requests_total", outcome="exhausted") == 1
    assert metric(text, "costroute_attempts_total", model="a", kind="server_error") == 1
    assert metric(text, "costroute_request_duration_seconds_count", route="default") == 3
    assert metric(text, "costroute_time_to_first_token_seconds_count", route="default") == 1
    assert metric(text, "costroute_spend_usd_total") == pytest.approx(0.02)
    assert metric(text, "costroute_spend_today_usd", model="a") == pytest.approx(0.02)
    assert metric(text, "costroute_budget_remaining_usd", scope="global") == pytest.approx(0.98)
    assert metric(text, "costroute_budget_remaining_usd", scope="model", key="a") == pytest.approx(
        0.48
    )
    assert metric(text, "costroute_breaker_state", model="a") == 0  # one failure of five
    assert metric(text, "costroute_requests_in_flight") == 0
    assert metric(text, "costroute_budget_alerts_total") == 0  # 2% of the cap: no alert yet
