"""The live router under real faults, over real loopback servers: first-token
timeouts fall back at once, an outage is noticed and left promptly, measured usage
reaches the result and the trace, conversations round-trip, and cancelled tasks leak
nothing (issue: the router stays live under real faults)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import pytest

from router import BudgetAlert, Task, config_from_dict
from router.live import Router
from router.recording import TraceRecorder
from router.testing_http import (
    Hang,
    Json,
    ScriptedServer,
    anthropic_message,
    openai_completion,
)

OK = Json(openai_completion('{"ok": true}', prompt_tokens=123, completion_tokens=45, model="m-x"))


def cfg(endpoints: dict[str, dict], *, breaker: dict | None = None, **route_kw: object):
    models = [
        {
            "id": mid,
            "provider": f"prov-{mid}",
            "completion_rate": 0.9,
            "cost_per_task": 0.01,
            "avg_latency_ms": 50,
            "endpoint": ep,
        }
        for mid, ep in endpoints.items()
    ]
    route = {
        "chain": list(endpoints),
        "max_cost_per_task": 1.0,
        "max_latency_ms": 5000,
        "attempt_timeout_ms": 3000,
        **route_kw,
    }
    data: dict = {"models": models, "routes": {"json": route}, "default_route": "json"}
    if breaker is not None:
        data["breaker"] = breaker
    return config_from_dict(data)


def openai_ep(url: str, **kw: object) -> dict:
    return {"kind": "openai", "base_url": f"{url}/v1", "model": "m", "api_key_env": None, **kw}


def test_a_silent_primary_costs_exactly_one_first_token_timeout() -> None:
    async def main():
        async with ScriptedServer(default=Hang()) as silent, ScriptedServer(default=OK) as ok:
            config = cfg(
                {
                    "a": openai_ep(silent.url, first_token_timeout_s=0.3),
                    "b": openai_ep(ok.url),
                },
                attempts_per_model=3,
            )
            async with Router(config) as router:
                t0 = time.monotonic()
                res = await router.route(Task("t", "json", payload="{}"))
                return res, time.monotonic() - t0, len(silent.requests)

    res, elapsed, calls = asyncio.run(main())
    assert res.success and res.model == "b"
    assert [a.kind for a in res.attempts] == ["first_token_timeout", "ok"]
    assert calls == 1 and 0.3 <= elapsed < 1.0


def test_a_primary_down_then_healthy_is_back_in_use_soon_after_it_recovers() -> None:
    """The default breaker settings, with every duration scaled by 1/20 (a 60 s outage
    becomes 3 s, the 15 s recovery bound 0.75 s); one task every 50 ms (1 s scaled)."""
    scale = 0.05
    down_s = 60 * scale
    up_at: list[float] = []
    down_calls: list[float] = []

    def primary(request):  # a 503 while down, then healthy
        now = time.monotonic()
        if now < up_at[0]:
            down_calls.append(now)
            return Json({"error": {"message": "down"}}, status=503)
        return OK

    async def main():
        async with ScriptedServer(default=primary) as a, ScriptedServer(default=OK) as b:
            base = Router(cfg({"a": openai_ep(a.url), "b": openai_ep(b.url)})).config
            bk = base.breaker
            config = base.model_copy(
                update={
                    "breaker": bk.model_copy(
                        update={
                            "open_base_s": bk.open_base_s * scale,
                            "reprobe_s": bk.reprobe_s * scale,
                        }
                    ),
                    "routes": {
                        "json": base.routes["json"].model_copy(
                            update={
                                "backoff": base.routes["json"].backoff.model_copy(
                                    update={"base_s": 0.01, "cap_s": 0.02}
                                )
                            }
                        )
                    },
                }
            )
            served: list[tuple[float, str]] = []
            async with Router(config) as router:
                up_at.append(time.monotonic() + down_s)
                i = 0
                while time.monotonic() < up_at[0] + 30 * scale:
                    res = await router.route(Task(f"t{i}", "json", payload="{}"))
                    served.append((time.monotonic(), res.model))
                    i += 1
                    await asyncio.sleep(1 * scale)
            return served

    served = asyncio.run(main())
    recovered = up_at[0]
    back = next(t for t, m in served if t >= recovered and m == "a")
    assert back - recovered <= 15 * scale, back - recovered
    assert len(down_calls) <= 6, len(down_calls)
    assert all(m in ("a", "b") for _, m in served)  # every task was served meanwhile


def test_usage_model_and_request_id_reach_the_result_and_the_trace(tmp_path) -> None:
    body = openai_completion(
        '{"ok": true}', prompt_tokens=321, completion_tokens=54, model="gpt-x-0613", id="req-9"
    )

    async def main():
        async with ScriptedServer(default=Json(body)) as srv:
            data = cfg({"a": openai_ep(srv.url)}).model_dump()
            data["models"][0].update(input_per_mtok=1.0, output_per_mtok=2.0)
            rec = TraceRecorder(tmp_path / "live.ndjson")
            async with Router(config_from_dict(data), recorder=rec) as router:
                return await router.route(Task("t", "json", payload="{}", prompt_tokens=5))

    res = asyncio.run(main())
    assert res.success
    assert (res.prompt_tokens, res.completion_tokens) == (321, 54)
    assert res.provider_model == "gpt-x-0613" and res.request_id == "req-9"
    assert res.cost_usd == pytest.approx((321 * 1.0 + 54 * 2.0) / 1e6)
    row = json.loads((tmp_path / "live.ndjson").read_text().splitlines()[-1])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (321, 54)
    assert row["provider_model"] == "gpt-x-0613" and row["request_id"] == "req-9"


CONVERSATION = [
    {"role": "system", "content": "You fix code."},
    {"role": "user", "content": "Run the tests."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "run_tests", "arguments": '{"path": "tests/"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "1 failed: test_parse"},
    {"role": "user", "content": "Fix it and return the JSON result."},
]


def test_a_five_turn_conversation_with_a_tool_message_round_trips() -> None:
    async def main():
        async with (
            ScriptedServer(default=OK) as oa,
            ScriptedServer(default=Json(anthropic_message('{"ok": true}'))) as an,
        ):
            config = cfg(
                {
                    "oa": openai_ep(oa.url),
                    "an": {
                        "kind": "anthropic",
                        "base_url": f"{an.url}/v1",
                        "model": "claude-x",
                        "api_key_env": None,
                        "max_tokens": 256,
                    },
                }
            )
            async with Router(config) as router:
                task = Task("t", "json", messages=CONVERSATION)
                first = await router.route(task)
                other = config.model_copy(
                    update={
                        "routes": {
                            "json": config.routes["json"].model_copy(update={"chain": ["an"]})
                        }
                    }
                )
                router.reload(other)
                second = await router.route(task)
            return first, second, oa.requests[0].json(), an.requests[0].json()

    first, second, sent_openai, sent_anthropic = asyncio.run(main())
    assert first.success and first.model == "oa" and second.success and second.model == "an"
    assert sent_openai["messages"] == CONVERSATION
    assert sent_anthropic["system"] == "You fix code."
    assert sent_anthropic["messages"] == [
        {"role": "user", "content": "Run the tests."},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "run_tests",
                    "input": {"path": "tests/"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": "1 failed: test_parse",
                }
            ],
        },
        {"role": "user", "content": "Fix it and return the JSON result."},
    ]


def test_cancelled_tasks_leak_no_reservation_and_spending_goes_on() -> None:
    slow = Json(openai_completion('{"ok": true}'), delay_s=0.2)

    async def main():
        async with ScriptedServer(default=slow) as srv:
            data = cfg({"a": openai_ep(srv.url)}).model_dump()
            data["budget"] = {"daily_cap_usd": 0.5}
            alerts: list[BudgetAlert] = []
            async with Router(config_from_dict(data), on_alert=alerts.append) as router:
                rng = random.Random(7)
                tasks = [
                    asyncio.create_task(router.route(Task(f"t{i}", "json", payload="{}")))
                    for i in range(40)
                ]
                await asyncio.sleep(0.05)  # every task is mid-call now
                cancelled = rng.sample(tasks, 25)
                for t in cancelled:
                    t.cancel()
                done = await asyncio.gather(*tasks, return_exceptions=True)
                ledger = router.policy.ledger
                reserved_after = (ledger.reserved_total, dict(ledger.holds))
                spent_before = ledger.spent_total
                later = [
                    await router.route(Task(f"later{i}", "json", payload="{}")) for i in range(3)
                ]
                return done, cancelled, tasks, reserved_after, spent_before, later, ledger, alerts

    done, cancelled, tasks, reserved_after, spent_before, later, ledger, alerts = asyncio.run(
        main()
    )
    n_cancelled = sum(isinstance(d, asyncio.CancelledError) for d in done)
    assert n_cancelled == 25
    assert reserved_after == (0.0, {})
    assert spent_before == pytest.approx(0.15)  # the 15 tasks that were not cancelled
    assert all(r.success for r in later)
    assert ledger.spent_total == pytest.approx(0.18)
    assert [a.fraction for a in alerts] == []  # 0.18 of 0.5 crosses no alert fraction


def test_budget_alerts_are_logged_and_handed_to_on_alert(caplog) -> None:
    async def main():
        async with ScriptedServer(default=OK) as srv:
            data = cfg({"a": openai_ep(srv.url)}).model_dump()
            data["budget"] = {"daily_cap_usd": 0.02, "alert_fractions": [0.5, 1.0]}
            seen: list[BudgetAlert] = []
            async with Router(config_from_dict(data), on_alert=seen.append) as router:
                results = [
                    await router.route(Task(f"t{i}", "json", payload="{}")) for i in range(3)
                ]
            return results, seen

    with caplog.at_level("WARNING", logger="router.budget"):
        results, seen = asyncio.run(main())
    assert [r.success for r in results] == [True, True, False]
    assert results[2].error == "no_candidate" and results[2].skips == [("a", "budget")]
    assert [(a.scope, a.fraction) for a in seen] == [("global", 0.5), ("global", 1.0)]
    logged = [r.getMessage() for r in caplog.records if r.name == "router.budget"]
    assert len(logged) == 2 and "reached 100% of its $0.02 daily cap" in logged[1]


def test_a_bad_spec_is_a_failed_result_and_raise_on_failure_raises() -> None:
    from router.live import RoutingError

    async def main():
        async with ScriptedServer(default=OK) as srv:
            async with Router(cfg({"a": openai_ep(srv.url)})) as router:
                bad = Task("bad", "json", payload="{}", spec={"schema": "not a schema"})
                res = await router.route(bad)
                ok = await router.route(Task("ok", "json", payload="{}"))
                with pytest.raises(RoutingError) as exc:
                    await router.route(bad, raise_on_failure=True)
                return res, ok, exc.value, len(srv.requests), router.policy.ledger

    res, ok, err, calls, ledger = asyncio.run(main())
    assert not res.success and res.error == "bad_spec" and res.attempts == []
    assert "schema" in res.detail
    assert ok.success and calls == 1  # the bad spec never reached a provider
    assert err.result.error == "bad_spec"
    assert ledger.reserved_total == 0.0


def test_a_missing_api_key_falls_back_and_leaks_nothing(monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)

    async def main():
        async with ScriptedServer(default=OK) as srv:
            config = cfg(
                {
                    "a": openai_ep(srv.url, api_key_env="NO_SUCH_KEY_VAR"),
                    "b": openai_ep(srv.url),
                }
            )
            async with Router(config) as router:
                res = await router.route(Task("t", "json", payload="{}"))
                return res, router.policy.ledger

    res, ledger = asyncio.run(main())
    assert res.success and res.model == "b"
    assert res.attempts[0].kind == "auth" and "NO_SUCH_KEY_VAR" in res.attempts[0].detail
    assert ledger.reserved_total == 0.0 and ledger.holds == {}


def test_the_event_loop_keeps_ticking_while_a_slow_validator_runs(tmp_path) -> None:
    """A bug_patch answer whose tests take 2 s: another task's 10 ms timer is never
    late by 50 ms or more."""
    source = "def add(a, b):\n    return a - b\n"
    diff = (
        "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n"
        "-    return a - b\n+    return a + b\n"
    )
    body = Json(openai_completion(diff))

    async def ticker(stop: asyncio.Event) -> float:
        worst = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - t - 0.01)
        return worst

    async def main():
        async with ScriptedServer(default=body) as srv:
            config = cfg(
                {"a": openai_ep(srv.url)}, max_latency_ms=20_000, attempt_timeout_ms=15_000
            )
            async with Router(config) as router:
                stop = asyncio.Event()
                tick = asyncio.create_task(ticker(stop))
                task = Task(
                    "p",
                    "bug_patch",
                    payload="fix add",
                    spec={
                        "source": source,
                        "path": "calc.py",
                        "test_command": [
                            sys.executable,
                            "-c",
                            "import time, calc; time.sleep(2); assert calc.add(2, 3) == 5",
                        ],
                    },
                )
                t0 = time.monotonic()
                res = await router.route(task)
                elapsed = time.monotonic() - t0
                stop.set()
                return res, elapsed, await tick

    res, elapsed, worst = asyncio.run(main())
    assert res.success, res.reasons()
    assert elapsed >= 2.0
    assert worst < 0.05, worst


def test_from_config_refuses_a_config_whose_models_cannot_be_called(tmp_path) -> None:
    from router import load_seed_config, save_config
    from router.errors import InputError

    path = save_config(load_seed_config(), tmp_path / "seed.yaml")
    with pytest.raises(InputError) as exc:
        Router.from_config(path)
    message = str(exc.value)
    assert "\n" not in message and "has no endpoint" in message and "routes." in message
