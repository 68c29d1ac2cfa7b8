"""PNG figures of a replay: latency CDF, completion vs cost per model, spend over
time, and the outage timeline with the fallbacks it caused.

Figures use matplotlib's non-interactive Agg backend and fixed metadata so the
same replay gives the same files.
"""

from __future__ import annotations

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
        _outages(runs, out / "outage_timeline.png"),
    ]
    return paths


def _latency_cdf(runs, path: Path) -> Path:  # noqa: ANN001
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        lat = np.sort(r.arrays["latency_s"][r.arrays["success"]])
        if lat.size:
            ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=r.trace)
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
        order = np.argsort(r.arrays["started_s"], kind="stable")
        t = r.arrays["started_s"][order] / 3600.0
        ax.plot(t, np.cumsum(r.arrays["cost_usd"][order]), label=r.trace)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("cumulative spend (USD)")
    ax.set_title("Spend over time")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    _save(fig, path)
    return path


def _outages(runs, path: Path) -> Path:  # noqa: ANN001
    fig, axes = plt.subplots(len(runs) or 1, 1, figsize=(8, 2.5 * max(len(runs), 1)), squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=False):
        models = sorted({m for m, _, _ in r.outages})
        end = (
            float((r.arrays["started_s"] + r.arrays["latency_s"]).max())
            if r.arrays["started_s"].size
            else 1.0
        )
        for y, m in enumerate(models):
            spans = [
                (s / 3600.0, (min(e, end) - s) / 3600.0)
                for mm, s, e in r.outages
                if mm == m and s < end
            ]
            ax.broken_barh(spans, (y - 0.4, 0.8), color="tab:red", alpha=0.6)
        ax.set_yticks(range(len(models)), models, fontsize=7)
        # fallbacks per 10-minute bin, on a twin axis
        twin = ax.twinx()
        fb_t = r.arrays["started_s"][r.arrays["fell_back"]] / 3600.0
        bins = np.arange(0.0, end / 3600.0 + 1 / 6, 1 / 6)
        counts, edges = np.histogram(fb_t, bins=bins if bins.size > 1 else 1)
        twin.plot(edges[:-1], counts, color="tab:blue", lw=0.8)
        twin.set_ylabel("fallbacks / 10 min", fontsize=7)
        ax.set_xlim(0, end / 3600.0)
        ax.set_xlabel("time (h)")
        ax.set_title(f"Outages (red) and the fallbacks they caused: {r.trace}", fontsize=9)
    _save(fig, path)
    return path
