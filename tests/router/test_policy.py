"""The sans-I/O policy, driven with the public testing aids (fake clock, scripts)."""

from __future__ import annotations

import pytest

from router import Call, ErrorKind, Finish, Outcome, RoutingPolicy, Task, Wait, config_from_dict
from router.testing import FakeClock, ScriptedProvider, drive, tiny_config


def route(cfg=None, scripts=None, task=None, seed=0, clock=None):
    policy = RoutingPolicy(cfg or tiny_config(), seed=seed)
    provider = ScriptedProvider(scripts or {})
    res = drive(policy, task or Task("t1", "json"), provider, clock or FakeClock())
    return res, provider, policy


def test_preview_is_skipped_in_production_and_called_in_staging() -> None:
    res, prov, _ = route()
    assert res.success and res.model == "a"
    assert res.skips == [("p", "preview")]
    assert [m for m, _ in prov.calls] == ["a"]
    res, prov, _ = route(tiny_config(environment="staging"))
    assert res.model == "p" and res.skips == []


def test_deprecated_is_skipped_in_production() -> None:
    cfg = tiny_config()
    data = cfg.model_dump()
    data["models"][1]["status"] = "deprecated"
    res, _, _ = route(config_from_dict(data), {"a": ["server_error", "server_error"]})
    assert res.skips == [("p", "preview"), ("b", "deprecated")]
    assert res.error == "exhausted" and not res.success


def test_retry_then_fallback_records_every_reason() -> None:
    res, prov, _ = route(scripts={"a": ["server_error", "timeout"], "b": ["ok"]})
    assert res.success and res.model == "b"
    assert [(a.model, a.number, a.kind) for a in res.attempts] == [
        ("a", 1, "server_error"),
        ("a", 2, "timeout"),
        ("b", 1, "ok"),
    ]
    assert res.fell_back and res.models_tried == ["a", "b"]
    assert res.cost_usd == pytest.approx(0.01 + 0.01 + 0.02)


@pytest.mark.parametrize("kind", ["bad_request", "auth", "context_length"])
def test_non_retryable_errors_fall_back_without_retry(kind: str) -> None:
    res, prov, _ = route(scripts={"a": [kind], "b": ["ok"]})
    assert [m for m, _ in prov.calls] == ["a", "b"] and res.model == "b"


def test_content_filter_ends_the_task_unless_the_route_falls_back() -> None:
    res, prov, _ = route(scripts={"a": ["content_filter"]})
    assert (res.success, res.error, len(prov.calls)) == (False, "content_filter", 1)
    cfg = tiny_config()
    data = cfg.model_dump()
    data["routes"]["json"]["fallback_on_refusal"] = True
    res, prov, _ = route(config_from_dict(data), {"a": ["content_filter"]})
    assert res.model == "b"


def test_cost_limit_skips_models_that_would_exceed_it() -> None:
    data = tiny_config().model_dump()
    data["routes"]["json"]["max_cost_per_task"] = 0.025
    res, prov, _ = route(config_from_dict(data), {"a": ["server_error", "server_error"]})
    # a: 0.01 + 0.01 spent; b would add 0.02 > 0.025
    assert res.skips[-1] == ("b", "cost") and not res.success


def test_token_priced_cost_projection() -> None:
    data = tiny_config().model_dump()
    data["models"][0].update(input_per_mtok=10.0, output_per_mtok=30.0)  # model a
    data["routes"]["json"]["max_cost_per_task"] = 0.02
    cfg = config_from_dict(data)
    res, _, _ = route(cfg, task=Task("t", "json", prompt_tokens=1000, completion_tokens=100))
    assert res.model == "a" and res.cost_usd == pytest.approx(0.013)  # 0.01 + 0.003
    res, _, _ = route(cfg, task=Task("t", "json", prompt_tokens=1000, completion_tokens=1000))
    assert res.skips[1] == ("a", "cost")  # 0.01 + 0.03 = 0.04 > 0.02
    assert res.model == "b"


def test_latency_limit_uses_profile_then_observed_ewma_per_route() -> None:
    data = tiny_config().model_dump()
    data["routes"]["json"]["max_latency_ms"] = 700
    data["routes"]["sql"] = {"chain": ["a"], "max_cost_per_task": 1, "max_latency_ms": 5000}
    cfg = config_from_dict(data)
    policy = RoutingPolicy(cfg)
    clock = FakeClock()
    assert drive(policy, Task("x", "json"), ScriptedProvider({}), clock).model == "a"
    # a's profile says 0.5 s; on a route with a looser SLA its answers take 0.95 s. That
    # route's observation does not touch the json route's estimate.
    slow = ScriptedProvider({"a": [Outcome(ErrorKind.OK, 0.95)] * 3})
    first = drive(policy, Task("x0", "sql"), slow, clock)
    assert first.model == "a"
    assert policy.route_stats[("sql", "a")].latency_ewma_s == pytest.approx(0.95)
    assert drive(policy, Task("j", "json"), ScriptedProvider({}), clock).model == "a"
    # On the json route itself a slow answer (0.95 s > 0.7 s) excludes a...
    policy.route_stats[("json", "a")].latency_ewma_s = None
    drive(policy, Task("j1", "json"), slow, clock)
    res = drive(policy, Task("late", "json"), slow, clock)
    # ...and b's profile (0.8 s) is over the 0.7 s limit too
    assert res.skips == [("p", "preview"), ("a", "latency"), ("b", "latency")]
    assert res.error == "no_candidate"
    # but only for health.latency_cooldown_s: then the estimate is forgotten and a is
    # called again (one slow sample never excludes a model for good).
    clock.advance(cfg.health.latency_cooldown_s - 1.0)
    assert drive(policy, Task("still", "json"), slow, clock).skips[1] == ("a", "latency")
    clock.advance(1.0)
    back = drive(policy, Task("back", "json"), ScriptedProvider({}), clock)
    assert back.model == "a" and back.skips == [("p", "preview")]


def test_open_breaker_is_skipped() -> None:
    data = tiny_config().model_dump()
    data["breaker"] = {
        "consecutive_failures": 2,
        "open_base_s": 60,
        "jitter": 0.0,
        "min_requests": 2,
        "window": 2,
    }
    cfg = config_from_dict(data)
    policy = RoutingPolicy(cfg)
    clock = FakeClock()
    prov = ScriptedProvider({"a": ["server_error", "server_error"]})
    first = drive(policy, Task("t1", "json"), prov, clock)
    assert first.model == "b"
    second = drive(policy, Task("t2", "json"), prov, clock)
    assert ("a", "breaker_open") in second.skips and second.model == "b"
    clock.advance(60)
    third = drive(policy, Task("t3", "json"), prov, clock)  # half-open probe succeeds
    assert third.model == "a" and third.skips == [("p", "preview")]


def test_budget_cap_skips_and_counts_rejections() -> None:
    cfg = tiny_config(budget={"daily_cap_usd": 0.025})
    policy = RoutingPolicy(cfg)
    clock = FakeClock()
    prov = ScriptedProvider({})
    results = [drive(policy, Task(f"t{i}", "json"), prov, clock) for i in range(4)]
    assert [r.model for r in results] == ["a", "a", None, None]
    assert results[2].skips == [("p", "preview"), ("a", "budget"), ("b", "budget")]
    assert policy.ledger.rejections == 4 and policy.spend_usd == pytest.approx(0.02)


def test_retry_after_is_waited_when_it_fits() -> None:
    policy = RoutingPolicy(tiny_config())
    run = policy.start(Task("t", "json"), 0.0)
    call = run.next_action(0.0)
    assert isinstance(call, Call) and call.model == "a"
    nxt = run.record(Outcome(ErrorKind.RATE_LIMITED, 0.05, retry_after_s=3.0), 0.05)
    assert isinstance(nxt, Wait) and nxt.seconds >= 3.0


def test_retry_after_beyond_the_deadline_falls_back_now() -> None:
    policy = RoutingPolicy(tiny_config())
    run = policy.start(Task("t", "json"), 0.0)
    run.next_action(0.0)
    nxt = run.record(Outcome(ErrorKind.RATE_LIMITED, 0.05, retry_after_s=30.0), 0.05)
    assert isinstance(nxt, Call) and nxt.model == "b"


def test_no_attempt_outlives_the_deadline() -> None:
    policy = RoutingPolicy(tiny_config())  # max latency 10 s, attempt timeout 2 s
    run = policy.start(Task("t", "json"), 100.0)
    call = run.next_action(100.0)
    assert call.timeout_s == 2.0
    # pretend the task has been busy until 9 s into its SLA
    run.record(Outcome(ErrorKind.SERVER_ERROR, 0.1), 109.0)
    run2 = policy.start(Task("u", "json"), 0.0)
    run2.next_action(0.0)
    act = run2.record(Outcome(ErrorKind.TIMEOUT, 2.0), 9.4)
    # 0.6 s left: a (EWMA 2.0 s) and b (0.8 s) no longer fit
    assert isinstance(act, Finish) and act.result.error == "deadline"
    assert act.result.skips[-1] == ("b", "deadline")


def test_timeouts_are_clamped_to_the_time_left() -> None:
    data = tiny_config().model_dump()
    data["routes"]["json"]["attempt_timeout_ms"] = 5000
    data["routes"]["json"]["max_latency_ms"] = 6000
    policy = RoutingPolicy(config_from_dict(data))
    run = policy.start(Task("t", "json"), 0.0)
    run.next_action(0.0)
    act = run.record(Outcome(ErrorKind.BAD_REQUEST, 4.5), 4.5)
    assert isinstance(act, Call) and act.model == "b" and act.timeout_s == pytest.approx(1.5)


def test_backoff_bounds_full_equal_none() -> None:
    for jitter, lo, hi in (("full", 0.0, 1.0), ("equal", 0.5, 1.0), ("none", 1.0, 1.0)):
        data = tiny_config().model_dump()
        data["routes"]["json"]["backoff"] = {"base_s": 0.5, "cap_s": 1.0, "jitter": jitter}
        data["routes"]["json"]["attempts_per_model"] = 4
        data["routes"]["json"]["max_latency_ms"] = 100_000
        data["routes"]["json"]["attempt_timeout_ms"] = 1000
        data["breaker"] = {"consecutive_failures": 10_000, "window": 1000, "min_requests": 1000}
        policy = RoutingPolicy(config_from_dict(data), seed=1)
        for i in range(50):
            run = policy.start(Task(f"t{i}", "json"), 0.0)
            run.next_action(0.0)
            w1 = run.record(Outcome(ErrorKind.SERVER_ERROR, 0.0), 0.0)
            run.next_action(0.0)
            w2 = run.record(Outcome(ErrorKind.SERVER_ERROR, 0.0), 0.0)
            run.next_action(0.0)
            w3 = run.record(Outcome(ErrorKind.SERVER_ERROR, 0.0), 0.0)
            assert 0.5 * lo <= w1.seconds <= 0.5 * hi  # base * 2**0
            assert lo <= w2.seconds <= hi  # base * 2**1 = 1.0 = cap
            assert lo <= w3.seconds <= hi  # capped


def test_score_ordering_puts_the_free_model_first() -> None:
    data = tiny_config(environment="staging").model_dump()
    data["routes"]["json"]["chain"] = ["b", "a", "p"]
    data["routes"]["json"]["ordering"] = "score"
    res, prov, _ = route(config_from_dict(data))
    assert prov.calls[0][0] == "p"


def test_driver_misuse_is_reported() -> None:
    policy = RoutingPolicy(tiny_config())
    run = policy.start(Task("t", "json"), 0.0)
    run.next_action(0.0)
    with pytest.raises(RuntimeError, match="a call is in flight"):
        run.next_action(0.0)


def test_cost_per_success_reported() -> None:
    policy = RoutingPolicy(tiny_config())
    clock = FakeClock()
    prov = ScriptedProvider({"a": ["server_error", "server_error"]})
    drive(policy, Task("t1", "json"), prov, clock)  # a, a, then b: 0.04
    drive(policy, Task("t2", "json"), prov, clock)  # a: 0.01
    assert policy.cost_per_success == pytest.approx(0.05 / 2)


def _with_route(**route_kw):
    data = tiny_config().model_dump()
    data["routes"]["json"].update(route_kw)
    return config_from_dict(data)


def test_first_token_timeout_and_refused_connection_fall_back_at_once() -> None:
    for kind in ("first_token_timeout", "connect"):
        res, prov, _ = route(scripts={"a": [kind], "b": ["ok"]})
        assert [m for m, _ in prov.calls] == ["a", "b"], kind
        assert res.model == "b"


def test_retry_on_decides_which_kinds_retry_on_the_same_model() -> None:
    res, prov, _ = route(scripts={"a": ["server_error", "ok"]})
    assert [m for m, _ in prov.calls] == ["a", "a"]  # 5xx retries by default
    cfg = _with_route(retry_on=["timeout"])
    res, prov, _ = route(cfg, {"a": ["server_error"], "b": ["ok"]})
    assert [m for m, _ in prov.calls] == ["a", "b"] and res.model == "b"
    cfg = _with_route(retry_on=["first_token_timeout"])
    res, prov, _ = route(cfg, {"a": ["first_token_timeout", "ok"]})
    assert [m for m, _ in prov.calls] == ["a", "a"] and res.model == "a"


def test_retry_after_on_503_is_honoured() -> None:
    policy = RoutingPolicy(tiny_config(), seed=0)
    run = policy.start(Task("t", "json"), 0.0)
    call = run.next_action(0.0)
    action = run.record(Outcome(ErrorKind.SERVER_ERROR, 0.1, retry_after_s=3.0), 0.1)
    assert isinstance(call, Call) and isinstance(action, Wait) and action.seconds >= 3.0


def test_a_wrong_answer_is_retried_without_backoff_and_never_trips_the_breaker() -> None:
    cfg = _with_route(attempts_per_model=10)
    policy = RoutingPolicy(cfg, seed=0)
    run = policy.start(Task("t", "json"), 0.0)
    run.next_action(0.0)
    now = 0.0
    for _ in range(9):
        now += 0.1
        action = run.record(Outcome(ErrorKind.VALIDATION, 0.1), now)
        assert isinstance(action, Wait) and action.seconds == 0.0
        action = run.next_action(now)
        assert isinstance(action, Call) and action.model == "a"
    assert policy.breakers[policy.model_index["a"]].state == "closed"
    st = policy.route_stats[("json", "a")]
    assert st.q_n == pytest.approx(sum(0.995**i for i in range(9)))


def test_min_observed_completion_skips_for_quality_then_readmits() -> None:
    data = tiny_config().model_dump()
    data["routes"]["json"].update(min_observed_completion=0.5, attempts_per_model=1)
    data["quality"] = {"prior_weight": 2, "min_observations": 5, "window": 100, "cooldown_s": 60}
    cfg = config_from_dict(data)
    policy = RoutingPolicy(cfg, seed=0)
    clock = FakeClock()
    bad = ScriptedProvider({"a": ["validation"] * 5})
    for i in range(5):
        drive(policy, Task(f"w{i}", "json"), bad, clock)
    assert policy.observed_completion("json", "a") < 0.5
    res = drive(policy, Task("q", "json"), ScriptedProvider({}), clock)
    assert res.skips == [("p", "preview"), ("a", "quality")] and res.model == "b"
    clock.advance(59.0)
    res = drive(policy, Task("q2", "json"), ScriptedProvider({}), clock)
    assert ("a", "quality") in res.skips
    clock.advance(1.0)  # the cool-down is over: a's estimate is forgotten, it is tried
    res = drive(policy, Task("q3", "json"), ScriptedProvider({}), clock)
    assert res.model == "a" and res.skips == [("p", "preview")]
    assert policy.observed_completion("json", "a") is None  # 1 observation < 5


def test_score_ordering_uses_observed_completion_once_there_are_enough() -> None:
    data = tiny_config().model_dump()
    data["routes"]["json"].update(ordering="score", attempts_per_model=1)
    data["quality"] = {"min_observations": 3, "prior_weight": 1}
    cfg = config_from_dict(data)
    policy = RoutingPolicy(cfg, seed=0)
    before = policy.scores("json", ["a", "b"])
    assert before["a"] > before["b"]  # 0.9/$0.01/0.5 s beats 0.8/$0.02/0.8 s
    clock = FakeClock()
    for i in range(6):  # a answers wrongly on this route, b is called and succeeds
        drive(policy, Task(f"s{i}", "json"), ScriptedProvider({"a": ["validation"]}), clock)
    after = policy.scores("json", ["a", "b"])
    assert after["a"] < after["b"]
    res = drive(policy, Task("next", "json"), ScriptedProvider({}), clock)
    assert res.model == "b" and res.attempts[0].model == "b"


def test_abort_gives_back_the_hold_and_the_probe_slot() -> None:
    data = tiny_config().model_dump()
    data["breaker"] = {"consecutive_failures": 1, "min_requests": 1, "window": 1}
    cfg = config_from_dict(data)
    policy = RoutingPolicy(cfg, seed=0)
    a = policy.model_index["a"]
    run = policy.start(Task("t", "json"), 0.0)
    run.next_action(0.0)
    run.record(Outcome(ErrorKind.SERVER_ERROR, 0.1), 0.1)  # trips a's breaker
    breaker = policy.breakers[a]
    t = breaker.open_until
    probe_run = policy.start(Task("probe", "json"), t)
    call = probe_run.next_action(t)
    assert call.model == "a" and breaker.probes_in_flight == 1
    assert policy.ledger.reserved_total > 0
    result = probe_run.abort(t + 1.0, "cancelled")
    assert result.error == "cancelled" and not result.success
    assert result.attempts[-1].kind == "cancelled" and result.cost_usd == 0.0
    assert breaker.probes_in_flight == 0 and breaker.allows(t + 1.0)
    assert policy.ledger.reserved_total == 0.0 and policy.ledger.holds == {}
    assert probe_run.abort(t + 2.0) is result  # idempotent


def test_a_timeout_cut_short_by_the_task_deadline_does_not_count() -> None:
    data = tiny_config().model_dump()
    data["routes"]["json"].update(max_latency_ms=1000, attempt_timeout_ms=5000)
    data["breaker"] = {"consecutive_failures": 1, "min_requests": 1, "window": 1}
    policy = RoutingPolicy(config_from_dict(data), seed=0)
    run = policy.start(Task("t", "json"), 0.0)
    call = run.next_action(0.0)
    assert call.timeout_s == pytest.approx(1.0)  # clamped to the SLA
    run.record(Outcome(ErrorKind.TIMEOUT, 1.0), 1.0)
    assert policy.breakers[policy.model_index["a"]].state == "closed"


def test_a_prompt_larger_than_the_context_window_skips_the_model() -> None:
    data = tiny_config().model_dump()
    data["models"][0]["context_window"] = 8_000
    cfg = config_from_dict(data)
    res, prov, _ = route(cfg, task=Task("big", "json", prompt_tokens=8_001))
    assert res.skips == [("p", "preview"), ("a", "context")] and res.model == "b"
    res, prov, _ = route(cfg, task=Task("fits", "json", prompt_tokens=8_000))
    assert res.model == "a"
