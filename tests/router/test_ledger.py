"""Spend ledger: caps with reservations, alerts at each fraction once a day, day roll."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import Budget, SpendLedger


def ledger(**kw) -> SpendLedger:
    return SpendLedger(Budget(**kw), ["a", "b"], ["pa", "pb"])


def test_reservations_count_against_the_cap() -> None:
    lg = ledger(daily_cap_usd=1.0)
    assert lg.can_afford(0, 0.6, 0.0)
    hold = lg.reserve(0, 0.6)
    assert not lg.can_afford(1, 0.5, 0.0)  # 0.6 in flight + 0.5 > 1.0
    assert lg.can_afford(1, 0.4, 0.0)
    lg.settle(hold, 0.6, "json", 1.0)
    assert lg.spent_total == pytest.approx(0.6) and lg.reserved_total == 0.0
    lg.settle(hold, 0.6, "json", 1.0)  # ending a hold twice books nothing more
    assert lg.spent_total == pytest.approx(0.6) and lg.holds == {}


def test_per_model_and_per_provider_caps() -> None:
    lg = ledger(per_model_usd={"a": 0.1}, per_provider_usd={"pb": 0.2})
    assert not lg.can_afford(0, 0.11, 0.0)
    assert lg.can_afford(0, 0.1, 0.0)
    lg.reserve(1, 0.15)
    assert not lg.can_afford(1, 0.06, 0.0)


def test_alerts_fire_once_per_fraction_per_day() -> None:
    lg = ledger(daily_cap_usd=10.0, alert_fractions=[0.5, 0.8, 1.0])
    seen = []
    lg.listeners.append(seen.append)
    for i in range(9):
        lg.settle(lg.reserve(0, 1.0), 1.0, "json", float(i))
    assert [(a.scope, a.fraction, a.spent_usd) for a in lg.alerts] == [
        ("global", 0.5, 5.0),
        ("global", 0.8, 8.0),
    ]
    lg.settle(lg.reserve(0, 1.0), 1.0, "json", 10.0)
    assert lg.alerts[-1].fraction == 1.0 and len(lg.alerts) == 3
    assert seen == lg.alerts  # every alert reached the listener, in order


def test_a_new_day_resets_spend_and_keeps_history() -> None:
    lg = ledger(daily_cap_usd=1.0, alert_fractions=[0.5])
    lg.settle(lg.reserve(0, 0.7), 0.7, "sql", 100.0)
    assert not lg.can_afford(0, 0.5, 200.0)
    assert lg.can_afford(0, 0.5, 86_400.0 + 1)
    assert lg.history[0].total_usd == pytest.approx(0.7)
    assert lg.history[0].by_task_type == {"sql": pytest.approx(0.7)}
    lg.settle(lg.reserve(0, 0.6), 0.6, "sql", 86_500.0)
    assert [(a.day, a.fraction) for a in lg.alerts] == [(0, 0.5), (1, 0.5)]


def test_release_books_nothing_and_frees_the_cap() -> None:
    lg = ledger(daily_cap_usd=1.0)
    hold = lg.reserve(0, 0.9, 0.0)
    assert not lg.can_afford(1, 0.2, 0.0)
    lg.release(hold)
    assert lg.reserved_total == 0.0 and lg.spent_total == 0.0 and lg.can_afford(1, 1.0, 0.0)


def test_rollover_drops_stale_reservations_only() -> None:
    lg = ledger(daily_cap_usd=1.0)
    lg.can_afford(0, 0.1, 0.0)  # day 0 starts
    leaked = lg.reserve(0, 0.8, 100.0)  # a driver died mid-call: never settled
    in_flight = lg.reserve(1, 0.1, 86_399.0)  # a call running across midnight
    assert not lg.can_afford(0, 0.5, 86_399.5)
    assert lg.can_afford(0, 0.5, 86_400.0)  # the new day drops the leak
    assert leaked not in lg.holds and in_flight in lg.holds and lg.stale_dropped == 1
    assert lg.reserved_total == pytest.approx(0.1)
    lg.settle(in_flight, 0.1, "json", 86_401.0)
    assert lg.reserved_total == 0.0 and lg.spent_total == pytest.approx(0.1)


# -- try_reserve: the policy's one-call check-and-hold ------------------------------------

_CAP = st.none() | st.sampled_from([0.5, 1.0, 2.5])
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release"]),
        st.integers(0, 1),  # model
        st.sampled_from([0.0, 0.1, 0.25, 0.4, 0.7]),  # amount / actual cost
        st.sampled_from(["sql", "json", ""]),
        st.sampled_from([0.0, 10.0, 40_000.0, 90_000.0]),  # time step (some roll the day)
        st.integers(0, 7),  # which hold to end
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    total=_CAP,
    model_a=_CAP,
    provider_b=_CAP,
    sql=_CAP,
    fractions=st.sampled_from([[0.5, 1.0], [0.25, 0.5, 0.75], [1.0]]),
    ops=_OPS,
)
def test_try_reserve_is_can_afford_then_reserve(
    total: float | None,
    model_a: float | None,
    provider_b: float | None,
    sql: float | None,
    fractions: list[float],
    ops: list[tuple[str, int, float, str, float, int]],
) -> None:
    """Two ledgers fed the same operations, one through can_afford + reserve, one through
    try_reserve, stay equal in every decision, hold number, figure and alert; and what is
    reserved is always the sum of the holds (exactly 0 when there are none)."""
    budget = {
        "daily_cap_usd": total,
        "per_model_usd": {} if model_a is None else {"a": model_a},
        "per_provider_usd": {} if provider_b is None else {"pb": provider_b},
        "per_task_type_usd": {} if sql is None else {"sql": sql},
        "alert_fractions": fractions,
    }
    two, one = ledger(**budget), ledger(**budget)
    now = 0.0
    for op, model, amount, task_type, step, pick in ops:
        now += step
        if op == "reserve":
            if two.can_afford(model, amount, now, task_type):
                expected = two.reserve(model, amount, now, task_type)
            else:
                expected = -1
            assert one.try_reserve(model, amount, now, task_type) == expected
        elif two.holds:
            hold = sorted(two.holds)[pick % len(two.holds)]
            if op == "settle":
                two.settle(hold, amount, task_type, now)
                one.settle(hold, amount, task_type, now)
            else:
                two.release(hold)
                one.release(hold)
        for lg in (two, one):
            held = sum(entry[1] for entry in lg.holds.values())
            assert lg.reserved_total == pytest.approx(held, abs=1e-9)
            if not lg.holds:
                assert lg.reserved_total == 0.0 and set(lg.reserved_model) == {0.0}
        assert one.holds == two.holds
        assert (one.spent_total, one.reserved_total) == (two.spent_total, two.reserved_total)
        assert (one.spent_model, one.reserved_model) == (two.spent_model, two.reserved_model)
        assert one.spent_task_type == two.spent_task_type
        assert one.alerts == two.alerts
        assert one.rejections == two.rejections


def test_alerts_still_fire_at_each_threshold_when_checked_only_past_it() -> None:
    """settle checks a cap's alerts only once spend reaches its next threshold: spend
    that jumps past several thresholds at once raises each of them, in order, once."""
    lg = ledger(daily_cap_usd=10.0, per_model_usd={"b": 4.0}, alert_fractions=[0.25, 0.5, 1.0])
    lg.settle(lg.reserve(1, 0.5), 0.5, "sql", 1.0)  # 5% of the global, 12.5% of b's
    assert lg.alerts == []
    lg.settle(lg.reserve(1, 2.5), 2.5, "sql", 2.0)  # b: 3.0 of 4.0 (past 25% and 50%)
    assert [(a.scope, a.fraction) for a in lg.alerts] == [
        ("global", 0.25),
        ("model", 0.25),
        ("model", 0.5),
    ]
    lg.settle(lg.reserve(0, 7.0), 7.0, "sql", 3.0)  # global 10.0: 50% and 100%
    assert [(a.scope, a.fraction) for a in lg.alerts][3:] == [("global", 0.5), ("global", 1.0)]
