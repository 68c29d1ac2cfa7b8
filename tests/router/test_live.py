"""The live driver end to end over real loopback HTTP servers (no mock of our own I/O)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace

import pytest

from router import Task, config_from_dict
from router.live import Router, RoutingError
from router.recording import TraceRecorder
from router.testing_http import (
    SSE,
    Hang,
    Json,
    RateLimit,
    Raw,
    Reset,
    ScriptedServer,
    Truncated,
    openai_completion,
    openai_stream,
)

KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def make_config(urls: dict[str, str], **route_kw: object) -> object:
    models = [
        {
            "id": mid,
            "provider": f"prov-{mid}",
            "completion_rate": 0.9,
            "cost_per_task": 0.01,
            "avg_latency_ms": 50,
            "endpoint": {
                "kind": "openai",
                "base_url": url,
                "model": mid,
                "api_key_env": "TEST_KEY",
            },
        }
        for mid, url in urls.items()
    ]
    route = {
        "chain": list(urls),
        "max_cost_per_task": 1.0,
        "max_latency_ms": 5000,
        "attempt_timeout_ms": 1000,
        "attempts_per_model": 1,
        **route_kw,
    }
    return config_from_dict(
        {
            "models": models,
            "routes": {"json": route},
            "default_route": "json",
            "breaker": {
                "consecutive_failures": 2,
                "open_base_s": 0.5,
                "jitter": 0.0,
                "min_requests": 2,
                "window": 2,
            },
        }
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY", KEY)


def test_502_falls_back_and_breaker_opens_then_half_opens(tmp_path) -> None:
    ok = Json(openai_completion('{"ok": true}'))
    bad = Json({"error": {"message": "bad gateway"}}, status=502)
    with ScriptedServer(default=bad) as primary, ScriptedServer(default=ok) as fallback:
        cfg = make_config({"a": primary.url, "b": fallback.url})

        async def main() -> list:
            async with Router(cfg, recorder=TraceRecorder(tmp_path / "rec.ndjson")) as router:
                results = [
                    await router.route(Task(f"t{i}", "json", payload="{}")) for i in range(3)
                ]
                breaker = router.policy.breakers[router.policy.model_index["a"]]
                assert breaker.state.value == "open"
                await asyncio.sleep(0.6)
                primary.push(ok)  # the provider recovers: the half-open probe succeeds
                results.append(await router.route(Task("t3", "json", payload="{}")))
                assert breaker.state.value == "closed"
                return results

        results = asyncio.run(main())
    assert [r.model for r in results] == ["b", "b", "b", "a"]
    assert [a.kind for a in results[0].attempts] == ["server_error", "ok"]
    assert ("a", "breaker_open") in results[2].skips
    assert len(primary.requests) == 3  # two failures, then (after the open time) one probe
    lines = (tmp_path / "rec.ndjson").read_text().splitlines()
    assert [json.loads(x)["model"] for x in lines] == ["b", "b", "b", "a"]


def test_hang_times_out_inside_the_sla() -> None:
    with (
        ScriptedServer(default=Hang()) as hung,
        ScriptedServer(default=Json(openai_completion('{"x": 1}'))) as fallback,
    ):
        cfg = make_config(
            {"a": hung.url, "b": fallback.url}, max_latency_ms=2000, attempt_timeout_ms=800
        )

        async def main():
            async with Router(cfg) as router:
                t0 = time.monotonic()
                res = await router.route(Task("t", "json", payload="{}"))
                return res, time.monotonic() - t0

        res, elapsed = asyncio.run(main())
    # Nothing came back at all: a first-token timeout, which falls back at once.
    assert res.model == "b" and res.attempts[0].kind == "first_token_timeout"
    assert elapsed < 2.0


def test_validation_failure_falls_back() -> None:
    with (
        ScriptedServer(default=Json(openai_completion("not json at all"))) as a,
        ScriptedServer(default=Json(openai_completion('{"id": 1}'))) as b,
    ):
        cfg = make_config({"a": a.url, "b": b.url})

        async def main():
            async with Router(cfg) as router:
                return await router.route(
                    Task("t", "json", payload="{}", spec={"schema": {"type": "object"}})
                )

        res = asyncio.run(main())
    assert [x.kind for x in res.attempts] == ["validation", "ok"] and res.output == '{"id": 1}'


def test_200_concurrent_tasks_never_overspend_the_cap() -> None:
    def slow_ok(_req):
        return Json(openai_completion('{"ok": 1}'), delay_s=0.05)

    with ScriptedServer(default=slow_ok) as a:
        data = make_config({"a": a.url}).model_dump()
        data["budget"] = {"daily_cap_usd": 0.505}  # room for 50 tasks at $0.01
        cfg = config_from_dict(data)

        async def main():
            async with Router(cfg) as router:
                tasks = [router.route(Task(f"t{i}", "json", payload="{}")) for i in range(200)]
                out = await asyncio.gather(*tasks, return_exceptions=True)
                return out, router.policy.ledger

        out, ledger = asyncio.run(main())
    # A failed task is a result, not an exception (raise_on_failure is off by default).
    assert not any(isinstance(r, BaseException) for r in out)
    done = [r for r in out if r.success]
    failed = [r for r in out if not r.success]
    assert len(done) == 50 and len(failed) == 150
    assert ledger.spent_total == pytest.approx(0.50) and ledger.spent_total <= 0.505
    assert all(("a", "budget") in f.skips for f in failed)


def test_api_key_never_written_anywhere(tmp_path, capfd) -> None:
    echo = Json({"error": {"message": f"denied for key {KEY}"}}, status=401)
    with ScriptedServer(default=echo) as a:
        cfg = make_config({"a": a.url})
        rec = tmp_path / "rec.ndjson"

        async def main():
            async with Router(cfg, recorder=TraceRecorder(rec), raise_on_failure=True) as router:
                with pytest.raises(RoutingError) as exc:
                    await router.route(Task("t", "json", payload="{}"))
                return exc.value

        err = asyncio.run(main())
        assert a.requests[0].headers.get("authorization") == f"Bearer {KEY}"
    assert KEY not in str(err) and KEY not in repr(err)
    assert all(KEY not in (a.detail or "") for a in err.result.attempts)
    assert KEY not in rec.read_text()
    out, errout = capfd.readouterr()
    assert KEY not in out and KEY not in errout
    for root, _, files in os.walk(tmp_path):
        for f in files:
            assert KEY not in open(os.path.join(root, f), errors="replace").read()


def _route_once(primary_reply, *, stream: bool = False, **route_kw) -> tuple:
    """Route one task: model a answers ``primary_reply``, model b answers well."""
    good = SSE(openai_stream(['{"ok"', ": 1}"])) if stream else Json(openai_completion('{"ok": 1}'))
    with ScriptedServer(default=primary_reply) as a, ScriptedServer(default=good) as b:
        data = make_config({"a": a.url, "b": b.url}, **route_kw).model_dump()
        for m in data["models"]:
            m["endpoint"].update(stream=stream, first_token_timeout_s=0.3, stall_timeout_s=0.3)
        cfg = config_from_dict(data)

        async def main():
            async with Router(cfg) as router:
                t0 = time.monotonic()
                res = await router.route(Task("t", "json", payload="{}"))
                return res, time.monotonic() - t0

        res, elapsed = asyncio.run(main())
    return res, elapsed


def test_429_retry_after_is_waited_when_it_fits_the_deadline() -> None:
    with ScriptedServer(
        RateLimit(retry_after=0.3), default=Json(openai_completion('{"ok": 1}'))
    ) as a:
        cfg = make_config({"a": a.url}, attempts_per_model=2, max_latency_ms=3000)

        async def main():
            async with Router(cfg) as router:
                t0 = time.monotonic()
                res = await router.route(Task("t", "json", payload="{}"))
                return res, time.monotonic() - t0

        res, elapsed = asyncio.run(main())
    assert [x.kind for x in res.attempts] == ["rate_limited", "ok"] and res.model == "a"
    assert elapsed >= 0.3


def test_429_retry_after_beyond_the_deadline_falls_back_at_once() -> None:
    res, elapsed = _route_once(RateLimit(retry_after=30), attempts_per_model=2)
    assert [(x.model, x.kind) for x in res.attempts] == [("a", "rate_limited"), ("b", "ok")]
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reset(), "connection"),
        (Truncated(declared_length=4096), "connection"),
        (Raw(b"<html>502 Bad Gateway</html>", 200, "text/html"), "malformed"),
    ],
    ids=["reset", "truncated", "non-json"],
)
def test_broken_bodies_are_recorded_and_fall_back(reply, kind: str) -> None:
    res, _ = _route_once(reply)
    assert [(x.model, x.kind) for x in res.attempts] == [("a", kind), ("b", "ok")]


def _late(chunks: list, index: int, delay: float) -> list:
    return [replace(c, delay_s=delay) if i == index else c for i, c in enumerate(chunks)]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (SSE(openai_stream(["{", '"a": 1', "}"]), cut_after=2), "connection"),
        (SSE(_late(openai_stream(["{", '"a": 1', "}"]), 2, 2.0)), "timeout"),
        (SSE(_late(openai_stream(["{", "}"]), 0, 2.0)), "first_token_timeout"),
    ],
    ids=["cut", "stall", "late-first-token"],
)
def test_broken_streams_fail_never_truncated_success(reply, kind: str) -> None:
    res, elapsed = _route_once(reply, stream=True)
    assert [(x.model, x.kind) for x in res.attempts] == [("a", kind), ("b", "ok")]
    assert res.output == '{"ok": 1}' and elapsed < 2.0
