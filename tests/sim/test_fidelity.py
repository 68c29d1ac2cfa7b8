"""Fidelity: the live router against the twin agrees with the simulator on one trace.

300 tasks (the bench runs 1,000) at 1 task/s, the seed config, scenario and seed 0,
the twin at time scale 0.05 (about 15 s of wall time). Targets, as the bench's:
completion within 2 percentage points; cost per task, p50 and p95 latency within 10%.
"""

from __future__ import annotations

import pytest

from router import load_seed_config
from sim.twin.fidelity import (
    FIDELITY_KEYS,
    FidelityReport,
    fidelity_trace,
    run_fidelity,
    twin_config,
)
from sim.world.scenario import load_seed_scenario

# The recording runs in wall-clock time (see tests/conftest.py).
pytestmark = pytest.mark.realtime


@pytest.fixture(scope="module")
def report() -> FidelityReport:
    trace = fidelity_trace(300, rate_per_s=1.0, seed=0)
    return run_fidelity(load_seed_config(), load_seed_scenario(), trace, seed=0, time_scale=0.05)


def test_live_against_the_twin_meets_the_fidelity_targets(report: FidelityReport) -> None:
    line = report.line
    assert list(line) == list(FIDELITY_KEYS)
    assert report.live["tasks"] == report.sim["tasks"] == 300
    assert abs(line["completion_live"] - line["completion_sim"]) <= 0.02
    assert abs(line["cost_rel_err"]) <= 0.10
    assert abs(line["p50_rel_err"]) <= 0.10
    assert abs(line["p95_rel_err"]) <= 0.10
    # Not a stated target, but the same draws should fall back on the same tasks.
    assert abs(line["fallback_live"] - line["fallback_sim"]) <= 0.02


def test_the_twin_answered_every_live_call(report: FidelityReport) -> None:
    calls = sum(m["calls"] for m in report.live["per_model"].values())
    # Every attempt reached the twin and was answered as one of the scenario's kinds
    # (a timed-out attempt shows up as the client hanging up).
    assert sum(report.served.values()) == calls
    # Each completed task got one "ok". An ok answer can also cross a client's timeout
    # on the wire (service time within a millisecond of the attempt's timeout), so a
    # few more may have been sent than were accepted; never fewer.
    assert 0 <= report.served["ok"] - report.live["completed"] <= 3


def test_twin_config_scales_every_duration_and_points_at_the_twin() -> None:
    seed = load_seed_config()
    scaled = twin_config(seed, "http://127.0.0.1:9/v1", 0.05)
    json_route, grok = scaled.routes["json_parse"], scaled.model("grok-4.20")
    assert json_route.max_latency_ms == pytest.approx(250.0)
    assert json_route.attempt_timeout_ms == pytest.approx(150.0)
    assert json_route.backoff.base_s == pytest.approx(0.0125)
    assert json_route.backoff.cap_s == pytest.approx(0.4)
    assert scaled.breaker.open_base_s == pytest.approx(1.4)
    assert scaled.breaker.reprobe_s == pytest.approx(0.6)
    assert scaled.health.latency_cooldown_s == pytest.approx(3.0)
    assert scaled.breaker.open_cap_s == pytest.approx(30.0)
    assert grok.avg_latency_ms == pytest.approx(72.5)
    assert grok.endpoint is not None
    assert (grok.endpoint.base_url, grok.endpoint.model) == ("http://127.0.0.1:9/v1", "grok-4.20")
    assert (grok.cost_per_task, grok.completion_rate) == (0.0003, 0.75)
    with pytest.raises(ValueError, match="time_scale: expected a positive number"):
        twin_config(seed, "http://127.0.0.1:9/v1", 0.0)
