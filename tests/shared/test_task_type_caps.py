"""Per-task-type daily caps in the ledger and the config (the shared stores' side is
in test_contract.py, against both backends)."""

from __future__ import annotations

import math

import pytest

from router import Budget, SpendLedger, config_from_dict
from router.errors import ConfigError


def test_a_task_type_cap_refuses_that_type_only_and_counts_holds() -> None:
    lg = SpendLedger(Budget(per_task_type_usd={"json": 0.1}), ["a", "b"], ["pa", "pb"])
    assert lg.can_afford(0, 0.06, 0.0, "json")
    hold = lg.reserve(0, 0.06, 0.0, "json")
    assert not lg.can_afford(1, 0.05, 0.0, "json")  # 0.06 in flight + 0.05 > 0.1
    assert lg.can_afford(1, 0.04, 0.0, "json")
    assert lg.can_afford(1, 5.0, 0.0, "sql")  # another type: no cap
    assert lg.can_afford(1, 5.0, 0.0)  # no task type given: its cap is not checked
    lg.settle(hold, 0.06, "json", 1.0)
    assert lg.reserved_task_type == {} and math.isclose(lg.spent_task_type["json"], 0.06)
    assert not lg.can_afford(0, 0.05, 2.0, "json")
    lg.release(lg.reserve(0, 0.04, 2.0, "json"))  # a release books nothing
    assert lg.can_afford(0, 0.04, 3.0, "json")
    assert lg.can_afford(0, 0.05, 86_400.0 + 1, "json")  # a new day: the cap is fresh


def test_a_task_type_cap_alerts_with_its_scope() -> None:
    lg = SpendLedger(Budget(per_task_type_usd={"json": 1.0}, alert_fractions=[0.5]), ["a"], ["pa"])
    lg.settle(lg.reserve(0, 0.3, 0.0, "sql"), 0.3, "sql", 0.0)
    assert lg.alerts == []
    lg.settle(lg.reserve(0, 0.6, 1.0, "json"), 0.6, "json", 1.0)
    assert [(a.scope, a.key, a.fraction) for a in lg.alerts] == [("task_type", "json", 0.5)]


def _config(caps: dict[str, float]) -> dict:
    return {
        "models": [{"id": "a", "provider": "p", "cost_per_task": 0.01, "avg_latency_ms": 10}],
        "routes": {"json": {"chain": ["a"], "max_cost_per_task": 1.0, "max_latency_ms": 9000}},
        "default_route": "json",
        "aliases": {"sql": "json"},
        "budget": {"per_task_type_usd": caps},
    }


def test_the_config_names_task_types_it_knows() -> None:
    config = config_from_dict(_config({"json": 1.0, "sql": 2.0}))  # a route, an alias
    assert config.budget.per_task_type_usd == {"json": 1.0, "sql": 2.0}
    with pytest.raises(ConfigError, match=r"budget\.per_task_type_usd\.jsno: unknown task type"):
        config_from_dict(_config({"jsno": 1.0}))


def test_remote_spend_of_a_task_type_counts_against_its_cap() -> None:
    """What other replicas spent on a task type (the simulator's replica model hands it
    in with apply_remote) counts against that type's cap only."""
    lg = SpendLedger(Budget(per_task_type_usd={"json": 0.1}), ["a"], ["pa"])
    lg.apply_remote(0, 0.08, 0.0, "json")
    assert not lg.can_afford(0, 0.03, 1.0, "json")
    assert lg.can_afford(0, 0.03, 1.0, "sql")
    lg.apply_remote(0, -0.08, 2.0, "json")  # the remote hold ended without spending
    assert lg.can_afford(0, 0.1, 3.0, "json")
    seen: list[tuple[str, str]] = []
    lg.observer = lambda event, *rest: seen.append((event.value, rest[4]))
    lg.release(lg.reserve(0, 0.01, 4.0, "json"))
    assert seen == [("reserved", "json"), ("released", "json")]
