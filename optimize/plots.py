"""PNG figures of a study: history, Pareto front, importances, tuned vs base.

Drawn with matplotlib's Agg backend from the study's stored trials and holdout
result (no display needed). Each figure is written to a temp file and renamed.

- ``history.png``: every complete trial's objective, the running best, the base
  config (trial 0) and the winner chosen on the selection seeds;
- ``pareto.png``: completion against cost per success, coloured by p95 latency;
- ``importances.png``: PED-ANOVA parameter importances (deterministic, so the
  same study gives the same figure), with readable parameter names, largest
  first (ties by name);
- ``tuned_vs_base.png``: per metric, the winner's paired difference from the
  base config over the reporting seeds (fresh: the winner was not chosen on them)
  with its 95% CI, coloured by whether it
  is a significant gain (green), a significant loss (red) or neither (grey).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from optimize.objective import Objective

FIGURES: tuple[str, ...] = ("history.png", "pareto.png", "importances.png", "tuned_vs_base.png")


def _save(fig: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _complete(study: Any) -> list[Any]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``points`` where every column is to be minimised."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def importances(study: Any, top: int = 12) -> dict[str, float]:
    """Parameter importances, largest first (ties by name), or {} with too few trials.

    Optuna's PED-ANOVA evaluator: how differently each parameter is distributed
    among the top 10% of complete trials than among all of them (normalised to
    sum to 1). It draws no random numbers, so a study gives the same importances
    on every call; a multi-objective study ranks trials by Pareto front.
    """
    import optuna

    complete = _complete(study)
    if len(complete) < 4:
        return {}
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    ranked = sorted(imp.items(), key=lambda kv: (-kv[1], kv[0]))
    return {k: float(v) for k, v in ranked[:top]}


#: How the tuned-vs-base figure shows each paired metric: label, scale, unit.
_PAIRED_DISPLAY: dict[str, tuple[str, float, str]] = {
    "completion_rate": ("completion rate", 100.0, "pp"),
    "cost_per_task": ("cost per task", 100.0, "¢"),
    "latency_mean_s": ("mean latency", 1.0, "s"),
    "latency_p95_s": ("p95 latency", 1.0, "s"),
    "breaker_trips": ("breaker trips per replay", 1.0, ""),
}


def _paired_rows(objective: Objective, holdout: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: label, unit, base and tuned means, diff and CI (scaled), and
    whether larger is better."""
    from optimize.study import PAIRED_METRICS
    from sim.engine.results import paired_difference

    rows = []
    name = "net value" if objective.multi else objective.name.replace("_", " ")
    value_scale, value_unit = (
        (100.0, "¢/task") if objective.multi or objective.name == "net_value" else (1.0, "")
    )
    d = paired_difference(holdout["base_values"], holdout["values"])
    rows.append({"label": name, "scale": value_scale, "unit": value_unit, "up": True, **d})
    for key, direction in PAIRED_METRICS:
        if key not in holdout.get("paired", {}):
            continue
        label, scale, unit = _PAIRED_DISPLAY.get(key, (key, 1.0, ""))
        up = direction == "maximize"
        rows.append(
            {"label": label, "scale": scale, "unit": unit, "up": up, **holdout["paired"][key]}
        )
    return rows


def _verdict(row: dict[str, Any]) -> str:
    """ "better" / "worse" when the CI excludes 0, else "no clear change"."""
    lo, hi = row["diff_ci_low"], row["diff_ci_high"]
    if lo > 0 or hi < 0:
        gain = (lo > 0) == row["up"]
        return "better" if gain else "worse"
    return "no clear change"


def _fmt(v: float, sign: str = "") -> str:
    return f"{v:{sign}.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:{sign}.2e}"


def write_figures(
    study: Any, objective: Objective, holdout: dict[str, Any] | None, out: Path
) -> list[Path]:
    """Write the four figures into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    from optimize.space import param_label

    out.mkdir(parents=True, exist_ok=True)
    trials = _complete(study)
    paths: list[Path] = []
    label = "net value per task (USD)" if objective.multi else objective.name

    # 1. History: each trial's objective, the running best, base and holdout winner.
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if trials:
        xs = np.array([t.number for t in trials])
        ys = np.array([objective.value(t.user_attrs["metrics"]) for t in trials])
        ax.scatter(xs, ys, s=12, alpha=0.5, color="C0", label="trial (training seeds)")
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="C3", label="best so far")
        if 0 in xs:
            ax.scatter(
                [0],
                ys[xs == 0],
                marker="D",
                s=60,
                color="k",
                zorder=3,
                label="base config (trial 0)",
            )
        win = holdout.get("best_trial") if holdout else None
        if win is not None and win in xs:
            y = float(ys[xs == win][0])
            ax.scatter(
                [win],
                [y],
                marker="*",
                s=260,
                color="gold",
                edgecolors="k",
                zorder=4,
                label=f"chosen on selection seeds (trial {win})",
            )
        ax.legend(loc="lower right", fontsize=8)
    ax.set(
        xlabel="trial number",
        ylabel=label,
        title=f"Optimisation history ({len(trials)} complete trials; pruned ones not shown)",
    )
    fig.tight_layout()
    _save(fig, out / "history.png")
    plt.close(fig)
    paths.append(out / "history.png")

    # 2. Pareto front: completion rate against cost per success, colour = p95 latency.
    fig, ax = plt.subplots(figsize=(7, 4))
    if trials:
        m = [t.user_attrs["metrics"] for t in trials]
        comp = np.array([x["completion_rate"] for x in m])
        cps = np.array([x["cost_per_success"] for x in m])
        p95 = np.array([x["latency_p95_s"] for x in m])
        front = pareto_mask(np.column_stack([-comp, cps, p95]))
        sc = ax.scatter(cps, comp, c=p95, s=14, cmap="viridis", alpha=0.7)
        ax.scatter(
            cps[front], comp[front], facecolors="none", edgecolors="C3", s=60, label="Pareto front"
        )
        fig.colorbar(sc, ax=ax, label="p95 latency (s)")
        ax.legend(loc="lower right")
    ax.set(
        xlabel="cost per successful task (USD)",
        ylabel="completion rate",
        title="Trials: completion vs cost per success",
    )
    fig.tight_layout()
    _save(fig, out / "pareto.png")
    plt.close(fig)
    paths.append(out / "pareto.png")

    # 3. Importances, largest at the top, with readable names.
    imp = importances(study)
    n_params = len({n for t in trials for n in t.params})
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.32 * max(len(imp), 3)))
    if imp:
        names = list(imp)[::-1]
        vals = [imp[n] for n in names]
        ax.barh([param_label(n) for n in names], vals, color="C0")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.1%}", va="center", fontsize=8)
        ax.set_xlim(0, max(vals) * 1.15)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.tick_params(axis="y", labelsize=8)
    else:
        ax.text(0.5, 0.5, "too few complete trials", ha="center", va="center")
    ax.set(
        xlabel=f"share of the total importance of {n_params} parameters (PED-ANOVA)",
        title="Parameter importances ("
        + ("reaching the Pareto front" if objective.multi else objective.name)
        + ")",
    )
    fig.tight_layout()
    _save(fig, out / "importances.png")
    plt.close(fig)
    paths.append(out / "importances.png")

    # 4. Tuned vs base on the reporting seeds: paired differences with 95% CIs.
    rows = _paired_rows(objective, holdout) if holdout else []
    fig, axes = plt.subplots(
        max(len(rows), 1), 1, figsize=(8, 0.9 + 0.75 * max(len(rows), 1)), squeeze=False
    )
    colours = {"better": "C2", "worse": "C3", "no clear change": "0.45"}
    for ax, row in zip(axes[:, 0], rows, strict=False):
        sc = row["scale"]
        d, lo, hi = sc * row["diff"], sc * row["diff_ci_low"], sc * row["diff_ci_high"]
        verdict = _verdict(row)
        ax.errorbar(
            [d],
            [0],
            xerr=[[d - lo], [hi - d]],
            fmt="o",
            color=colours[verdict],
            capsize=5,
            markersize=7,
            lw=2,
        )
        ax.axvline(0, color="k", lw=0.8)
        span = max(abs(lo), abs(hi), 1e-12)
        ax.set_xlim(-1.25 * span, 1.25 * span)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=8)
        unit = f" ({row['unit']})" if row["unit"] else ""
        ax.set_ylabel(
            f"{row['label']}{unit}\n{'↑' if row['up'] else '↓'} is better",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
        ax.text(
            1.02,
            0.5,
            f"base {_fmt(sc * row['a'])} → tuned {_fmt(sc * row['b'])}\n"
            f"{_fmt(d, '+')} [{_fmt(lo, '+')}, {_fmt(hi, '+')}]: {verdict}",
            transform=ax.transAxes,
            va="center",
            fontsize=8,
        )
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no holdout result", ha="center", va="center")
    seeds = (
        len(holdout.get("reporting_seeds") or holdout.get("holdout_seeds") or []) if holdout else 0
    )
    trial = holdout.get("best_trial") if holdout else None
    fig.suptitle(
        f"Tuned (trial {trial}) − base config, paired over {seeds} reporting seeds (95% CI)",
        fontsize=10,
    )
    fig.tight_layout()  # makes room for the labels on the left and the notes on the right
    _save(fig, out / "tuned_vs_base.png")
    plt.close(fig)
    paths.append(out / "tuned_vs_base.png")
    return paths
