"""Multi-fidelity studies: score a trial on a sample of the traffic before the whole of it.

A *fidelity schedule* is a list of fractions of the traffic, increasing, each below
1 (``--fidelity 0.04,0.12,0.36``); the full trace is always the last rung. A trial
is replayed on rung 0's sample under the study's training seeds (the same seeds at
every rung: common random numbers), its mean objective is reported to Optuna as the
intermediate value of step ``reduction_factor ** j`` for rung ``j``, and the
promotion rule decides whether it goes on to the next, larger sample:

- ``halving`` (the default): synchronous successive halving
  (:mod:`optimize.halving`): trials climb in batches of ``η ** len(schedule)`` and
  the best ``1/η`` of each batch at a rung go on; the cost per trial is fixed by
  the schedule (:func:`expected_cost`), whatever the sampler proposes.
- ``sha`` / ``hyperband``: Optuna's asynchronous
  :class:`optuna.pruners.SuccessiveHalvingPruner` or
  :class:`~optuna.pruners.HyperbandPruner` (``min_resource=1`` and that reduction
  factor, so that their rungs are exactly the schedule's), which promote a trial
  that beats the top ``1/η`` of those that reached the rung before it. Under TPE
  most later trials do, so they rarely pay for themselves (README, Performance).

Only trials promoted past every rung are replayed on the full trace; their value,
metrics and constraints come from the full trace only, and so do the holdout's
selection and every reported number.

The sample (:func:`subsample`) is a set of contiguous time windows spread evenly
over the trace, together covering the fraction of its time span: each window keeps
the bursts it contains whole (arrivals are not thinned), and the tasks keep their
arrival times, so they meet the providers' outages of those very hours (outage
timelines are keyed by the seed and the clock, not by the traffic; see
:mod:`sim.world.providers`) and the time of day of the diurnal profile. Windows are
at least :data:`MIN_WINDOW_S` long when the fraction allows (a burst lasts minutes),
and at most :data:`MAX_WINDOWS` of them, so that the start times drift through the
day. A sample is replayed as its own trace: its per-task draws are keyed by the
full trace's content and each task's index in it (:attr:`sim.ReplayColumns.index`
and ``key``), so a task meets in its window the very draws -- difficulty, answers,
latencies -- it meets in the full trace, the same for every trial.
Daily spend caps are scaled by the sample's share of the tasks, so that a cap that
binds on the full trace binds about as much on the sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: The shortest window a sample is cut into when the fraction allows (seconds).
MIN_WINDOW_S = 3600.0
#: The most windows one sample is cut into.
MAX_WINDOWS = 48
#: Who promotes trials between rungs: ``halving``, synchronous successive halving in
#: batches (:mod:`optimize.halving`, the default); ``sha`` and ``hyperband``, Optuna's
#: asynchronous pruners.
FIDELITY_PRUNERS: tuple[str, ...] = ("halving", "sha", "hyperband")


def parse_fidelity(value: Any, where: str = "--fidelity") -> tuple[float, ...]:
    """A fidelity schedule from ``"0.04,0.12"``, a list of numbers, or None/"" (no schedule).

    Raises :class:`~router.errors.InputError` (one line naming ``where``) unless the
    fractions are increasing and each in (0, 1).
    """
    from router.errors import InputError

    if value is None or value == "" or value == []:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise InputError(f"{where}: expected fractions like 0.04,0.12, got {value!r}")
    out: list[float] = []
    for item in items:
        try:
            f = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise InputError(f"{where}: expected a fraction in (0, 1), got {item!r}") from None
        if isinstance(item, bool) or not 0.0 < f < 1.0:
            raise InputError(
                f"{where}: expected fractions in (0, 1) (the full trace is always the last "
                f"rung), got {item!r}"
            )
        if out and f <= out[-1]:
            raise InputError(f"{where}: fractions must increase, got {f:g} after {out[-1]:g}")
        out.append(f)
    return tuple(out)


def windows(start: float, end: float, fraction: float) -> list[tuple[float, float]]:
    """The ``[lo, hi)`` time windows covering ``fraction`` of ``[start, end]``, evenly spread.

    ``n = clamp(floor(fraction × span / MIN_WINDOW_S), 1, MAX_WINDOWS)`` windows of
    equal length; window ``j`` is centred in the ``j``-th of ``n`` equal periods.
    """
    span = max(end - start, 0.0)
    covered = fraction * span
    n = max(1, min(MAX_WINDOWS, int(covered // MIN_WINDOW_S)))
    width = covered / n
    period = span / n
    out = []
    for j in range(n):
        mid = start + (j + 0.5) * period
        out.append((mid - width / 2.0, mid + width / 2.0))
    return out


def _take(column: Any, idx: Any) -> Any:
    """Rows ``idx`` (increasing) of a trace column, of the same kind: a list stays a list
    of Python objects, a numpy array a numpy array, a pyarrow array (the compact task ids
    and the dictionary-encoded task types) a pyarrow array."""
    if isinstance(column, list):
        return [column[i] for i in idx]
    if isinstance(column, np.ndarray):
        return column[idx]
    import pyarrow as pa

    return column.take(pa.array(idx, type=pa.int64()))


def subsample(cols: Any, fraction: float) -> Any:
    """The tasks of ``cols`` (a :class:`sim.ReplayColumns`) arriving in :func:`windows`.

    Tasks keep their ids, arrival times, types and sizes, in the same order, and
    each column its kind (lists, or the compact arrays of ``replay_columns(...,
    compact=True)``). A sample never comes out empty: a trace too short for any
    window to hold a task gives its middle task.
    """
    from sim import ReplayColumns

    n = len(cols.task_ids)
    if n == 0 or fraction >= 1.0:
        return cols
    arr = np.asarray(cols.arrival_s, dtype=np.float64)
    parts = [
        np.arange(*np.searchsorted(arr, [lo, hi], side="left"), dtype=np.int64)
        for lo, hi in windows(float(arr[0]), float(arr[-1]), fraction)
    ]
    idx = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if not idx.size:
        idx = np.array([n // 2], dtype=np.int64)
    # Windows never overlap and come in time order, so idx is increasing. The sample
    # carries the full trace's key and each task's index in it: a task meets in its
    # window the very draws it meets in the full trace (common random numbers).
    from sim import trace_key

    compact = not isinstance(cols.arrival_s, list)
    rows: Any = idx if compact else idx.tolist()
    if cols.index is None:
        index: Any = rows
    else:
        index = _take(cols.index if compact else list(cols.index), rows)
    return ReplayColumns(
        _take(cols.task_ids, rows),
        _take(cols.arrival_s, rows),
        _take(cols.task_types, rows),
        _take(cols.prompt_tokens, rows),
        _take(cols.completion_tokens, rows),
        index=index,
        key=cols.key if cols.key is not None else trace_key(cols),
    )


def scale_budget(config: Any, share: float) -> Any:
    """``config`` with every spend cap of its budget (each ``*_usd`` field: a number or a
    mapping of numbers) times ``share``, a sample's share of the tasks."""
    b = config.budget
    update: dict[str, Any] = {}
    for name in type(b).model_fields:
        v = getattr(b, name)
        if not name.endswith("_usd") or v is None:
            continue
        update[name] = {k: x * share for k, x in v.items()} if isinstance(v, dict) else v * share
    if share >= 1.0 or not any(update.values()):
        return config
    return config.model_copy(update={"budget": b.model_copy(update=update)})


def rung_steps(schedule: Sequence[float], reduction_factor: int) -> list[int]:
    """The Optuna step each rung's value is reported at: ``reduction_factor ** j``."""
    return [reduction_factor**j for j in range(len(schedule))]


def make_pruner(name: str, schedule: Sequence[float], reduction_factor: int) -> Any:
    """The Optuna pruner of a schedule: rungs at steps ``1, η, η², …`` (η the reduction factor).

    ``sha``: every trial starts at rung 0 and only the best ``1/η`` of those that
    reached a rung go on. ``hyperband``: several successive-halving brackets that
    start pruning at later rungs (one never prunes), hedging against a sample too
    small to rank trials.
    """
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1,
            max_resource=reduction_factor ** len(schedule),
            reduction_factor=reduction_factor,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=reduction_factor, min_early_stopping_rate=0
    )


def expected_cost(schedule: Sequence[float], reduction_factor: int) -> float:
    """Full-trace replays per trial if each rung keeps ``1/η`` of its trials (a guide)."""
    fractions = [*schedule, 1.0]
    return sum(f / reduction_factor**j for j, f in enumerate(fractions)) if fractions else 1.0


__all__ = [
    "FIDELITY_PRUNERS",
    "MAX_WINDOWS",
    "MIN_WINDOW_S",
    "expected_cost",
    "make_pruner",
    "parse_fidelity",
    "rung_steps",
    "scale_budget",
    "subsample",
    "windows",
]
