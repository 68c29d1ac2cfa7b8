"""The replay's outage timeline: the bands drawn are the world's outages, per provider.

Checked on the figure's data (the rows and the artists' spans), not its pixels.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from router import RouterConfig, config_from_dict
from sim.engine.plots import outage_figure, outage_rows, run_end_s
from sim.engine.replays import _HORIZON_MARGIN_S, replay, trace_key
from sim.traces.synth import synthesize
from sim.traces.tasks import replay_columns
from sim.world.scenario import Scenario, parse_scenario

SEED = 5


def _model(provider: str, outage: dict | None) -> dict:
    spec = {
        "provider": provider,
        "completion": {"default": 0.9},
        "latency": {"dist": "fixed", "value_s": 2.0},
        "fail_fast_latency_s": 0.2,
        "cost_per_task": 0.01,
    }
    if outage is not None:
        spec["outage"] = outage
    return spec


def _scenario(with_outages: bool) -> Scenario:
    # Fixed schedule: up 900 s, down 300 s, repeating (the phase is drawn from the seed).
    schedule = {
        "time_between": {"dist": "fixed", "value_s": 900},
        "duration": {"dist": "fixed", "value_s": 300},
    }
    return parse_scenario(
        {
            "providers": {"acme": {"outage": schedule}} if with_outages else {},
            "models": {
                "a-small": _model("acme", {"shared": True} if with_outages else None),
                "a-big": _model("acme", {"shared": True} if with_outages else None),
                "b-own": _model("bolt", schedule if with_outages else None),
                "b-up": _model("bolt", None),
                "unrouted": _model("zed", schedule if with_outages else None),
            },
        }
    )


def _config() -> RouterConfig:
    models = [
        {"id": m, "provider": p, "cost_per_task": 0.01, "avg_latency_ms": 2000}
        for m, p in (
            ("a-small", "acme"),
            ("a-big", "acme"),
            ("b-own", "bolt"),
            ("b-up", "bolt"),
            ("unrouted", "zed"),
        )
    ]
    route = {"max_cost_per_task": 1.0, "max_latency_ms": 60_000, "attempts_per_model": 2}
    return config_from_dict(
        {
            "models": models,
            "routes": {
                "default": {"chain": ["a-small", "b-own", "b-up"], **route},
                "json": {"chain": ["a-big", "b-up"], **route},
            },
            "default_route": "default",
        }
    )


@pytest.fixture(scope="module")
def cols():  # noqa: ANN201
    # ~1 h of traffic: a short trace, where the old figure was a 6-point line.
    return replay_columns(
        synthesize(n_tasks=600, rate_per_s=0.17, mix={"json": 0.5, "regex": 0.5}, seed=2)
    )


def test_the_bands_are_the_worlds_outages_per_provider(cols, tmp_path: Path) -> None:  # noqa: ANN001
    config, scenario = _config(), _scenario(True)
    out = tmp_path / "out"
    report = replay(
        traces=[("t.parquet", cols)], config=config, scenario=scenario, seed=SEED, out=out
    )
    assert (out / "outage_timeline.png").stat().st_size > 10_000
    run = report.runs[0]
    end = run_end_s(run)
    assert 3000 < end < 4500

    # The world the run met (timelines depend on the seed only).
    ids = [m.id for m in config.models]
    horizon = cols.arrival_s[-1] + _HORIZON_MARGIN_S
    world = scenario.realize(SEED, horizon, ids, trace_key=trace_key(cols))

    def expected(model: str) -> tuple[tuple[float, float], ...]:
        return tuple(
            (max(s, 0.0), min(e, end))
            for m, s, e in world.outage_intervals()
            if m == model and s < end
        )

    rows = outage_rows(run, config)
    assert [(r.label, r.models) for r in rows] == [
        ("acme", ("a-small", "a-big")),  # one shared process: one band
        ("bolt: b-own", ("b-own",)),  # bolt's models differ: a band each
        ("bolt: b-up", ("b-up",)),
    ]  # "unrouted" is in no route: not drawn
    acme, own, up = rows
    assert acme.intervals == expected("a-small") == expected("a-big")
    assert own.intervals == expected("b-own")
    assert up.intervals == ()
    # A fixed schedule over ~1 h: 2-4 outages of 300 s each (the first/last may be cut).
    for band in (acme, own):
        assert 2 <= len(band.intervals) <= 4
        inner = [e - s for s, e in band.intervals if 0 < s and e < end]
        assert inner and all(d == pytest.approx(300.0) for d in inner)
        assert acme.intervals != own.intervals  # two processes, two phases

    # What is drawn: the red spans of the top panel, in minutes, are the rows' intervals.
    fig = outage_figure(report.runs[:1], config)
    try:
        top = fig.axes[0]
        drawn = [_spans(coll) for coll in top.collections]
        assert drawn == [[pytest.approx(iv) for iv in band.intervals] for band in rows]
        assert [t.get_text() for t in top.get_yticklabels()] == [
            "acme",
            "bolt: b-own",
            "bolt: b-up",
        ]
        assert "no outage in this run" not in [t.get_text() for t in top.texts]
        assert top.get_xlim() == pytest.approx((0.0, end / 60.0))
    finally:
        plt.close(fig)


def _spans(coll) -> list[tuple[float, float]]:  # noqa: ANN001
    """The (start_s, end_s) of each rectangle of a broken_barh collection, in seconds."""
    out = []
    for path in coll.get_paths():
        xs = path.vertices[:, 0]
        out.append((float(xs.min()) * 60.0, float(xs.max()) * 60.0))
    return out


def test_a_run_without_outages_says_so(cols) -> None:  # noqa: ANN001
    config = _config()
    report = replay(
        traces=[("t.parquet", cols)], config=config, scenario=_scenario(False), seed=SEED
    )
    rows = outage_rows(report.runs[0], config)
    assert [(r.label, r.intervals) for r in rows] == [("acme", ()), ("bolt", ())]
    fig = outage_figure(report.runs[:1], config)
    try:
        assert "no outage in this run" in [t.get_text() for t in fig.axes[0].texts]
    finally:
        plt.close(fig)
