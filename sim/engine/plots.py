"""PNG figures of a replay: latency CDF, completion vs cost per model, spend over
time, and the outage timeline (a band per provider with its outages, and the tasks
completed, failed and fallen back over time).

Figures use matplotlib's non-interactive Agg backend and fixed metadata so the
same replay gives the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from router import RouterConfig  # noqa: E402

_META = {"Software": None}  # no version string: keeps files byte-identical across runs


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_META)
    plt.close(fig)


def write_figures(report, config: RouterConfig, out: Path) -> list[Path]:  # noqa: ANN001
    """Write the four figures of a :class:`~sim.engine.replays.ReplayReport` into ``out``."""
    runs = [r for r in report.runs if r.replication == 0]
    paths = [
        _latency_cdf(runs, out / "latency_cdf.png"),
        _completion_vs_cost(report.summary, config, out / "completion_vs_cost.png"),
        _spend_over_time(runs, out / "spend_over_time.png"),
        _outages(runs, config, out / "outage_timeline.png"),
    ]
    return paths


#: Points per curve at most. A figure is about 700 pixels wide, so more points draw
#: the same line, and a 10M-task run would hand matplotlib 10M of them (hundreds of MiB
#: of paths on top of the run's results).
MAX_POINTS = 2_000


def cdf_points(latency: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF of ``latency`` as (x, y): every point for up to ``max_points``
    values, else the exact points at ``max_points`` evenly spaced ranks (first and last
    included)."""
    lat = np.sort(latency)
    n = lat.size
    if n <= max_points:
        return lat, np.arange(1, n + 1) / n
    ranks = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return lat[ranks], (ranks + 1) / n


def spend_points(
    started: np.ndarray, cost: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative spend over start time as (t, spend): at every task for up to
    ``max_points`` tasks, else at ``max_points`` evenly spaced times (each point the
    exact spend of the tasks started by then), without sorting the tasks."""
    n = started.size
    if n <= max_points:
        order = np.argsort(started, kind="stable")
        return started[order], np.cumsum(cost[order])
    edges = np.linspace(float(started.min()), float(started.max()), max_points + 1)
    sums, _ = np.histogram(started, bins=edges, weights=cost)
    return edges[1:], np.cumsum(sums)


def _latency_cdf(runs, path: Path) -> Path:  # noqa: ANN001
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        lat = r.arrays["latency_s"][r.arrays["success"]]
        if lat.size:
            ax.plot(*cdf_points(lat), label=r.trace)
    ax.set_xlabel("task latency (s), completed tasks")
    ax.set_ylabel("share of tasks")
    ax.set_title("Latency CDF")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    _save(fig, path)
    return path


def _completion_vs_cost(summary, config: RouterConfig, path: Path) -> Path:  # noqa: ANN001
    fig, ax = plt.subplots(figsize=(7, 4))
    for mid, pm in summary["per_model"].items():
        calls = pm["calls"]
        if not calls:
            continue
        ok_rate = 1.0 - pm["error_rate"]
        cost = pm["spend"] / calls
        ax.scatter([cost], [ok_rate], s=20 + 200 * pm["share"])
        ax.annotate(mid, (cost, ok_rate), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xlabel("cost per call (USD)")
    ax.set_ylabel("successful calls / calls")
    ax.set_title("Completion vs cost per model (size: share of completed tasks)")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return path


def _spend_over_time(runs, path: Path) -> Path:  # noqa: ANN001
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        t, spend = spend_points(r.arrays["started_s"], r.arrays["cost_usd"])
        ax.plot(t / 3600.0, spend, label=r.trace)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("cumulative spend (USD)")
    ax.set_title("Spend over time")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    _save(fig, path)
    return path


@dataclass(frozen=True)
class OutageRow:
    """One band of the outage timeline: a provider (or the models of a provider that
    share one outage process) and its outage intervals within the run.

    ``intervals`` are ``(start_s, end_s)`` of the world's outages
    (:meth:`sim.world.providers.World.outage_intervals`) that start before ``end_s`` of
    the run, clipped to ``[0, end_s]``; empty when the provider was up throughout.
    """

    provider: str
    models: tuple[str, ...]
    label: str
    intervals: tuple[tuple[float, float], ...]


def run_end_s(run) -> float:  # noqa: ANN001
    """The end of a run's time axis: the last task's finish (1 s for an empty run)."""
    a = run.arrays
    if not a["started_s"].size:
        return 1.0
    return max(float((a["started_s"] + a["latency_s"]).max()), 1e-9)


def outage_rows(run, config: RouterConfig) -> list[OutageRow]:  # noqa: ANN001
    """The bands of ``run``'s outage timeline, one per provider of the routed models.

    Models come from the config's routes (the models the run could call), in catalog
    order, grouped by the config's ``provider``. Models of one provider with the same
    intervals (a shared outage process, or none) are one band labelled by the
    provider; a provider whose models have their own processes gets one band per
    group, labelled ``provider: model, ...``.
    """
    end = run_end_s(run)
    used = {m for r in config.routes.values() for m in r.chain}
    per_model: dict[str, list[tuple[float, float]]] = {}
    for mid, s, e in run.outages:
        if s < end:
            per_model.setdefault(mid, []).append((max(float(s), 0.0), min(float(e), end)))
    providers: dict[str, list[str]] = {}
    for m in config.models:
        if m.id in used:
            providers.setdefault(m.provider, []).append(m.id)
    rows: list[OutageRow] = []
    for provider, models in providers.items():
        groups: dict[tuple[tuple[float, float], ...], list[str]] = {}
        for mid in models:
            groups.setdefault(tuple(sorted(per_model.get(mid, []))), []).append(mid)
        for intervals, members in groups.items():
            label = provider if len(groups) == 1 else f"{provider}: {', '.join(members)}"
            rows.append(OutageRow(provider, tuple(members), label, intervals))
    return rows


def _time_unit(end_s: float) -> tuple[float, str]:
    """Seconds per axis unit and its name: minutes up to 3 h, else hours (a short
    trace on an hour axis is a few pixels wide)."""
    return (60.0, "min") if end_s <= 3 * 3600.0 else (3600.0, "h")


def outage_figure(runs, config: RouterConfig) -> plt.Figure:  # noqa: ANN001
    """The outage timeline of each run: a band per provider with its outages in red
    (or "no outage in this run"), and below it the tasks per time bin by the model
    that completed them, the failed tasks and the fallbacks."""
    n = max(len(runs), 1)
    fig, axes = plt.subplots(
        2 * n,
        1,
        figsize=(8, 4.6 * n),
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 1.3] * n},
    )
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no runs", ha="center", va="center")
        return fig
    model_ids = [m.id for m in config.models]
    for k, r in enumerate(runs):
        top, bottom = axes[2 * k, 0], axes[2 * k + 1, 0]
        end = run_end_s(r)
        unit, name = _time_unit(end)
        rows = outage_rows(r, config)
        for y, row in enumerate(rows):
            spans = [(s / unit, (e - s) / unit) for s, e in row.intervals]
            top.broken_barh(spans, (y - 0.35, 0.7), color="tab:red", alpha=0.7)
            if not row.intervals:
                top.text(0.01, y, "up throughout", fontsize=7, color="0.4", va="center",
                         transform=top.get_yaxis_transform())  # fmt: skip
        top.set_yticks(range(len(rows)), [row.label for row in rows], fontsize=7)
        top.set_ylim(max(len(rows), 1) - 0.4, -0.6)  # the first provider on top
        top.set_xlim(0, end / unit)
        down = sum(len(row.intervals) for row in rows)
        if down == 0:
            top.text(0.5, 0.5, "no outage in this run", transform=top.transAxes,
                     ha="center", va="center", fontsize=10,
                     bbox={"facecolor": "white", "edgecolor": "0.6"})  # fmt: skip
        top.set_title(
            f"Outages per provider (red), {down} in {end / unit:.3g} {name}: {r.trace}",
            fontsize=9,
        )
        # tasks per bin by the model that completed them; failed tasks; fallbacks
        bins = np.linspace(0.0, end, 31)
        t = r.arrays["started_s"]
        ok = r.arrays["success"]
        for i in np.unique(r.arrays["model"][ok]):
            if 0 <= i < len(model_ids):
                counts, _ = np.histogram(t[ok & (r.arrays["model"] == i)], bins=bins)
                bottom.step(bins[:-1] / unit, counts, where="post", lw=1,
                            label=f"completed by {model_ids[i]}")  # fmt: skip
        for mask, label, style in (
            (~ok, "failed", {"color": "black", "ls": "--"}),
            (r.arrays["fell_back"], "fell back", {"color": "tab:red", "ls": ":"}),
        ):
            counts, _ = np.histogram(t[mask], bins=bins)
            bottom.step(bins[:-1] / unit, counts, where="post", lw=1, label=label, **style)
        for row in rows:  # the outages again, faint, to line the two panels up
            for s, e in row.intervals:
                bottom.axvspan(s / unit, e / unit, color="tab:red", alpha=0.08, lw=0)
        bottom.set_xlim(0, end / unit)
        bottom.set_xlabel(f"time ({name})")
        bottom.set_ylabel(f"tasks / {bins[1] / unit:.2g} {name}", fontsize=8)
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=6, ncol=2, loc="upper right")
    return fig


def _outages(runs, config: RouterConfig, path: Path) -> Path:  # noqa: ANN001
    _save(outage_figure(runs, config), path)
    return path
