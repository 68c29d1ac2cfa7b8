"""Figures draw at most a few thousand points a curve, each an exact point of the data."""

from __future__ import annotations

import numpy as np

from sim.engine.plots import cdf_points, spend_points


def test_a_short_run_is_drawn_point_by_point() -> None:
    lat = np.array([3.0, 1.0, 2.0])
    x, y = cdf_points(lat)
    assert x.tolist() == [1.0, 2.0, 3.0] and y.tolist() == [1 / 3, 2 / 3, 1.0]
    t, spend = spend_points(np.array([5.0, 1.0, 5.0]), np.array([0.1, 0.2, 0.4]))
    assert t.tolist() == [1.0, 5.0, 5.0] and np.allclose(spend, [0.2, 0.3, 0.7])


def test_a_long_run_is_drawn_with_exact_points_at_most_max_points() -> None:
    rng = np.random.default_rng(0)
    lat = rng.lognormal(0.0, 1.0, 100_001)
    x, y = cdf_points(lat, 1_000)
    assert x.size == y.size <= 1_000
    ref = np.sort(lat)
    assert x[0] == ref[0] and x[-1] == ref[-1] and y[-1] == 1.0
    ranks = np.round(y * lat.size).astype(int) - 1
    assert np.array_equal(x, ref[ranks])  # each point is the empirical CDF itself
    started = rng.uniform(0.0, 86_400.0, 100_001)
    cost = rng.uniform(0.0, 0.01, 100_001)
    t, spend = spend_points(started, cost, 500)
    assert t.size == spend.size == 500
    assert t[-1] == started.max() and np.isclose(spend[-1], cost.sum())
    for i in (0, 137, 499):  # the spend of the tasks started by each point's time
        assert np.isclose(spend[i], cost[started <= t[i]].sum())
