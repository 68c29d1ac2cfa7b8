"""Exhaustive search over a small, fully discrete space: the ground truth for a study.

Every distinct configuration of :meth:`SearchSpace.grid` is replayed on the
same seeds a study's trials use (common random numbers), so the optimum found
here is the exact optimum of the objective a study estimates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optimize.objective import Objective
from optimize.space import SearchSpace
from optimize.study import Evaluator, mean_metrics
from router.errors import InputError


@dataclass
class ExhaustiveResult:
    """The best parameters, their value, and every configuration's value."""

    best_params: dict[str, Any]
    best_value: float
    values: list[float]


def exhaustive_search(
    space: SearchSpace,
    evaluator: Evaluator,
    objective: Objective,
    seeds: Sequence[int],
    *,
    limit: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> ExhaustiveResult:
    """Evaluate every configuration (at most ``limit``); infeasible ones rank last."""
    if objective.multi:
        raise InputError("exhaustive search: needs a scalar objective, not multi")
    size = space.grid_size()
    if size > limit:
        raise InputError(f"exhaustive search: {size} configurations exceed the limit of {limit}")
    best: tuple[bool, float] | None = None
    best_params: dict[str, Any] = {}
    values: list[float] = []
    for i, params in enumerate(space.grid()):
        cfg = space.build(params)
        summaries = [evaluator.summary(cfg, s) for s in seeds]
        metrics = mean_metrics(summaries)
        # The same value a study's trial returns: the objective of the mean summary.
        value = float(objective.value(metrics))
        feasible = objective.constraints.feasible(metrics)
        values.append(value)
        if best is None or (feasible, value) > best:
            best = (feasible, value)
            best_params = params
        if progress is not None:
            progress(i + 1, size)
    assert best is not None
    return ExhaustiveResult(best_params, best[1], values)
