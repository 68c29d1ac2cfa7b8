"""Per-task records and summaries of simulated runs.

A :class:`ResultSink` receives every finished task. It keeps compact columns
(numbers, not objects) for the summary and figures and, when given a writer,
streams the full per-task records to Parquet in chunks, so a million-task
replay holds tens of megabytes, not gigabytes.

Summary keys (:func:`summarize`): ``tasks``, ``completed``, ``completion_rate``,
``cost_usd``, ``cost_per_task``, ``cost_per_success``, ``latency_mean_s``,
``latency_p50_s``, ``latency_p95_s``, ``latency_p99_s`` (end-to-end task latency,
waits and failover included, over all tasks), ``throughput_per_hour`` (completed tasks per
hour between the first arrival and the last finish), ``fallback_rate`` (share of
tasks that called more than one model), ``breaker_trips``,
``budget_rejections`` (tasks that had a candidate skipped for budget) and
``per_model`` (``share`` of completed tasks it served, ``spend``, ``calls``,
``error_rate`` = failed calls / calls).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from router import TaskResult

TASK_SCHEMA = pa.schema(
    [
        ("trace", pa.string()),
        ("replication", pa.int32()),
        ("seed", pa.int64()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("route", pa.string()),
        ("started_s", pa.float64()),
        ("success", pa.bool_()),
        ("model", pa.string()),
        ("cost_usd", pa.float64()),
        ("latency_s", pa.float64()),
        ("attempts", pa.int32()),
        ("models_tried", pa.string()),
        ("failures", pa.string()),
        ("skips", pa.string()),
        ("error", pa.string()),
        ("fell_back", pa.bool_()),
    ]
)

SCALAR_KEYS: tuple[str, ...] = (
    "tasks",
    "completed",
    "completion_rate",
    "cost_usd",
    "cost_per_task",
    "cost_per_success",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "throughput_per_hour",
    "fallback_rate",
    "breaker_trips",
    "budget_rejections",
    "budget_alerts",
)


class ResultSink:
    """Collects finished tasks of one run; optionally streams them to Parquet."""

    CHUNK = 65_536

    def __init__(
        self,
        model_ids: Sequence[str],
        *,
        writer: pq.ParquetWriter | None = None,
        trace: str = "",
        replication: int = 0,
        seed: int = 0,
    ) -> None:
        self.model_index = {m: i for i, m in enumerate(model_ids)}
        self.model_ids = list(model_ids)
        self.writer = writer
        self.trace = trace
        self.replication = replication
        self.seed = seed
        self.started = array("d")
        self.latency = array("d")
        self.cost = array("d")
        self.success = bytearray()
        self.fell_back = bytearray()
        self.budget_hit = bytearray()
        self.model = array("h")  # final model index, -1 when failed
        self._rows: list[TaskResult] = []

    def add(self, r: TaskResult) -> None:
        self.started.append(r.started_s)
        self.latency.append(r.latency_s)
        self.cost.append(r.cost_usd)
        self.success.append(r.success)
        attempts = r.attempts
        first = attempts[0].model if attempts else None
        fb = False
        for a in attempts:
            if a.model != first:
                fb = True
                break
        self.fell_back.append(fb)
        skips = r.skips
        self.budget_hit.append(any(reason == "budget" for _, reason in skips) if skips else False)
        self.model.append(self.model_index[r.model] if r.model is not None else -1)
        if self.writer is not None:
            self._rows.append(r)
            if len(self._rows) >= self.CHUNK:
                self.flush()

    def flush(self) -> None:
        """Write buffered per-task records to the Parquet writer."""
        rows = self._rows
        if not rows or self.writer is None:
            return
        n = len(rows)
        table = pa.table(
            {
                "trace": [self.trace] * n,
                "replication": [self.replication] * n,
                "seed": [self.seed] * n,
                "task_id": [r.task_id for r in rows],
                "task_type": [r.task_type for r in rows],
                "route": [r.route for r in rows],
                "started_s": [r.started_s for r in rows],
                "success": [r.success for r in rows],
                "model": [r.model for r in rows],
                "cost_usd": [r.cost_usd for r in rows],
                "latency_s": [r.latency_s for r in rows],
                "attempts": [len(r.attempts) for r in rows],
                "models_tried": [",".join(r.models_tried) for r in rows],
                "failures": [
                    ",".join(f"{a.model}:{a.kind}" for a in r.attempts if a.kind != "ok")
                    for r in rows
                ],
                "skips": [",".join(f"{m}:{why}" for m, why in r.skips) for r in rows],
                "error": [r.error for r in rows],
                "fell_back": [r.fell_back for r in rows],
            },
            schema=TASK_SCHEMA,
        )
        self.writer.write_table(table)
        self._rows = []

    def arrays(self) -> dict[str, np.ndarray]:
        """The compact columns as numpy arrays."""
        return {
            "started_s": np.frombuffer(self.started, dtype=np.float64),
            "latency_s": np.frombuffer(self.latency, dtype=np.float64),
            "cost_usd": np.frombuffer(self.cost, dtype=np.float64),
            "success": np.frombuffer(bytes(self.success), dtype=np.bool_),
            "fell_back": np.frombuffer(bytes(self.fell_back), dtype=np.bool_),
            "budget_hit": np.frombuffer(bytes(self.budget_hit), dtype=np.bool_),
            "model": np.frombuffer(self.model, dtype=np.int16),
        }


def _f(x: float) -> float:
    """JSON-safe float: rounded to 12 significant digits (stable across platforms)."""
    if math.isnan(x) or math.isinf(x):
        return x
    return float(f"{x:.12g}")


def summarize(
    arrays: dict[str, np.ndarray],
    model_ids: Sequence[str],
    *,
    calls: Sequence[int],
    failures: Sequence[int],
    spend: Sequence[float],
    breaker_trips: int,
    budget_alerts: int = 0,
) -> dict[str, Any]:
    """The summary of one run (see the module docstring for the keys)."""
    n = int(arrays["latency_s"].size)
    success = arrays["success"]
    completed = int(success.sum())
    cost = float(arrays["cost_usd"].sum())
    lat = arrays["latency_s"]
    if n:
        p50, p95, p99 = (float(x) for x in np.percentile(lat, [50, 95, 99]))
        first = float(arrays["started_s"].min())
        last = float((arrays["started_s"] + lat).max())
        hours = max(last - first, 1e-9) / 3600.0
    else:
        p50 = p95 = p99 = 0.0
        hours = 0.0
    served = np.bincount(arrays["model"][arrays["model"] >= 0], minlength=len(model_ids))
    per_model = {}
    for i, mid in enumerate(model_ids):
        if calls[i] == 0 and served[i] == 0:
            continue
        per_model[mid] = {
            "share": _f(served[i] / completed) if completed else 0.0,
            "spend": _f(spend[i]),
            "calls": int(calls[i]),
            "error_rate": _f(failures[i] / calls[i]) if calls[i] else 0.0,
        }
    return {
        "tasks": n,
        "completed": completed,
        "completion_rate": _f(completed / n) if n else 0.0,
        "cost_usd": _f(cost),
        "cost_per_task": _f(cost / n) if n else 0.0,
        "cost_per_success": _f(cost / completed) if completed else (math.inf if cost else 0.0),
        "latency_mean_s": _f(float(lat.mean())) if n else 0.0,
        "latency_p50_s": _f(p50),
        "latency_p95_s": _f(p95),
        "latency_p99_s": _f(p99),
        "throughput_per_hour": _f(completed / hours) if hours else 0.0,
        "fallback_rate": _f(float(arrays["fell_back"].mean())) if n else 0.0,
        "breaker_trips": int(breaker_trips),
        "budget_rejections": int(arrays["budget_hit"].sum()),
        "budget_alerts": int(budget_alerts),
        "per_model": per_model,
    }


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return 0.0, 0.0
    m = float(x.mean())
    if x.size < 2 or not np.all(np.isfinite(x)):
        return m, 0.0
    sd = float(x.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2, x.size - 1))
    return m, t * sd / math.sqrt(x.size)


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average replications' summaries; add ``ci`` half-widths when there are several."""
    if len(runs) == 1:
        return dict(runs[0])
    out: dict[str, Any] = {}
    ci: dict[str, float] = {}
    for key in SCALAR_KEYS:
        m, h = mean_ci([r[key] for r in runs])
        out[key] = _f(m)
        ci[key] = _f(h)
    models = sorted({m for r in runs for m in r["per_model"]})
    out["per_model"] = {
        mid: {
            k: _f(float(np.mean([r["per_model"].get(mid, {}).get(k, 0.0) for r in runs])))
            for k in ("share", "spend", "calls", "error_rate")
        }
        for mid in models
    }
    out["replications"] = len(runs)
    out["ci"] = ci
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of B − A over the same seeds: mean diff and its 95% CI."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    m, h = mean_ci(d)
    return {
        "a": _f(float(np.mean(a))),
        "b": _f(float(np.mean(b))),
        "diff": _f(m),
        "diff_ci_low": _f(m - h),
        "diff_ci_high": _f(m + h),
    }
