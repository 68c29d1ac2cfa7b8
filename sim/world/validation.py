"""Out-of-sample validation of a calibrated scenario: ``sim validate``.

:func:`validate` splits recorded traffic by time: the first ``split`` share of the
tasks (by arrival) calibrates a scenario (:func:`sim.world.calibration.calibrate`); the rest
are replayed through the simulator with that scenario and the config that was live,
over several replication seeds, and what the simulator predicts is compared with
what was recorded, per model and overall:

============================ ===========================================================
metric                       definition (the same code computes both sides)
============================ ===========================================================
``completion_rate``          tasks whose last attempt is ``ok`` / tasks
``cost_per_task``            summed attempt costs / tasks
``latency_p50/p95/p99_s``    percentiles of successful tasks' latency: from their first
                             attempt's start to their last attempt's end
``fallback_rate``            successful tasks finished by a model other than the first
                             one they called / tasks
``error_mix.<kind>``         share of all attempts that ended as ``<kind>`` (timeouts and
                             first-token timeouts together as ``timeout``)
``<model>.calls_per_task``   calls of the model / tasks
``<model>.ok_rate``          ``ok`` calls / answered calls of the model
``<model>.share``            successful tasks the model finished / successful tasks
============================ ===========================================================

Tasks: those of the test part with at least one attempt (without task records, a
task that never reached a model is invisible, so the simulator's such tasks are left
out too); with task records, every task of the test part. The simulator replays every
recorded task, the calibration part too, and is scored on the test part, so that its
router meets the test part warm, as the live router did.

Prediction: the median over the replication seeds (one recording is one draw: a rare
long outage in one replication -- e.g. the status-page process a short recording could
not rule out -- would drag a mean away from what a typical recording shows), with the
2.5-97.5% range of the replications. Observation: a 95% bootstrap CI over the test
tasks. The difference's CI is the prediction interval of one recording: the wider of
the bootstrap's spread and the replications' (robust) spread -- one recording also
carries the luck of its outages and rate-limited minutes, which a bootstrap over tasks
cannot see -- combined with the prediction's own uncertainty. A metric *passes*
when the difference is within its tolerance (``tolerance_pp`` percentage points for
rates and shares, ``tolerance_rel`` relative for costs, latencies and calls); it
*fails* when the difference exceeds the tolerance **and** its 95% CI excludes 0 (a
larger difference that noise could explain is reported as ``noise``, which is not a
failure: too few tasks to tell). Per-model metrics are judged only for models with at
least :data:`MIN_CALLS` observed calls (else ``few``). ``sim validate`` exits 0 when
no metric fails, 1 when some fail, 2 on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from router import TaskResult
from router.recording import ATTEMPT_COLUMNS
from sim.engine.driver import Simulation
from sim.engine.replays import trace_key
from sim.engine.results import ResultSink
from sim.traces.tasks import ReplayColumns

if TYPE_CHECKING:
    from router import RouterConfig
    from sim.world.scenario import Scenario

__all__ = [
    "MIN_CALLS",
    "MIX_KINDS",
    "Metric",
    "ValidationReport",
    "results_to_attempts",
    "simulate",
    "validate",
]

#: Observed calls a model needs before its per-model metrics are judged.
MIN_CALLS = 200
# Outage timelines are drawn this far past the last arrival (as sim.engine.replays does).
_HORIZON_MARGIN_S = 6 * 3600.0


class _KeepingSink(ResultSink):
    """A result sink that also keeps every :class:`TaskResult` (for their attempts)."""

    def __init__(self, model_ids: Sequence[str]) -> None:
        super().__init__(model_ids)
        self.results: list[TaskResult] = []

    def add(self, r: TaskResult) -> None:
        super().add(r)
        self.results.append(r)


def simulate(
    cols: ReplayColumns, config: RouterConfig, scenario: Scenario, *, seed: int
) -> list[TaskResult]:
    """Replay ``cols`` once (seed ``seed``, the world keyed by the trace's content, as
    :func:`sim.engine.replays.run_trace` does) and return every task's result, attempts
    included."""
    model_ids = [m.id for m in config.models]
    horizon = (cols.arrival_s[-1] if cols.arrival_s else 0.0) + _HORIZON_MARGIN_S
    world = scenario.realize(seed, horizon, model_ids, trace_key=trace_key(cols))
    sink = _KeepingSink(model_ids)
    Simulation(config, world, seed=seed, sink=sink).run(cols)
    return sink.results


def results_to_attempts(results: Sequence[TaskResult], cols: ReplayColumns) -> pl.DataFrame:
    """The attempt records (:mod:`sim.traces.attempts` schema) of simulated results,
    as the live router would have written them against the twin: token usage on
    answers that carried it (``ok`` and ``validation``: a malformed body reports
    none), the task's type, nulls where a provider reports nothing."""
    sizes = {
        tid: (cols.prompt_tokens[i], cols.completion_tokens[i])
        for i, tid in enumerate(cols.task_ids)
    }
    rows: dict[str, list[Any]] = {c: [] for c in ATTEMPT_COLUMNS}
    for r in results:
        pt, ct = sizes.get(r.task_id, (None, None))
        for a in r.attempts:
            usage = a.kind in ("ok", "validation")
            rows["task_id"].append(r.task_id)
            rows["model"].append(a.model)
            rows["attempt"].append(a.number)
            rows["start_s"].append(max(0.0, a.started_s))
            rows["latency_s"].append(max(0.0, a.latency_s))
            rows["ttft_s"].append(None)
            rows["outcome"].append(a.kind)
            rows["status"].append(a.status)
            rows["retry_after_s"].append(a.retry_after_s)
            rows["prompt_tokens"].append(pt if usage else None)
            rows["completion_tokens"].append(ct if usage else None)
            rows["cost_usd"].append(a.cost_usd)
            rows["task_type"].append(r.task_type)
            rows["provider_model"].append(None)
            rows["request_id"].append(None)
    from sim.traces.attempts import ATTEMPT_SCHEMA

    return pl.DataFrame(rows, schema=ATTEMPT_SCHEMA).sort("start_s", maintain_order=True)


# ------------------------------------------------------------------------ metrics
#: Attempt outcomes of the error mix (anything else counts as ``other``).
MIX_KINDS: tuple[str, ...] = (
    "ok",
    "validation",
    "malformed",
    "server_error",
    "timeout",
    "rate_limited",
    "context_length",
    "other",
)
_MIX_OF = {k: k for k in MIX_KINDS}
_MIX_OF["first_token_timeout"] = "timeout"
_MIX_OF["connect"] = "server_error"
_MIX_OF["connection"] = "server_error"


@dataclass
class _TaskArrays:
    """Per-task columns every metric is a (weighted) function of."""

    success: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    fell_back: np.ndarray
    attempts: np.ndarray
    mix: np.ndarray  # (tasks, kinds)
    calls: np.ndarray  # (tasks, models)
    answered: np.ndarray
    ok: np.ndarray
    served: np.ndarray

    @property
    def n(self) -> int:
        return int(self.success.size)


def _task_arrays(
    attempts: pl.DataFrame, task_ids: Sequence[str], models: Sequence[str]
) -> _TaskArrays:
    """The per-task columns of ``task_ids`` (a task without attempts: failed, no cost)."""
    index = {t: i for i, t in enumerate(task_ids)}
    midx = {m: j for j, m in enumerate(models)}
    n, k = len(task_ids), len(models)
    success = np.zeros(n, dtype=bool)
    cost = np.zeros(n)
    latency = np.zeros(n)
    fell = np.zeros(n, dtype=bool)
    count = np.zeros(n)
    mix = np.zeros((n, len(MIX_KINDS)))
    calls = np.zeros((n, k))
    answered = np.zeros((n, k))
    ok = np.zeros((n, k))
    served = np.zeros((n, k))
    kind_col = {kd: j for j, kd in enumerate(MIX_KINDS)}
    df = (
        attempts.filter(pl.col("task_id").is_in(list(index)))
        .with_row_index("_row")
        .sort("start_s", "_row")
    )
    first: dict[int, str] = {}
    start: dict[int, float] = {}
    last: dict[int, tuple[str, str, float]] = {}
    for tid, model, s, lat, outcome, c in df.select(
        "task_id", "model", "start_s", "latency_s", "outcome", "cost_usd"
    ).iter_rows():
        i = index[tid]
        j = midx.get(model)
        first.setdefault(i, model)
        start.setdefault(i, s)
        end = s + lat
        prev = last.get(i)
        last[i] = (model, outcome, max(end, prev[2]) if prev else end)
        count[i] += 1
        mix[i, kind_col[_MIX_OF.get(outcome, "other")]] += 1
        cost[i] += c or 0.0
        if j is not None:
            calls[i, j] += 1
            if outcome in ("ok", "validation", "malformed"):
                answered[i, j] += 1
            if outcome == "ok":
                ok[i, j] += 1
    for i, (model, outcome, end) in last.items():
        if outcome == "ok":
            success[i] = True
            latency[i] = end - start[i]
            fell[i] = model != first[i]
            j = midx.get(model)
            if j is not None:
                served[i, j] = 1
    return _TaskArrays(success, cost, latency, fell, count, mix, calls, answered, ok, served)


def _percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The percentile of ``values`` repeated ``weights`` times (numpy's linear rule,
    as :func:`sim.engine.results.summarize` uses)."""
    w = weights.astype(int)
    if w.sum() == 0:
        return math.nan
    return float(np.percentile(np.repeat(values, w), q))


def _metric_values(ta: _TaskArrays, models: Sequence[str], w: np.ndarray) -> dict[str, float]:
    """Every metric of :mod:`sim.world.validation` for task weights ``w`` (1: the data itself;
    bootstrap multiplicities: a resample)."""
    tasks = float(w.sum())
    nan = math.nan
    out: dict[str, float] = {}
    succ = ta.success
    done = float(w @ succ)
    out["completion_rate"] = done / tasks if tasks else nan
    out["cost_per_task"] = float(w @ ta.cost) / tasks if tasks else nan
    ws = w * succ
    for q in (50, 95, 99):
        out[f"latency_p{q}_s"] = _percentile(ta.latency, ws, q)
    out["fallback_rate"] = float(w @ ta.fell_back) / tasks if tasks else nan
    total = float(w @ ta.attempts)
    mix = w @ ta.mix
    for j, kind in enumerate(MIX_KINDS):
        out[f"error_mix.{kind}"] = float(mix[j]) / total if total else nan
    calls, answered, ok, served = w @ ta.calls, w @ ta.answered, w @ ta.ok, w @ ta.served
    for j, m in enumerate(models):
        out[f"{m}.calls_per_task"] = float(calls[j]) / tasks if tasks else nan
        out[f"{m}.ok_rate"] = float(ok[j] / answered[j]) if answered[j] else nan
        out[f"{m}.share"] = float(served[j]) / done if done else nan
    return out


def _kind_of(name: str) -> str:
    """``"rate"`` (judged in percentage points) or ``"rel"`` (judged relatively)."""
    if name.startswith("error_mix.") or name.endswith(("_rate", ".share")):
        return "rate"
    return "rel"


@dataclass
class Metric:
    """One compared metric: ``predicted`` (the median over the replications, with
    the 2.5-97.5% range of the replications as ``predicted_ci``) and ``observed``
    (with a bootstrap 95% CI). ``diff`` is predicted - observed (rates, in absolute
    units: 0.02 is 2 percentage points) or (predicted - observed) / observed
    (``rel``); ``status`` is ``pass``, ``fail``, ``noise`` (beyond the tolerance but
    within its CI of 0: too few tasks to tell) or ``few`` (not judged: too little
    data). See the module docstring."""

    name: str
    kind: str
    observed: float
    observed_ci: tuple[float, float]
    predicted: float
    predicted_ci: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    tolerance: float
    status: str
    n: int

    def as_dict(self) -> dict[str, Any]:
        def r(x: float) -> float | None:
            return None if not math.isfinite(x) else float(f"{x:.6g}")

        return {
            "kind": self.kind,
            "observed": r(self.observed),
            "observed_ci": [r(x) for x in self.observed_ci],
            "predicted": r(self.predicted),
            "predicted_ci": [r(x) for x in self.predicted_ci],
            "diff": r(self.diff),
            "diff_ci": [r(x) for x in self.diff_ci],
            "tolerance": self.tolerance,
            "status": self.status,
            "n": self.n,
        }


@dataclass
class ValidationReport:
    """What :func:`validate` found: the calibration of the first part, the compared
    :attr:`metrics`, and :attr:`passed` (no metric failed)."""

    split: float
    train_tasks: int
    test_tasks: int
    replications: int
    seed: int
    tolerance_pp: float
    tolerance_rel: float
    calibration: Any  # sim.world.calibration.Calibration
    metrics: list[Metric] = field(default_factory=list)
    #: Test tasks left out because the recording client stalled while they ran.
    stalled_tasks: int = 0

    @property
    def failed(self) -> list[Metric]:
        return [m for m in self.metrics if m.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed

    def metric(self, name: str) -> Metric:
        """The metric called ``name`` (KeyError naming the known ones if absent)."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"no metric {name!r}; known: {', '.join(m.name for m in self.metrics)}")

    def summary(self) -> dict[str, Any]:
        """The JSON summary (``sim validate --json``)."""
        counts: dict[str, int] = {}
        for m in self.metrics:
            counts[m.status] = counts.get(m.status, 0) + 1
        return {
            "passed": self.passed,
            "failed": [m.name for m in self.failed],
            "status_counts": counts,
            "split": self.split,
            "train_tasks": self.train_tasks,
            "test_tasks": self.test_tasks,
            "replications": self.replications,
            "seed": self.seed,
            "tolerance_pp": self.tolerance_pp,
            "tolerance_rel": self.tolerance_rel,
            "stalled_tasks": self.stalled_tasks,
            "metrics": {m.name: m.as_dict() for m in self.metrics},
        }


def _stalled_tasks(attempts: pl.DataFrame, stalls: Sequence[tuple[float, float]]) -> set[str]:
    """Tasks with an attempt in flight (``[start_s, start_s + latency_s]``) during one
    of the ``stalls`` windows."""
    if not stalls or attempts.height == 0:
        return set()
    start = pl.col("start_s")
    end = start + pl.col("latency_s").fill_null(0.0).clip(lower_bound=0.0)
    hit = pl.any_horizontal([(start <= hi) & (end >= lo) for lo, hi in stalls])
    return set(attempts.filter(hit).get_column("task_id").unique().to_list())


def _split(records: Any, split: float) -> tuple[Any, Any, pl.DataFrame]:
    """(train records, test records, test task table): the first ``split`` share of
    the tasks by arrival, and the rest."""
    from sim.world.calibration import Records

    table = records.task_table()
    n_train = int(math.floor(split * table.height))
    train_ids = table.get_column("task_id").head(n_train)
    test = table.slice(n_train)

    def part(ids: pl.Series) -> Records:
        att = records.attempts.filter(pl.col("task_id").is_in(ids.implode()))
        tasks = None
        if records.tasks is not None:
            tasks = records.tasks.filter(pl.col("task_id").is_in(ids.implode()))
        return Records(att, tasks, list(records.sources))

    return part(train_ids), part(test.get_column("task_id")), test


def validate(
    records: Any,
    config: RouterConfig,
    *,
    split: float = 0.5,
    replications: int = 10,
    seed: int = 0,
    tolerance_pp: float = 2.0,
    tolerance_rel: float = 0.10,
    bootstrap: int = 200,
    calibration: Any = None,
    stalls: Sequence[tuple[float, float]] = (),
) -> ValidationReport:
    """Calibrate on the first ``split`` of ``records`` (a
    :class:`sim.world.calibration.Records`), predict the rest with ``config`` (the config that
    was live) over ``replications`` seeds ``seed, seed + 1, ...`` and compare (see the
    module docstring). ``calibration``: a calibration of the first part made already
    (it is not redone). ``stalls``: windows ``(start_s, end_s)`` in which the recording
    client is known to have stalled (``record_against_twin``'s ``"stalls"``): the
    calibration leaves their calls out, and test tasks with an attempt in flight during
    one are compared on neither side (the live router's clock stopped for them; the
    simulator's never does), counted in :attr:`ValidationReport.stalled_tasks`. Raises
    :class:`~router.errors.InputError` for a bad argument or records that cannot be
    split or calibrated.
    """
    from router.errors import InputError
    from sim.traces.tasks import replay_columns, validate_trace
    from sim.world.calibration import calibrate

    if not (0.0 < split < 1.0):
        raise InputError(f"split: expected a share strictly between 0 and 1, got {split!r}")
    if replications < 2:
        raise InputError(f"replications: expected an integer >= 2, got {replications!r}")
    if not (tolerance_pp >= 0 and tolerance_rel >= 0):
        raise InputError("tolerance: expected non-negative tolerances")
    train, test, table = _split(records, split)
    if train.attempts.height == 0 or test.attempts.height == 0:
        raise InputError(
            f"split {split:g}: one side has no attempts ({train.attempts.height} before, "
            f"{test.attempts.height} after); record more traffic or move the split"
        )
    cal = (
        calibration
        if calibration is not None
        else calibrate(train, config, seed=seed, stalls=stalls)
    )
    scenario = cal.scenario
    models = [m.id for m in config.models]
    missing = [m for m in models if m not in scenario.models]
    if missing:
        raise InputError(f"config models missing from the calibration: {', '.join(missing)}")
    # Tasks compared: every test task when task records were given, else those with
    # an attempt (the others are invisible in attempt records alone).
    if records.tasks is not None:
        ids = table.get_column("task_id").to_list()
    else:
        seen = set(test.attempts.get_column("task_id").unique().to_list())
        ids = [t for t in table.get_column("task_id").to_list() if t in seen]
    # The simulator replays *every* task, the calibration part included, and is scored
    # on the test part: the live router met the test part warm (its breakers, health
    # and rate-limit windows shaped by what came before), and so must the replay.
    full = records.task_table()
    cols = replay_columns(validate_trace(full, source="the recorded tasks"))
    hit = _stalled_tasks(test.attempts, stalls)
    wanted = set(ids) - hit
    ids = [t for t in cols.task_ids if t in wanted]
    observed = _task_arrays(test.attempts, ids, models)
    obs_values = _metric_values(observed, models, np.ones(observed.n))
    rng = np.random.default_rng(seed)
    boots = [
        _metric_values(
            observed,
            models,
            np.bincount(rng.integers(0, observed.n, observed.n), minlength=observed.n),
        )
        for _ in range(bootstrap)
    ]
    preds: list[dict[str, float]] = []
    for r in range(replications):
        results = simulate(cols, config, scenario, seed=seed + r)
        att = results_to_attempts(results, cols)
        pa = _task_arrays(att, ids, models)
        keep = np.ones(pa.n)
        if records.tasks is None:
            keep = (pa.attempts > 0).astype(float)  # as invisible as the observed ones
        preds.append(_metric_values(pa, models, keep))
    obs_calls = observed.calls.sum(axis=0)
    n_success = int(observed.success.sum())
    report = ValidationReport(
        split=split,
        train_tasks=train.n_tasks,
        test_tasks=len(ids),
        replications=replications,
        seed=seed,
        tolerance_pp=tolerance_pp,
        tolerance_rel=tolerance_rel,
        calibration=cal,
        stalled_tasks=len(hit),
    )
    for name, obs in obs_values.items():
        kind = _kind_of(name)
        tol = tolerance_pp / 100.0 if kind == "rate" else tolerance_rel
        pv = np.array([p[name] for p in preds], dtype=float)
        bv = np.array([b[name] for b in boots], dtype=float)
        bv = bv[np.isfinite(bv)]
        pv_f = pv[np.isfinite(pv)]
        # The median over the replications, not the mean: one recording is one draw,
        # and a rare long outage in one replication (a status-page process the
        # recording was too short to rule out) would drag a mean far from what a
        # typical recording shows. Its spread, likewise, by the median absolute
        # deviation.
        pred = float(np.median(pv_f)) if pv_f.size else math.nan
        pred_ci = (
            (float(np.quantile(pv_f, 0.025)), float(np.quantile(pv_f, 0.975)))
            if pv_f.size
            else (math.nan, math.nan)
        )
        se_obs = float(bv.std(ddof=1)) if bv.size > 1 else math.nan
        sd_rep = 1.4826 * float(np.median(np.abs(pv_f - pred))) if pv_f.size > 1 else 0.0
        se_pred = 1.2533 * sd_rep / math.sqrt(pv_f.size) if pv_f.size > 1 else 0.0
        obs_ci = (
            (float(np.quantile(bv, 0.025)), float(np.quantile(bv, 0.975)))
            if bv.size
            else (math.nan, math.nan)
        )
        # One recording is one realisation of the world: besides the tasks' own noise
        # (the bootstrap) it carries the luck of its outages and rate-limit minutes,
        # which only the spread of the replications shows. So the difference's CI is
        # the prediction interval of one realisation, from the wider of the two.
        se_one = max(se_obs, sd_rep) if math.isfinite(se_obs) else sd_rep
        se = math.hypot(se_one, se_pred)
        if kind == "rate":
            diff = pred - obs
        else:
            diff = (pred - obs) / obs if obs else math.nan
            se = se / abs(obs) if obs else math.nan
        diff_ci = (diff - 1.96 * se, diff + 1.96 * se)
        model = name.split(".", 1)[0] if "." in name and not name.startswith("error_mix.") else None
        n_obs = int(obs_calls[models.index(model)]) if model in models else observed.n
        if name.startswith("latency_"):
            n_obs = n_success
        if not (math.isfinite(obs) and math.isfinite(pred) and math.isfinite(diff)):
            status = "few"
        elif model is not None and n_obs < MIN_CALLS:
            status = "few"
        elif name.startswith("latency_") and n_success < 20:
            status = "few"
        elif abs(diff) <= tol:
            status = "pass"
        elif math.isfinite(se) and diff_ci[0] <= 0.0 <= diff_ci[1]:
            status = "noise"
        else:
            status = "fail"
        report.metrics.append(
            Metric(
                name=name,
                kind=kind,
                observed=obs,
                observed_ci=obs_ci,
                predicted=pred,
                predicted_ci=pred_ci,
                diff=diff,
                diff_ci=diff_ci,
                tolerance=tol,
                status=status,
                n=n_obs,
            )
        )
    return report


# ---------------------------------------------------------------- live recordings
class _ShiftableClock:
    """A monotonic clock whose zero can be moved before any task starts, so that the
    live router's recording epoch (its ``_t0``, read at construction) is the twin's
    scenario time 0 (rate-limit minutes then line up in both)."""

    def __init__(self) -> None:
        import time

        self._mono = time.monotonic
        self.zero = self._mono()

    def __call__(self) -> float:
        return self._mono() - self.zero

    def restart(self) -> None:
        self.zero = self._mono()


def record_against_twin(
    config: RouterConfig,
    scenario: Scenario,
    trace: pl.DataFrame,
    out_dir: str | Any,
    *,
    seed: int = 0,
    time_scale: float = 0.05,
    twin_seed: int | None = None,
    stall_s: float = 0.2,
) -> dict[str, Any]:
    """Route every task of ``trace`` with the live router against a twin serving
    ``scenario``, recording what happened, as a user's deployment would.

    :class:`router.live.Router` (policy seed ``seed``) calls a
    :class:`~sim.twin.server.TwinServer` on loopback (world seed ``twin_seed``, default
    ``seed``; the trace's key, so the twin draws what the simulator would for these
    tasks) at ``time_scale``, with ``config``'s durations scaled to match
    (:func:`sim.twin.fidelity.twin_config`); tasks start at their arrival x
    ``time_scale``. It writes ``attempts.ndjson``
    (:class:`~router.recording.AttemptRecorder`) and ``tasks.ndjson``
    (:class:`~router.recording.TraceRecorder`) into ``out_dir``, in *wall* seconds:
    read them with ``sim.world.calibration.load_records(..., time_scale=time_scale)``.
    Returns ``{"attempts": path, "tasks": path, "served": twin answer counts,
    "wall_s": seconds, "stalls": [(start_s, end_s), ...], "stalled_s": total}``.
    Blocks for about the trace's span x ``time_scale``.

    ``stalls`` are the windows, in scenario seconds, in which the router's event loop
    did not run for more than ``stall_s`` scenario seconds (a heartbeat measures it):
    on a busy machine the process is descheduled, and every call in flight then comes
    back ``1 / time_scale`` times later in scenario time -- a timeout the provider
    never caused. Pass them to :func:`sim.world.calibration.calibrate` and
    :func:`validate` (``stalls=``), which leave those calls out.
    """
    import asyncio
    import gc
    import sys
    import time
    from pathlib import Path

    from router.live import Router
    from router.recording import AttemptRecorder, TraceRecorder
    from router.validation import validate as validate_answer
    from sim.traces.tasks import replay_columns
    from sim.twin.fidelity import _BUG_SOURCE, _PROMPTS, fidelity_tasks, twin_config
    from sim.twin.server import TwinServer, answer_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attempts_path, tasks_path = out / "attempts.ndjson", out / "tasks.ndjson"
    for p in (attempts_path, tasks_path):
        p.unlink(missing_ok=True)  # a recorder appends: start from nothing
    cols = replay_columns(trace)
    tasks = fidelity_tasks(cols)
    # Warm the validators (sqlglot's import alone takes longer than a scaled call).
    for task_type, prompt in _PROMPTS.items():
        spec = {"source": _BUG_SOURCE} if task_type == "bug_patch" else None
        validate_answer(task_type, answer_text("ok", task_type, prompt), spec)

    stalls: list[tuple[float, float]] = []

    async def heartbeat(loop: asyncio.AbstractEventLoop, t0: float, done: asyncio.Event) -> None:
        # The loop wakes this every tick; waking late by more than stall_s (scenario) is
        # a stall of the whole process (the twin's thread shares its interpreter).
        tick = min(0.005, stall_s * time_scale / 4)
        while not done.is_set():
            due = loop.time() + tick
            await asyncio.sleep(tick)
            late = loop.time() - due
            if late > stall_s * time_scale:
                stalls.append(((due - t0) / time_scale, (loop.time() - t0) / time_scale))

    async def route_all(live: RouterConfig, twin: TwinServer) -> None:
        clock = _ShiftableClock()
        router = Router(
            live,
            seed=seed,
            clock=clock,
            recorder=TraceRecorder(tasks_path),
            attempt_recorder=AttemptRecorder(attempts_path),
        )
        async with router:
            for m in live.models:
                router.provider(m.id)
            loop = asyncio.get_running_loop()

            async def one(task: Any) -> None:
                await asyncio.sleep(max(0.0, t0 + task.arrival_s * time_scale - loop.time()))
                await router.route(task)

            twin.reset()  # scenario time 0 of the twin ...
            clock.restart()  # ... is the recording's 0 too
            router._t0 = clock()  # the recorder's epoch (read at construction)
            t0 = loop.time()
            done = asyncio.Event()
            beat = asyncio.create_task(heartbeat(loop, t0, done))
            try:
                await asyncio.gather(*(one(t) for t in tasks))
            finally:
                done.set()
                await beat

    # As sim.twin.fidelity.run_fidelity: freeze the long-lived objects (a full collection
    # would stall both the router and the twin) and shorten the GIL switch interval
    # (the twin thread would otherwise wait 5 ms for the interpreter).
    gc.collect()
    gc.freeze()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        with TwinServer(
            scenario,
            seed=seed if twin_seed is None else twin_seed,
            time_scale=time_scale,
            trace_key=trace_key(cols),
        ) as twin:
            live = twin_config(config, twin.url, time_scale)
            started = time.perf_counter()
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(route_all(live, twin))
            else:
                # Called from a running loop (a notebook's kernel): route on a fresh loop
                # in a worker thread instead.
                import concurrent.futures

                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    pool.submit(asyncio.run, route_all(live, twin)).result()
            wall = time.perf_counter() - started
            served = dict(twin.served)
    finally:
        sys.setswitchinterval(switch)
        gc.unfreeze()
    from sim.world.calibration import _merge_windows

    merged = _merge_windows(stalls)
    return {
        "attempts": attempts_path,
        "tasks": tasks_path,
        "served": served,
        "wall_s": wall,
        "stalls": merged,
        "stalled_s": float(sum(b - a for a, b in merged)),
    }
