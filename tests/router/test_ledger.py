"""Spend ledger: caps with reservations, alerts at each fraction once a day, day roll."""

from __future__ import annotations

import pytest

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
