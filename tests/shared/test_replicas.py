"""Several live router replicas — real OS processes — on one real Redis (issue 13).

Providers are loopback fault servers (:class:`router.testing_http.ScriptedServer`)
in this process; each replica is ``tests/shared/replica_proc.py`` in its own process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared_helpers import RedisServer, ReplicaProcess, redis_hash, start_all

from router.ledger import DAY_S
from router.testing_http import Hang, Json, ScriptedServer, openai_completion

OK = Json(openai_completion('{"ok": true}', prompt_tokens=10, completion_tokens=5))
DOWN = Json({"error": {"message": "the provider is down"}}, 500)
COST = 0.01


def endpoint(url: str) -> dict[str, Any]:
    return {"kind": "openai", "base_url": f"{url}/v1", "model": "m", "api_key_env": None}


def config(
    models: dict[str, str],
    *,
    shared: dict[str, Any] | None,
    budget: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    attempt_timeout_ms: float = 3000,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "models": [
            {
                "id": mid,
                "provider": f"prov-{mid}",
                "cost_per_task": COST,
                "avg_latency_ms": 20,
                "endpoint": endpoint(url),
            }
            for mid, url in models.items()
        ],
        "routes": {
            "json": {
                "chain": list(models),
                "max_cost_per_task": 1.0,
                "max_latency_ms": 60_000,
                "attempt_timeout_ms": attempt_timeout_ms,
                "attempts_per_model": 1,
            }
        },
        "default_route": "json",
    }
    if shared is not None:
        data["shared"] = shared
    if budget is not None:
        data["budget"] = budget
    if breaker is not None:
        data["breaker"] = breaker
    return data


def today_key(namespace: str, what: str) -> str:
    return f"{{{namespace}}}:d:{int(time.time() // DAY_S)}:{what}"


def wait_settled(procs: list[ReplicaProcess], timeout: float = 15.0) -> list[dict[str, Any]]:
    """Wait until every replica is connected with nothing queued for the store."""
    deadline = time.monotonic() + timeout
    while True:
        states = [p.ask({"op": "status"}) for p in procs]
        if all(s["status"]["connected"] and s["status"]["pending_ops"] == 0 for s in states):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas did not settle with the store: {states}")
        time.sleep(0.1)


def test_a_thousand_concurrent_requests_over_three_replicas_never_overspend_a_cap(
    redis_url: str, namespace: str, replicas: list[ReplicaProcess], tmp_path: Path
) -> None:
    """1,000 requests at once over 3 replica processes against a $1.00 daily cap at
    $0.01 a call: settled spend never exceeds the cap. The stated bound is the cap
    plus one in-flight estimate per replica (an answer may cost more than its
    estimate); with per-task prices, as here, it is the cap exactly."""
    cap, n = 1.0, 3
    with ScriptedServer(default=Json(OK.body, delay_s=0.05)) as server:
        shared = {"url": redis_url, "namespace": namespace}
        data = config({"a": server.url}, shared=shared, budget={"daily_cap_usd": cap})
        replicas += [ReplicaProcess(data, tmp_path, f"r{i}") for i in range(n)]
        start_all(replicas)
        start_at = time.time() + 0.5
        counts = [334, 333, 333]
        for p, k in zip(replicas, counts, strict=True):
            p.send({"op": "route", "n": k, "period_s": 0.0, "start_at": start_at, "prefix": p.name})
        results = [r for p in replicas for r in p.receive(60)["results"]]
        wait_settled(replicas)
        calls = len(server.requests)
    assert len(results) == 1000
    settled = sum(r["cost"] for r in results)
    assert settled <= cap + n * COST + 1e-9  # the stated bound
    assert settled <= cap + 1e-9  # per-task prices: estimates are exact
    assert calls == round(settled / COST)
    refused = [r for r in results if not r["success"]]
    assert all(r["skips"] == [["a", "budget"]] for r in refused)
    # Every replica got a share, and the shared ledger agrees with what they settled.
    assert sum(r["success"] for r in results) == calls
    spent = redis_hash(redis_url, today_key(namespace, "spent"))
    assert abs(spent["*"] - settled) < 1e-9
    assert redis_hash(redis_url, today_key(namespace, "resv")).get("*", 0.0) < 1e-9
    # The cap is actually reached: sharing does not leave budget unused.
    assert settled >= cap - COST - 1e-9


def _dead_provider_run(
    groups: list[ReplicaProcess],
    dead: ScriptedServer,
    warm_s: float,
    outage_s: float,
    period: float,
) -> tuple[int, list[dict[str, Any]]]:
    """Route one stream (a task every ``period`` s, round-robin over ``groups``) while
    ``dead`` answers OK for ``warm_s`` and then 500s for ``outage_s``: the calls the
    dead provider got while down, and each replica's output."""
    start_at = time.time() + 0.3
    dead.down_at = start_at + warm_s  # type: ignore[attr-defined]
    total, n = int((warm_s + outage_s) / period), len(groups)
    for k, p in enumerate(groups):
        p.send(
            {
                "op": "route",
                "n": len(range(k, total, n)),
                "period_s": period * n,
                "offset_s": period * k,
                "start_at": start_at,
                "prefix": p.name,
            }
        )
    outs = [p.receive(60) for p in groups]
    warm = sum(
        1 for o in outs for r in o["results"] for m, k in r["attempts"] if m == "dead" and k == "ok"
    )
    return len(dead.requests) - warm, outs


def test_a_dead_provider_opens_every_replicas_breaker_within_100ms_and_costs_one_replicas_calls(
    redis_url: str, namespace: str, replicas: list[ReplicaProcess], tmp_path: Path
) -> None:
    """A provider goes down under a steady stream (a request every 30 ms). One replica
    alone, then three replicas sharing state with the stream spread round-robin: with
    sharing the breaker opens on every replica within 100 ms of the first opening
    (measured: a few milliseconds), and the dead provider gets at most the single
    replica's calls + N - 1 (the shared consecutive count trips after as many failures
    as one replica needs; one half-open probe for all)."""
    n, period, warm_s, outage_s = 3, 0.03, 0.4, 1.8
    breaker = {"consecutive_failures": 3, "open_base_s": 0.8, "reprobe_s": 0.4, "jitter": 0.0}

    def server() -> ScriptedServer:
        box: ScriptedServer

        def reply(_request: object) -> Json:
            return DOWN if time.time() >= box.down_at else OK  # type: ignore[attr-defined]

        box = ScriptedServer(default=reply)
        box.down_at = float("inf")  # type: ignore[attr-defined]
        return box

    with server() as dead_single, server() as dead_shared, ScriptedServer(default=OK) as backup:
        single = ReplicaProcess(
            config(
                {"dead": dead_single.url, "backup": backup.url},
                shared={"url": redis_url, "namespace": namespace + "-single"},
                breaker=breaker,
            ),
            tmp_path,
            "single",
        )
        group = [
            ReplicaProcess(
                config(
                    {"dead": dead_shared.url, "backup": backup.url},
                    shared={"url": redis_url, "namespace": namespace},
                    breaker=breaker,
                ),
                tmp_path,
                f"r{i}",
            )
            for i in range(n)
        ]
        replicas += [single, *group]
        start_all(replicas)
        single_calls, single_out = _dead_provider_run(
            [single], dead_single, warm_s, outage_s, period
        )
        shared_calls, outs = _dead_provider_run(group, dead_shared, warm_s, outage_s, period)
    opened = [o["opened_at"].get("dead") for o in outs]
    assert all(t is not None for t in opened), opened
    spread_ms = (max(opened) - min(opened)) * 1000  # type: ignore[type-var, operator]
    print(
        f"\nopenings spread over {spread_ms:.1f} ms; calls to the dead provider: one replica "
        f"{single_calls}, {n} sharing {shared_calls}"
    )
    assert spread_ms <= 100.0
    assert single_calls >= 3
    assert shared_calls <= single_calls + n - 1
    assert all(r["success"] for o in [*single_out, *outs] for r in o["results"])


def test_redis_killed_mid_run_and_restarted_fails_no_request_and_spend_reconciles_once(
    own_redis: RedisServer, namespace: str, replicas: list[ReplicaProcess], tmp_path: Path
) -> None:
    """Redis is SIGKILLed while three replicas route and restarted 0.6 s later: no
    request fails, each replica logs the loss once and routes on its own state, and
    once the store is back the shared ledger holds exactly what the replicas spent
    (nothing lost, nothing counted twice), with no reservation left behind."""
    n, period, count = 3, 0.01, 150
    with ScriptedServer(default=OK) as server:
        shared = {
            "url": own_redis.url,
            "namespace": namespace,
            "retry_s": 0.2,
            "timeout_s": 0.25,
            "local_fraction": 0.5,
            "sync_interval_s": 0.2,
        }
        data = config({"a": server.url}, shared=shared, budget={"daily_cap_usd": 100.0})
        replicas += [ReplicaProcess(data, tmp_path, f"r{i}") for i in range(n)]
        start_all(replicas)
        start_at = time.time() + 0.3
        for k, p in enumerate(replicas):
            p.send(
                {
                    "op": "route",
                    "n": count,
                    "period_s": period,
                    "offset_s": period * k / n,
                    "start_at": start_at,
                    "prefix": p.name,
                }
            )
        time.sleep(max(0.0, start_at + 0.4 - time.time()))
        own_redis.kill()
        time.sleep(0.6)
        own_redis.start()
        results = [r for p in replicas for r in p.receive(60)["results"]]
        states = wait_settled(replicas)
    assert len(results) == n * count
    assert all(r["success"] for r in results), [r for r in results if not r["success"]][:3]
    spent = sum(r["cost"] for r in results)
    ledger = redis_hash(own_redis.url, today_key(namespace, "spent"))
    assert abs(ledger["*"] - spent) < 1e-9 * len(results)
    assert abs(ledger["m:a"] - spent) < 1e-9 * len(results)
    assert redis_hash(own_redis.url, today_key(namespace, "resv")).get("*", 0.0) < 1e-9
    assert all(s["status"]["outages"] >= 1 for s in states)
    assert sum(s["status"]["reconciled_usd"] for s in states) > 0
    for p, s in zip(replicas, states, strict=True):
        # Logged once per outage (and once when it came back).
        assert p.stderr().count("unreachable") == s["status"]["outages"]


def test_a_replica_killed_with_reservations_in_flight_leaves_none_behind_after_its_lease(
    redis_url: str, namespace: str, replicas: list[ReplicaProcess], tmp_path: Path
) -> None:
    """A replica holds the whole $0.10 cap with 10 calls in flight and is SIGKILLed:
    the others are refused while its reservations hold, and can spend again once
    their lease (1 s here) has run out."""
    served = {"n": 0}

    def reply(_request: object) -> Hang | Json:
        served["n"] += 1
        return Hang() if served["n"] <= 10 else OK

    with ScriptedServer(default=reply) as server:
        shared = {"url": redis_url, "namespace": namespace, "lease_s": 1.0}
        data = config(
            {"a": server.url},
            shared=shared,
            budget={"daily_cap_usd": 10 * COST},
            attempt_timeout_ms=30_000,
        )
        victim, b, c = (ReplicaProcess(data, tmp_path, f"r{i}") for i in range(3))
        replicas += [victim, b, c]
        start_all(replicas)
        victim.ask({"op": "fire", "n": 10})
        resv_key = today_key(namespace, "resv")
        deadline = time.monotonic() + 10
        while redis_hash(redis_url, resv_key).get("*", 0.0) < 10 * COST - 1e-9 or served["n"] < 10:
            assert time.monotonic() < deadline, "the victim's calls never started"
            time.sleep(0.02)
        refused = b.ask({"op": "route", "n": 1, "prefix": "early"})["results"][0]
        assert not refused["success"] and refused["skips"] == [["a", "budget"]]
        victim.kill()
        killed_at = time.monotonic()
        time.sleep(0.5)  # still within the lease: still refused
        early = c.ask({"op": "route", "n": 1, "prefix": "c-early"})["results"][0]
        assert not early["success"]
        while time.monotonic() < killed_at + 1.5:
            time.sleep(0.05)
        later = b.ask({"op": "route", "n": 5, "prefix": "later"})["results"]
        later += c.ask({"op": "route", "n": 5, "prefix": "c-later"})["results"]
        wait_settled([b, c])
    assert all(r["success"] for r in later)
    assert abs(sum(r["cost"] for r in later) - 10 * COST) < 1e-9
    spent = redis_hash(redis_url, today_key(namespace, "spent"))
    assert abs(spent["*"] - 10 * COST) < 1e-9
    assert redis_hash(redis_url, resv_key).get("*", 0.0) < 1e-9
