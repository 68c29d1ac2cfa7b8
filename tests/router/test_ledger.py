"""Spend ledger: caps with reservations, alerts at each fraction once a day, day roll."""

from __future__ import annotations

import pytest

from router import Budget, SpendLedger


def ledger(**kw) -> SpendLedger:
    return SpendLedger(Budget(**kw), ["a", "b"], ["pa", "pb"])


def test_reservations_count_against_the_cap() -> None:
    lg = ledger(daily_cap_usd=1.0)
    assert lg.can_afford(0, 0.6, 0.0)
    lg.reserve(0, 0.6)
    assert not lg.can_afford(1, 0.5, 0.0)  # 0.6 in flight + 0.5 > 1.0
    assert lg.can_afford(1, 0.4, 0.0)
    lg.settle(0, 0.6, 0.6, "json", 1.0)
    assert lg.spent_total == pytest.approx(0.6) and lg.reserved_total == pytest.approx(0.0)


def test_per_model_and_per_provider_caps() -> None:
    lg = ledger(per_model_usd={"a": 0.1}, per_provider_usd={"pb": 0.2})
    assert not lg.can_afford(0, 0.11, 0.0)
    assert lg.can_afford(0, 0.1, 0.0)
    lg.reserve(1, 0.15)
    assert not lg.can_afford(1, 0.06, 0.0)


def test_alerts_fire_once_per_fraction_per_day() -> None:
    lg = ledger(daily_cap_usd=10.0, alert_fractions=[0.5, 0.8, 1.0])
    for i in range(9):
        lg.reserve(0, 1.0)
        lg.settle(0, 1.0, 1.0, "json", float(i))
    assert [(a.scope, a.fraction, a.spent_usd) for a in lg.alerts] == [
        ("global", 0.5, 5.0),
        ("global", 0.8, 8.0),
    ]
    lg.reserve(0, 1.0)
    lg.settle(0, 1.0, 1.0, "json", 10.0)
    assert lg.alerts[-1].fraction == 1.0 and len(lg.alerts) == 3


def test_a_new_day_resets_spend_and_keeps_history() -> None:
    lg = ledger(daily_cap_usd=1.0, alert_fractions=[0.5])
    lg.reserve(0, 0.7)
    lg.settle(0, 0.7, 0.7, "sql", 100.0)
    assert not lg.can_afford(0, 0.5, 200.0)
    assert lg.can_afford(0, 0.5, 86_400.0 + 1)
    assert lg.history[0].total_usd == pytest.approx(0.7)
    assert lg.history[0].by_task_type == {"sql": pytest.approx(0.7)}
    lg.reserve(0, 0.6)
    lg.settle(0, 0.6, 0.6, "sql", 86_500.0)
    assert [(a.day, a.fraction) for a in lg.alerts] == [(0, 0.5), (1, 0.5)]
