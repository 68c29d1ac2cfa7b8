"""PNG figures of a study: history, Pareto front, importances, tuned vs base.

Drawn with matplotlib's Agg backend from the study's stored trials and holdout
result (no display needed). Each figure is written to a temp file and renamed.
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
    """Parameter importances (Optuna's default evaluator), or {} when too few trials."""
    import optuna

    complete = _complete(study)
    if len(complete) < 4:
        return {}
    try:
        if len(study.directions) > 1:
            imp = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
        else:
            imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return dict(list(imp.items())[:top])


def write_figures(
    study: Any, objective: Objective, holdout: dict[str, Any] | None, out: Path
) -> list[Path]:
    """Write the four figures into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    trials = _complete(study)
    paths: list[Path] = []

    # 1. History: each trial's objective and the running best.
    fig, ax = plt.subplots(figsize=(7, 4))
    if trials:
        xs = np.array([t.number for t in trials])
        ys = np.array([objective.value(t.user_attrs["metrics"]) for t in trials])
        ax.scatter(xs, ys, s=12, alpha=0.6, label="trial")
        ax.plot(xs, np.maximum.accumulate(ys), color="C3", label="best so far")
        ax.legend(loc="lower right")
    label = "net value per task (USD)" if objective.multi else objective.name
    ax.set(xlabel="trial", ylabel=label, title="Optimisation history")
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

    # 3. Importances.
    fig, ax = plt.subplots(figsize=(7, 4))
    imp = importances(study)
    if imp:
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names])
    ax.set(xlabel="importance", title="Parameter importances")
    fig.tight_layout()
    _save(fig, out / "importances.png")
    plt.close(fig)
    paths.append(out / "importances.png")

    # 4. Tuned vs base on the held-out seeds.
    fig, axes = plt.subplots(1, 4, figsize=(10, 3.4))
    if holdout:
        keys = [
            ("completion_rate", "completion"),
            ("cost_per_task", "cost / task (USD)"),
            ("latency_p95_s", "p95 latency (s)"),
        ]
        for ax, (key, title) in zip(axes[:3], keys, strict=True):
            vals = [holdout["base_metrics"][key], holdout["metrics"][key]]
            ax.bar(["base", "tuned"], vals, color=["C7", "C2"])
            ax.set_title(title, fontsize=9)
        ax = axes[3]
        base = np.asarray(holdout["base_values"])
        tuned = np.asarray(holdout["values"])
        ax.bar(
            ["base", "tuned"],
            [base.mean(), tuned.mean()],
            yerr=[_half(base), _half(tuned)],
            color=["C7", "C2"],
            capsize=4,
        )
        ax.set_title(f"{'net value' if objective.multi else objective.name} (95% CI)", fontsize=9)
    fig.suptitle("Tuned vs base config on held-out seeds", fontsize=10)
    fig.tight_layout()
    _save(fig, out / "tuned_vs_base.png")
    plt.close(fig)
    paths.append(out / "tuned_vs_base.png")
    return paths


def _half(values: np.ndarray) -> float:
    from sim.results import mean_ci

    return mean_ci(list(values))[1]
