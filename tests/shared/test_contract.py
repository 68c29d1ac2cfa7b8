"""One suite, every shared-state backend: LocalState (in-process, the reference) and
RedisState (a real Redis). Replicas here are live routers in one process, each with
its own backend client; providers are in-process fakes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from router import ErrorKind, Task, config_from_dict
from router.breaker import BreakerEvent, BreakerState
from router.errors import ConfigError
from router.live import Router
from router.outcome import Outcome
from router.policy import RoutingPolicy, route_all
from router.providers import Completion, ProviderError
from router.shared import LocalState, LocalStore, RedisState, SharedState, mask_url

COST = 0.01


class FakeProvider:
    """Answers after ``delay_s``; while ``down``, a 500."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.down = False
        self.calls = 0

    async def complete(self, messages: Any, *, timeout_s: float, **_: Any) -> Completion:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.down:
            raise ProviderError(ErrorKind.SERVER_ERROR, "down", status=500)
        return Completion('{"ok": true}', 10, 5, "m", self.delay_s, "stop")

    async def aclose(self) -> None:
        pass


def make_config(*, cap: float | None = None, models: tuple[str, ...] = ("a",), **breaker: Any):
    data: dict[str, Any] = {
        "models": [
            {"id": m, "provider": f"p-{m}", "cost_per_task": COST, "avg_latency_ms": 10}
            for m in models
        ],
        "routes": {
            "json": {
                "chain": list(models),
                "max_cost_per_task": 1.0,
                "max_latency_ms": 60_000,
                "attempts_per_model": 1,
            }
        },
        "default_route": "json",
        "breaker": {"jitter": 0.0, **breaker},
    }
    if cap is not None:
        data["budget"] = {"daily_cap_usd": cap}
    return config_from_dict(data)


Factory = Callable[..., list[SharedState]]


@pytest.fixture(params=["local", "redis"])
def states(request: pytest.FixtureRequest) -> Factory:
    """``states(n, **kw)``: n replicas' clients of one fresh store of this backend."""
    made: list[SharedState] = []

    if request.param == "local":
        store = LocalStore()

        def factory(n: int, **kw: Any) -> list[SharedState]:
            kw.pop("sync_interval_s", None)
            made.extend(LocalState(store, **kw) for _ in range(n))
            return made[-n:]

    else:
        url = request.getfixturevalue("redis_url")
        ns = request.getfixturevalue("namespace")

        def factory(n: int, **kw: Any) -> list[SharedState]:
            made.extend(RedisState(url, namespace=ns, **kw) for _ in range(n))
            return made[-n:]

    return factory


async def _routers(states: list[SharedState], config, providers) -> list[Router]:  # noqa: ANN001
    routers = [Router(config, shared=s, providers=providers, validate=False) for s in states]
    for s in states:
        await s.start()
    return routers


async def _close(routers: list[Router]) -> None:
    for r in routers:
        await r.aclose()
        if r.shared is not None:
            await r.shared.aclose()


def test_concurrent_replicas_never_plan_past_a_shared_cap(states: Factory) -> None:
    async def main() -> tuple[float, list[Any]]:
        provider = FakeProvider(delay_s=0.02)
        routers = await _routers(states(3), make_config(cap=0.5), {"a": provider})
        try:
            results = await asyncio.gather(
                *(routers[i % 3].route(Task(f"t{i}", "json")) for i in range(300))
            )
        finally:
            await _close(routers)
        return sum(r.cost_usd for r in results), results

    spent, results = asyncio.run(main())
    assert spent <= 0.5 + 1e-9
    assert spent >= 0.5 - COST - 1e-9  # and the cap is used, not wasted
    assert {tuple(r.skips) for r in results if not r.success} == {(("a", "budget"),)}


def test_an_opening_reaches_every_replica_and_the_later_deadline_wins(states: Factory) -> None:
    async def main() -> tuple[list[float], list[float], float, float]:
        provider = FakeProvider()
        config = make_config(consecutive_failures=1, open_base_s=30.0)
        routers = await _routers(states(3), config, {"a": provider})
        breakers = [r.policy.breakers[0] for r in routers]

        async def until_all(check: Callable[[], bool]) -> None:
            for _ in range(200):
                if check():
                    return
                await asyncio.sleep(0.005)

        try:
            provider.down = True
            await routers[0].route(Task("t0", "json"))
            await until_all(lambda: all(b.state is BreakerState.OPEN for b in breakers))
            first = [b.open_until for b in breakers]
            # Another replica opens it again with a later deadline (as a trip does:
            # the deadline is set, then the listener is told): every replica takes it.
            late = first[0] + 50.0
            breakers[1].open_until = late
            breakers[1].listener(breakers[1], BreakerEvent.OPENED, routers[1].clock())
            await until_all(lambda: all(b.open_until == late for b in breakers))
            # An earlier deadline changes nothing anywhere.
            breakers[2].open_until = late - 20.0
            breakers[2].listener(breakers[2], BreakerEvent.OPENED, routers[2].clock())
            await asyncio.sleep(0.1)
            return first, [b.open_until for b in breakers], late, late - 20.0
        finally:
            await _close(routers)

    first, final, late, _ = asyncio.run(main())
    assert first[1] == first[0] and first[2] == first[0]
    assert final[0] == final[1] == late
    if final[2] != late:  # the replica that proposed the earlier one is told the later
        pytest.fail(f"replica 2 kept the earlier deadline: {final}")


def test_failures_on_different_replicas_trip_one_shared_count(states: Factory) -> None:
    """Three replicas each see one failure: with a threshold of 3 the breaker opens
    (one replica alone would need three of its own), on every replica."""

    async def main() -> list[str]:
        provider = FakeProvider()
        routers = await _routers(
            states(3), make_config(consecutive_failures=3, open_base_s=30.0), {"a": provider}
        )
        try:
            provider.down = True
            for i, r in enumerate(routers):
                await r.route(Task(f"t{i}", "json"))
                await asyncio.sleep(0.05)  # the count reaches the store
            for _ in range(100):
                if all(r.policy.breakers[0].state is BreakerState.OPEN for r in routers):
                    break
                await asyncio.sleep(0.01)
            return [r.policy.breakers[0].state.value for r in routers]
        finally:
            await _close(routers)

    assert asyncio.run(main()) == ["open"] * 3


def test_one_half_open_probe_for_all_replicas(states: Factory) -> None:
    async def main() -> tuple[int, list[Any]]:
        provider = FakeProvider(delay_s=0.2)
        config = make_config(consecutive_failures=1, open_base_s=0.3, reprobe_s=5.0)
        routers = await _routers(states(3), config, {"a": provider})
        try:
            provider.down = True
            await routers[0].route(Task("t0", "json"))
            await asyncio.sleep(0.45)  # every replica's opening is due: half-open
            provider.calls = 0
            results = await asyncio.gather(
                *(r.route(Task(f"p{i}", "json")) for i, r in enumerate(routers))
            )
            return provider.calls, results
        finally:
            await _close(routers)

    calls, results = asyncio.run(main())
    assert calls == 1  # one probe; the others were told the probe is taken
    skipped = [r for r in results if not r.attempts]
    assert len(skipped) == 2 and all(r.skips == [("a", "breaker_open")] for r in skipped)


def test_stats_are_merged_across_replicas(states: Factory) -> None:
    async def main() -> list[tuple[float, int]]:
        provider = FakeProvider()
        config = make_config()
        ss = states(2, stats_interval_s=0.1, sync_interval_s=0.05)
        routers = await _routers(ss, config, {"a": provider})
        try:
            for i in range(10):
                await routers[0].route(Task(f"a{i}", "json"))
            for i in range(4):
                await routers[1].route(Task(f"b{i}", "json"))
            for _ in range(3):
                for s in ss:
                    if isinstance(s, LocalState):
                        s.merge_stats()
                await asyncio.sleep(0.25)
            return [
                (
                    r.policy.route_stats[("json", "a")].q_n,
                    r.policy.route_stats[("json", "a")].q_count,
                )
                for r in routers
            ]
        finally:
            await _close(routers)

    (n0, c0), (n1, c1) = asyncio.run(main())
    assert c0 == c1 == 14  # each sees both replicas' answers, none twice
    assert math.isclose(n0, n1, rel_tol=0.02)


def test_a_settle_is_booked_once_and_a_lapsed_lease_frees_its_hold() -> None:
    """The store's own semantics (LocalStore; RedisState's scripts follow it and the
    Redis suite checks the same through the live path)."""
    store = LocalStore()
    caps = [("*", 1.0), ("m:a", -1.0)]
    assert store.reserve(0, "r:1", 0.6, now=0.0, lease_until=10.0, caps=caps)[0]
    assert not store.reserve(0, "r:2", 0.6, now=1.0, lease_until=11.0, caps=caps)[0]
    assert store.settle(0, 0, "r:1", 0.5, ["*", "m:a"])
    assert not store.settle(0, 0, "r:1", 0.5, ["*", "m:a"])  # a repeat books nothing
    assert store.levels(0)["*"] == pytest.approx(0.5)
    assert store.reserve(0, "r:3", 0.5, now=2.0, lease_until=3.0, caps=caps)[0]
    assert not store.reserve(0, "r:4", 0.5, now=2.5, lease_until=12.0, caps=caps)[0]
    # r:3's replica died: its lease lapses and the cap is free again.
    assert store.reserve(0, "r:4", 0.5, now=3.5, lease_until=13.0, caps=caps)[0]


def test_redis_settle_is_idempotent_and_expired_leases_are_given_back(
    redis_url: str, namespace: str
) -> None:
    async def main() -> list[Any]:
        s = RedisState(redis_url, namespace=namespace)
        policy = RoutingPolicy(make_config(cap=1.0), seed=0)
        s.attach(policy, time.time)
        await s.start()
        try:
            k = s._day_keys(0)
            caps = ["*", "1.0", "m:a", "-1"]
            out = [
                await s._eval([("RESERVE", k, ["r:1", "0.6", "0", "10", 3600, 2, *caps])]),
                await s._eval([("RESERVE", k, ["r:2", "0.6", "1", "11", 3600, 2, *caps])]),
            ]
            settle = ("SETTLE", [k[0], k[1], k[2], k[3]], ["r:1", "0.5", 3600, 3600, "*", "m:a"])
            out.append(await s._eval([settle, settle]))
            out.append(await s._eval([("RESERVE", k, ["r:3", "0.5", "2", "3", 3600, 2, *caps])]))
            out.append(await s._eval([("RESERVE", k, ["r:4", "0.5", "2.5", "12", 3600, 2, *caps])]))
            out.append(await s._eval([("RESERVE", k, ["r:4", "0.5", "3.5", "13", 3600, 2, *caps])]))
            return out
        finally:
            await s.aclose()

    r1, r2, settles, r3, r4a, r4b = asyncio.run(main())
    assert r1[0][0] == 1 and r2[0][0] == 0
    assert settles == [1, 0]
    assert r3[0][0] == 1 and r4a[0][0] == 0 and r4b[0][0] == 1


def test_a_lost_store_keeps_routing_spends_only_its_fraction_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens on the store's port: every request is still routed, the replica
    says it is degraded, logs it once, and spends at most local_fraction of the cap."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> tuple[list[Any], Any]:
        state = RedisState(
            f"redis://127.0.0.1:{port}/0", local_fraction=0.25, timeout_s=0.1, retry_s=0.2
        )
        provider = FakeProvider()
        routers = await _routers([state], make_config(cap=1.0), {"a": provider})
        try:
            results = [await routers[0].route(Task(f"t{i}", "json")) for i in range(60)]
            return results, state.status()
        finally:
            await _close(routers)

    with caplog.at_level(logging.WARNING, logger="router.shared"):
        results, status = asyncio.run(main())
    spent = sum(r.cost_usd for r in results)
    assert all(r.success or r.skips == [("a", "budget")] for r in results)
    assert spent == pytest.approx(0.25)
    assert not status.connected and status.outages == 1 and status.degraded_since is not None
    assert sum("unreachable" in m for m in caplog.messages) == 1


def test_local_state_alone_routes_exactly_as_the_unshared_policy() -> None:
    """The reference: a LocalState of its own changes no decision."""
    config = make_config(cap=0.2, models=("a", "b"), consecutive_failures=2, open_base_s=5.0)
    outcomes = [
        Outcome(ErrorKind.SERVER_ERROR, 0.1),
        Outcome(ErrorKind.OK, 0.2),
        Outcome(ErrorKind.SERVER_ERROR, 0.1),
        Outcome(ErrorKind.OK, 0.2),
    ] * 20

    def run(shared: bool) -> list[tuple[bool, str | None, tuple[Any, ...]]]:
        policy = RoutingPolicy(config, seed=3)
        state = LocalState() if shared else None
        now = [0.0]
        if state is not None:
            state.attach(policy, lambda: now[0])
        it = iter(outcomes)
        out = []
        for i in range(30):
            now[0] = i * 1.0
            result = route_all(policy, Task(f"t{i}", "json"), now[0], it)
            out.append((result.success, result.model, tuple(result.skips)))
        return out

    assert run(True) == run(False)


def test_the_shared_section_reads_the_password_from_the_environment_and_masks_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = make_config().model_dump(mode="json", exclude_none=True)
    with pytest.raises(ConfigError, match="password_env") as info:
        config_from_dict({**base, "shared": {"url": "redis://:hunter2@127.0.0.1:6379/0"}})
    assert "hunter2" not in str(info.value)
    config = config_from_dict(
        {**base, "shared": {"url": "redis://127.0.0.1:6379/0", "password_env": "CR_REDIS_PW"}}
    )
    monkeypatch.delenv("CR_REDIS_PW", raising=False)
    with pytest.raises(ConfigError, match="CR_REDIS_PW"):
        RedisState.from_config(config.shared)
    monkeypatch.setenv("CR_REDIS_PW", "hunter2")
    state = RedisState.from_config(config.shared)
    assert "hunter2" not in repr(state) and "hunter2" not in str(state.status())
    assert mask_url("redis://user:hunter2@h:1/0") == "redis://user:***@h:1/0"


def test_a_config_with_a_shared_section_gives_the_router_a_redis_state_and_metrics(
    redis_url: str, namespace: str
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from router.shared.metrics import SharedCollector

    base = make_config(cap=1.0).model_dump(mode="json", exclude_none=True)
    config = config_from_dict({**base, "shared": {"url": redis_url, "namespace": namespace}})

    async def main() -> tuple[Any, bytes, float]:
        router = Router(config, providers={"a": FakeProvider()}, validate=False)
        assert isinstance(router.shared, RedisState)
        registry = CollectorRegistry()
        registry.register(SharedCollector(lambda: router))
        try:
            result = await router.route(Task("t", "json"))
            await asyncio.sleep(0.1)
            return router.shared_status(), generate_latest(registry), result.cost_usd
        finally:
            await router.aclose()  # closes the state it built

    status, text, cost = asyncio.run(main())
    assert status.connected and status.backend == "redis" and cost == COST
    assert b"costroute_shared_connected{" in text and b"} 1.0" in text
    assert Router(make_config(), validate=False).shared_status() is None


def test_a_task_type_cap_refuses_that_type_only_across_replicas(states: Factory) -> None:
    """A $0.10 daily cap on task type ``json`` over 3 replicas: ``json`` tasks spend
    exactly $0.10 between them (unshared, each replica would spend its own $0.10) and
    the rest are refused for budget; ``sql`` tasks on the same model all run."""
    data: dict[str, Any] = {
        "models": [{"id": "a", "provider": "p-a", "cost_per_task": COST, "avg_latency_ms": 10}],
        "routes": {
            name: {
                "chain": ["a"],
                "max_cost_per_task": 1.0,
                "max_latency_ms": 60_000,
                "attempts_per_model": 1,
            }
            for name in ("json", "sql")
        },
        "default_route": "json",
        "aliases": {},
        "budget": {"per_task_type_usd": {"json": 10 * COST}},
    }
    config = config_from_dict(data)

    async def main() -> list[Any]:
        routers = await _routers(states(3), config, {"a": FakeProvider(delay_s=0.01)})
        try:
            return await asyncio.gather(
                *(
                    routers[i % 3].route(Task(f"t{i}", "json" if i % 2 else "sql"))
                    for i in range(120)
                )
            )
        finally:
            await _close(routers)

    results = asyncio.run(main())
    json_ = [r for r in results if r.task_type == "json"]
    sql = [r for r in results if r.task_type == "sql"]
    assert len(json_) == len(sql) == 60
    assert sum(r.success for r in json_) == 10
    assert math.isclose(sum(r.cost_usd for r in json_), 10 * COST)
    assert {tuple(r.skips) for r in json_ if not r.success} == {(("a", "budget"),)}
    assert all(r.success for r in sql)
