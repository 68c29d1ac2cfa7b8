"""The article's score and its zero-cost treatment; cost per success."""

from __future__ import annotations

import math

import pytest

from router import RoutingPolicy, cost_per_success, load_seed_config, score


def test_article_formula() -> None:
    assert score(0.75, 0.0003, 1450) == pytest.approx(0.75 / 0.0003 / 1450)


def test_zero_cost_uses_the_floor() -> None:
    assert score(0.65, 0.0, 3000) == pytest.approx(0.65 / 1e-6 / 3000)
    assert score(0.65, 0.0, 3000, zero_cost_floor_usd=1e-4) == pytest.approx(0.65 / 1e-4 / 3000)
    assert math.isfinite(score(1.0, 0.0, 1.0))


def test_free_models_rank_among_themselves_by_completion_over_latency() -> None:
    fast = score(0.5, 0.0, 1000)
    slow_better = score(0.6, 0.0, 3000)
    assert fast > slow_better


def test_zero_completion_scores_zero_and_unknown_latency_is_pessimistic() -> None:
    assert score(0.0, 0.0, 100) == 0.0
    assert score(0.8, 0.01, None, fallback_latency_ms=5000) == pytest.approx(0.8 / 0.01 / 5000)


def test_seed_regex_route_scores() -> None:
    s = RoutingPolicy(load_seed_config()).scores("regex")
    assert list(sorted(s, key=s.get, reverse=True)) == [
        "ring-2.6",
        "deepseek-v4-flash",
        "grok-4.20",
    ]


def test_cost_per_success() -> None:
    assert cost_per_success(1.0, 4) == 0.25
    assert cost_per_success(1.0, 0) == math.inf
    assert cost_per_success(0.0, 0) == 0.0
