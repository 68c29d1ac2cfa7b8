"""Per-task records and summaries of simulated runs.

A :class:`ResultSink` receives every finished task. It keeps compact columns
(numbers, not objects) for the summary and figures and, when given a writer,
streams the full per-task records to Parquet in chunks, so a million-task
replay holds tens of megabytes, not gigabytes.

Summary keys (:func:`summarize`):

* ``tasks``, ``completed``, ``completion_rate``, ``cost_usd``, ``cost_per_task``,
  ``cost_per_success``;
* ``latency_mean_s``, ``latency_p50_s``, ``latency_p95_s``, ``latency_p99_s``: end-to-end
  latency (waits and failover included) of the *successful* tasks only — a task that
  fails fast is not a fast task, so failing can never improve these;
* ``time_to_failure_mean_s``, ``time_to_failure_p95_s``: how long failed tasks took to
  fail (0 when none failed); ``failed`` counts them;
* ``throughput_per_hour`` (completed tasks per hour between the first arrival and the
  last finish);
* ``fallback_rate``: share of tasks completed by a model other than their route's first
  candidate, whatever the reason (the first failed or was skipped); ``retry_rate``:
  share of tasks that called some model more than once;
* ``failures``: failed tasks by reason (``exhausted``, ``no_candidate``, ``deadline``,
  ``content_filter``, ``bad_spec``, ...); ``no_candidate_causes``: the no_candidate
  tasks by the skip reasons that emptied their route (``breaker_open``,
  ``budget+cost``...);
* ``per_route``: per route ``tasks``, ``completed``, ``completion_rate``,
  ``failures``; ``diagnosis``: one line naming the largest cause of failure when
  completion is below 0.95 (else null);
* ``breaker_trips``, ``budget_rejections`` (tasks that had a candidate skipped for
  budget), ``budget_alerts``, and ``per_model`` (``share`` of completed tasks it
  served, ``spend``, ``calls``, ``error_rate`` = failed calls / calls).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from mypy_extensions import mypyc_attr

from router import TaskResult

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

# pyarrow and scipy are imported when first needed (writing Parquet, a CI), not with
# this module: ``sim --help`` and a replay without ``--out`` start without them.
_TASK_FIELDS: tuple[tuple[str, str], ...] = (
    ("trace", "string"),
    ("replication", "int32"),
    ("seed", "int64"),
    ("task_id", "string"),
    ("task_type", "string"),
    ("route", "string"),
    ("started_s", "float64"),
    ("success", "bool_"),
    ("model", "string"),
    ("cost_usd", "float64"),
    ("latency_s", "float64"),
    ("attempts", "int32"),
    ("models_tried", "string"),
    ("failures", "string"),
    ("skips", "string"),
    ("error", "string"),
    ("fell_back", "bool_"),
    ("first_candidate", "string"),
)


#: Columns of a per-task record buffered as Python values (the rest come from arrays).
_TEXT_COLUMNS: tuple[str, ...] = (
    "task_id",
    "task_type",
    "route",
    "model",
    "attempts",
    "models_tried",
    "failures",
    "skips",
    "error",
    "first_candidate",
)


@lru_cache(maxsize=1)
def task_schema() -> pa.Schema:
    """The Arrow schema of ``tasks.parquet`` (one row per task)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in _TASK_FIELDS])


@lru_cache(maxsize=1)
def _piece_schema() -> pa.Schema:
    """:func:`task_schema` less the columns that are the same for every task of a run."""
    import pyarrow as pa

    schema = task_schema()
    return pa.schema([f for f in schema if f.name not in ("trace", "replication", "seed")])


#: Why a failed task failed (TaskResult.error); index 0 is "succeeded".
ERRORS: tuple[str, ...] = (
    "",
    "exhausted",
    "no_candidate",
    "deadline",
    "content_filter",
    "bad_spec",
    "cancelled",
    "error",
    "other",
)
_ERROR_CODE = {e: i for i, e in enumerate(ERRORS)}
#: Skip reasons, one bit each in the ``cause`` column of a no_candidate task.
SKIP_REASONS: tuple[str, ...] = (
    "preview",
    "deprecated",
    "context",
    "cost",
    "latency",
    "quality",
    "deadline",
    "breaker_open",
    "budget",
)
_SKIP_BIT = {r: 1 << i for i, r in enumerate(SKIP_REASONS)}
# ResultSink.flags: the ERRORS index in the low four bits, then one bit per flag.
_ERROR_BITS = 0x0F
_FELL_BACK = 0x10
_RETRIED = 0x20
_BUDGET_HIT = 0x40
#: Completion below this gets a one-line diagnosis in the summary.
DIAGNOSE_BELOW = 0.95

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
    "time_to_failure_mean_s",
    "time_to_failure_p95_s",
    "throughput_per_hour",
    "fallback_rate",
    "retry_rate",
    "breaker_trips",
    "budget_rejections",
    "budget_alerts",
)


@mypyc_attr(allow_interpreted_subclasses=True)  # replays and validation extend it
class ResultSink:
    """Collects finished tasks of one run; optionally streams them to Parquet.

    Nothing of a :class:`TaskResult` is kept after :meth:`add`: its numbers go into
    compact arrays (for the summary) and, with a writer, its per-task record into
    column buffers (strings and the numbers' positions), written as one Parquet row
    group every :attr:`CHUNK` tasks and by :meth:`flush`. So the sink holds no
    per-task Python objects beyond one chunk, and the garbage collector has nothing
    of it to walk.
    """

    CHUNK: ClassVar[int] = 65_536
    #: Buffered records are turned from Python values into Arrow columns every PIECE
    #: tasks: a whole chunk's Python values held ~50 MiB, and turning them into a
    #: table at once added as much again at every write.
    PIECE: ClassVar[int] = 8_192

    def __init__(
        self,
        model_ids: Sequence[str],
        *,
        writer: pq.ParquetWriter | None = None,
        trace: str = "",
        replication: int = 0,
        seed: int = 0,
        every_chunk: Callable[[], None] | None = None,
    ) -> None:
        self.model_index = {m: i for i, m in enumerate(model_ids)}
        self.model_ids = list(model_ids)
        self.writer = writer
        self.trace = trace
        self.replication = replication
        self.seed = seed
        #: called after every :attr:`CHUNK` tasks, and with a writer also before each
        #: chunk's write (a replay hands freed memory back)
        self.every_chunk = every_chunk
        self.started = array("d")
        self.latency = array("d")
        self.cost = array("d")
        # One byte a task for five columns (4 bytes a task less on long runs): the
        # index into ERRORS (0 exactly when the task succeeded, so success is
        # ``code == 0``) in the low bits, then the fell_back, retried and budget_hit
        # flags (:data:`_FELL_BACK`, :data:`_RETRIED`, :data:`_BUDGET_HIT`).
        self.flags = bytearray()
        # Final model index, -1 when failed: one byte while the indices fit in it.
        self.model = array("b" if len(self.model_ids) < 128 else "h")
        self.cause = array("H")  # no_candidate: bitmask of SKIP_REASONS, else 0
        self.route_names: list[str] = []
        self._route_code: dict[str, int] = {}
        # Route codes: one byte a task, widened (once) if a run ever has 256 routes.
        self.route = array("B")
        # Per-task record columns not held in the arrays above (writer only), and the
        # first array row not yet written.
        self._text: tuple[list[Any], ...] = tuple([] for _ in _TEXT_COLUMNS)
        self._written = 0
        # Records already turned into Arrow (rows _written.._converted), not written.
        self._pieces: list[pa.Table] = []
        self._converted = 0

    def add(self, r: TaskResult) -> None:
        success = r.success
        model = r.model
        first = r.first_candidate
        attempts = r.attempts
        skips = r.skips
        self.started.append(r.started_s)
        self.latency.append(r.latency_s)
        self.cost.append(r.cost_usd)
        n_attempts = len(attempts)
        retried = False
        tried: list[str] | None = None
        if n_attempts > 1:
            tried = []
            for a in attempts:
                if a.model in tried:
                    retried = True
                else:
                    tried.append(a.model)
        self.model.append(self.model_index[model] if model is not None else -1)
        error = r.error
        code = 0 if success else _ERROR_CODE.get(error or "other", 8)
        flags = code
        if success and model != first:
            flags |= _FELL_BACK
        if retried:
            flags |= _RETRIED
        if skips and any(reason == "budget" for _, reason in skips):
            flags |= _BUDGET_HIT
        self.flags.append(flags)
        cause = 0
        if code == 2:  # no_candidate: which skip reasons emptied the route
            for _, reason in skips:
                cause |= _SKIP_BIT.get(reason, 0)
        self.cause.append(cause)
        route = r.route
        rc = self._route_code.get(route)
        if rc is None:
            rc = self._route_code[route] = len(self.route_names)
            self.route_names.append(route)
            if rc == 256:
                self.route = array("H", self.route)
        self.route.append(rc)
        if self.writer is not None:
            task_id, task_type, route_, model_, n_, tried_, failures, skips_, error_, first_ = (
                self._text
            )
            task_id.append(r.task_id)
            task_type.append(r.task_type)
            route_.append(route)
            model_.append(model)
            n_.append(n_attempts)
            if tried is None:
                tried_.append(attempts[0].model if n_attempts else "")
            else:
                tried_.append(",".join(tried))
            failures.append(
                ",".join(f"{a.model}:{a.kind}" for a in attempts if a.kind != "ok")
                if n_attempts and (n_attempts > 1 or not success)
                else ""
            )
            skips_.append(",".join(f"{m}:{why}" for m, why in skips) if skips else "")
            error_.append(error)
            first_.append(first)
            full = len(self.started) - self._written >= self.CHUNK
            if full and self.every_chunk is not None:
                # The churn of the chunk's tasks, freed but kept by the allocators, is
                # handed back before the write's buffers come on top of it (the write
                # is a run's memory peak: tens of MiB less).
                self.every_chunk()
            if full or len(task_id) >= self.PIECE:
                self._convert()
                if full:
                    self.flush()
        if self.every_chunk is not None and not len(self.started) % self.CHUNK:
            self.every_chunk()

    def _convert(self) -> None:
        """Turn the records buffered as Python values into an Arrow piece (every
        column but ``trace``, ``replication`` and ``seed``, which the write adds)."""
        import pyarrow as pa

        lo, hi = self._converted, len(self.started)
        if hi == lo:
            return
        text = dict(zip(_TEXT_COLUMNS, self._text, strict=True))
        # Copies: a view would pin the growing buffers (they cannot resize while exported).
        flags = np.frombuffer(self.flags, dtype=np.uint8)[lo:hi]
        columns: dict[str, Any] = {
            "started_s": np.frombuffer(self.started, dtype=np.float64)[lo:hi].copy(),
            "success": (flags & _ERROR_BITS) == 0,
            "cost_usd": np.frombuffer(self.cost, dtype=np.float64)[lo:hi].copy(),
            "latency_s": np.frombuffer(self.latency, dtype=np.float64)[lo:hi].copy(),
            "fell_back": (flags & _FELL_BACK) != 0,
            **text,
        }
        del flags
        schema = _piece_schema()
        self._pieces.append(pa.table({name: columns[name] for name in schema.names}, schema=schema))
        self._converted = hi
        for column in self._text:
            column.clear()

    def _pending_table(self) -> pa.Table:
        """The records added since the last write, as one table of :func:`task_schema`
        (its ``trace`` is :attr:`trace` now)."""
        import pyarrow as pa

        self._convert()
        n = len(self.started) - self._written
        piece = pa.concat_tables(self._pieces) if self._pieces else _piece_schema().empty_table()
        constant = {
            "trace": [self.trace] * n,
            "replication": [self.replication] * n,
            "seed": [self.seed] * n,
        }
        schema = task_schema()
        return pa.table(
            {name: constant[name] if name in constant else piece[name] for name in schema.names},
            schema=schema,
        )

    def _clear_pending(self) -> None:
        self._written = self._converted = len(self.started)
        self._pieces.clear()
        for column in self._text:
            column.clear()

    def flush(self) -> None:
        """Write buffered per-task records to the Parquet writer (one row group)."""
        if self.writer is None or len(self.started) == self._written:
            return
        self.writer.write_table(self._pending_table())
        self._clear_pending()

    def route_codes(self) -> tuple[list[str], np.ndarray]:
        """Each task's route as the distinct names (in order of first appearance) and a
        view of the sink's codes into them (add no task after this)."""
        codes = np.frombuffer(
            self.route, dtype=np.uint8 if self.route.typecode == "B" else np.uint16
        )
        return list(self.route_names), codes

    def route_array(self) -> np.ndarray:
        """Each task's route name (an object array: ``arrays()["route"]``)."""
        names, codes = self.route_codes()
        return np.asarray(names, dtype=object)[codes] if names else np.empty(0, dtype=object)

    def arrays(self, *, route: bool = True) -> dict[str, np.ndarray]:
        """The compact columns as numpy arrays (``started_s``, ``latency_s``,
        ``cost_usd`` and ``cause`` are views of the sink's buffers: add no task after
        this; the others are decoded, in the dtypes they always had). ``route=False``
        leaves out ``route`` (8 bytes a task: see :meth:`route_codes`)."""
        flags = np.frombuffer(self.flags, dtype=np.uint8)
        model = np.frombuffer(self.model, dtype=np.int8 if self.model.typecode == "b" else np.int16)
        error = flags & _ERROR_BITS
        out = {
            "started_s": np.frombuffer(self.started, dtype=np.float64),
            "latency_s": np.frombuffer(self.latency, dtype=np.float64),
            "cost_usd": np.frombuffer(self.cost, dtype=np.float64),
            "success": error == 0,
            "fell_back": (flags & _FELL_BACK) != 0,
            "budget_hit": (flags & _BUDGET_HIT) != 0,
            "model": model.astype(np.int16),
            "retried": (flags & _RETRIED) != 0,
            "error": error,
            "cause": np.frombuffer(self.cause, dtype=np.uint16),
        }
        if route:
            # Route names, not codes: arrays of several sinks concatenate correctly.
            out["route"] = self.route_array()
        return out


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
    routes: tuple[Sequence[str], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The summary of one run (see the module docstring for the keys).

    ``routes``: each task's route as distinct names and codes indexing them
    (:meth:`ResultSink.route_codes`), in place of ``arrays["route"]`` (which may then be
    absent): the same summary without an object per task.
    """
    n = int(arrays["latency_s"].size)
    success = arrays["success"]
    completed = int(success.sum())
    failed = n - completed
    cost = float(arrays["cost_usd"].sum())
    lat = arrays["latency_s"]
    # The selections below are this function's own copies: the means are taken first
    # (a sum depends on the order), then the percentiles partition the copies in place
    # rather than copying them again (8 bytes a task less at the run's peak).
    if completed:
        ok_lat = lat[success]
        mean_ok = float(ok_lat.mean())
        p50, p95, p99 = (
            float(x) for x in np.percentile(ok_lat, [50, 95, 99], overwrite_input=True)
        )
        del ok_lat
    else:
        p50 = p95 = p99 = mean_ok = 0.0
    if failed:
        bad_lat = lat[~success]
        ttf_mean = float(bad_lat.mean())
        ttf_p95 = float(np.percentile(bad_lat, 95, overwrite_input=True))
        del bad_lat
    else:
        ttf_mean = ttf_p95 = 0.0
    if n:
        first = float(arrays["started_s"].min())
        last = _last_finish(arrays["started_s"], lat)
        hours = max(last - first, 1e-9) / 3600.0
    else:
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
    errors = arrays.get("error")
    failures_by, causes, per_route = (
        _failure_breakdown(arrays, routes) if errors is not None else ({}, {}, {})
    )
    completion = completed / n if n else 0.0
    return {
        "tasks": n,
        "completed": completed,
        "failed": failed,
        "completion_rate": _f(completion),
        "cost_usd": _f(cost),
        "cost_per_task": _f(cost / n) if n else 0.0,
        "cost_per_success": _f(cost / completed) if completed else (math.inf if cost else 0.0),
        "latency_mean_s": _f(mean_ok),
        "latency_p50_s": _f(p50),
        "latency_p95_s": _f(p95),
        "latency_p99_s": _f(p99),
        "time_to_failure_mean_s": _f(ttf_mean),
        "time_to_failure_p95_s": _f(ttf_p95),
        "throughput_per_hour": _f(completed / hours) if hours else 0.0,
        "fallback_rate": _f(float(arrays["fell_back"].mean())) if n else 0.0,
        "retry_rate": _f(float(arrays["retried"].mean())) if n and "retried" in arrays else 0.0,
        "breaker_trips": int(breaker_trips),
        "budget_rejections": int(arrays["budget_hit"].sum()),
        "budget_alerts": int(budget_alerts),
        "failures": failures_by,
        "no_candidate_causes": causes,
        "per_route": per_route,
        "diagnosis": _diagnose(completion, failed, failures_by, causes, per_route, arrays, routes),
        "per_model": per_model,
    }


def _last_finish(started: np.ndarray, latency: np.ndarray) -> float:
    """``max(started + latency)``, summed a slice at a time (no array of every task's
    finish)."""
    step = 1 << 16
    return max(
        float((started[lo : lo + step] + latency[lo : lo + step]).max())
        for lo in range(0, started.size, step)
    )


def _route_codes(routes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct route names, sorted, and each task's index into them (what
    ``np.unique(routes.astype(str), return_inverse=True)`` gives, without a text copy
    of every task's route: a run has a handful of routes and millions of tasks).

    Two passes a slice at a time: the distinct values, then each task's rank, straight
    into the narrowest integer dtype (one byte a task for up to 256 routes): no list
    of every task's route, and no 32-bit code per task."""
    n = routes.size
    step = 1 << 16
    seen: set[Any] = set()
    for lo in range(0, n, step):
        seen.update(routes[lo : lo + step].tolist())
    names = sorted({str(v) for v in seen})
    rank = {name: j for j, name in enumerate(names)}
    code = {v: rank[str(v)] for v in seen}  # values with equal text share a rank
    inverse = np.empty(n, dtype=np.uint8 if len(names) <= 256 else np.int32)
    for lo in range(0, n, step):
        part = routes[lo : lo + step].tolist()
        inverse[lo : lo + len(part)] = np.fromiter(
            (code[v] for v in part), dtype=inverse.dtype, count=len(part)
        )
    return names, inverse


def _sorted_codes(
    routes: tuple[Sequence[str], np.ndarray], keep: np.ndarray | None = None
) -> tuple[list[str], np.ndarray]:
    """What :func:`_route_codes` gives for the tasks of ``routes`` (names, codes)
    (those where ``keep`` is true, if given): the names present, sorted, and each
    task's index into them."""
    names, codes = routes
    if keep is not None:
        codes = codes[keep]
    present = np.flatnonzero(np.bincount(codes, minlength=len(names)))
    order = sorted(present.tolist(), key=lambda i: str(names[i]))
    rank = np.zeros(len(names), dtype=np.uint8 if len(order) <= 256 else np.int32)
    rank[order] = np.arange(len(order), dtype=rank.dtype)
    return [str(names[i]) for i in order], rank[codes]


def _cause_name(mask: int) -> str:
    return "+".join(r for r, bit in _SKIP_BIT.items() if mask & bit) or "none"


def _failure_breakdown(
    arrays: dict[str, np.ndarray],
    routes: tuple[Sequence[str], np.ndarray] | None = None,
) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, Any]]]:
    """Failed tasks by reason, no_candidate tasks by cause, and per-route figures."""
    errors = arrays["error"]
    codes, counts = np.unique(errors[errors > 0], return_counts=True)
    failures_by = {ERRORS[int(c)]: int(k) for c, k in zip(codes, counts, strict=True)}
    cause = arrays["cause"][errors == 2]
    masks, mcounts = np.unique(cause, return_counts=True)
    causes = {_cause_name(int(m)): int(k) for m, k in zip(masks, mcounts, strict=True)}
    per_route: dict[str, dict[str, Any]] = {}
    if routes is not None or arrays["route"].size:
        names, inverse = (
            _sorted_codes(routes) if routes is not None else _route_codes(arrays["route"])
        )
        for j, name in enumerate(names):
            mask = inverse == j
            tasks = int(mask.sum())
            done = int(arrays["success"][mask].sum())
            errs = errors[mask]
            rc, rk = np.unique(errs[errs > 0], return_counts=True)
            per_route[name] = {
                "tasks": tasks,
                "completed": done,
                "completion_rate": _f(done / tasks) if tasks else 0.0,
                "failures": {ERRORS[int(c)]: int(k) for c, k in zip(rc, rk, strict=True)},
            }
    return failures_by, causes, per_route


def _diagnose(
    completion: float,
    failed: int,
    failures_by: dict[str, int],
    causes: dict[str, int],
    per_route: dict[str, dict[str, Any]],
    arrays: dict[str, np.ndarray],
    routes: tuple[Sequence[str], np.ndarray] | None = None,
) -> str | None:
    """One line naming the largest single cause of failure, when completion is low."""
    if not failed or completion >= DIAGNOSE_BELOW or ("route" not in arrays and routes is None):
        return None
    errors = arrays["error"]
    bad = errors > 0
    names, inverse = (
        _sorted_codes(routes, bad) if routes is not None else _route_codes(arrays["route"][bad])
    )
    # Failed tasks counted by (route, error, cause), on integers: text keys for every
    # failed task took gigabytes on long runs. The top key is the most frequent, a tie
    # going to the smallest "route|error|cause" text (what sorting the texts gave).
    triple = (
        inverse.astype(np.int64) << 24
        | errors[bad].astype(np.int64) << 16
        | arrays["cause"][bad].astype(np.int64)
    )
    uniq, counts = np.unique(triple, return_counts=True)
    keys = [f"{names[k >> 24]}|{(k >> 16) & 0xFF}|{k & 0xFFFF}" for k in uniq.tolist()]
    top = min(range(len(keys)), key=lambda i: (-int(counts[i]), keys[i]))
    route, code, mask = keys[top].split("|")
    share = counts[top] / failed
    error = ERRORS[int(code)]
    if error == "no_candidate":
        what = f"every model of {route} skipped as {_cause_name(int(mask))}"
    elif error == "exhausted":
        what = f"every model of {route} tried and failed"
    elif error == "deadline":
        what = f"{route} ran out of its max_latency_ms before a candidate fit"
    else:
        what = f"{route} ended as {error}"
    return f"{share:.0%} of failures: {what}"


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return 0.0, 0.0
    m = float(x.mean())
    if x.size < 2 or not np.all(np.isfinite(x)):
        return m, 0.0
    sd = float(x.std(ddof=1))
    t = _t_quantile(0.5 + level / 2, int(x.size) - 1)
    return m, t * sd / math.sqrt(x.size)


@lru_cache(maxsize=64)
def _t_quantile(q: float, df: int) -> float:
    """Student-t quantile (scipy, imported on first use: it costs ~0.4 s to import)."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


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
    out["failed"] = _f(float(np.mean([r.get("failed", 0) for r in runs])))
    for key in ("failures", "no_candidate_causes"):
        names = sorted({k for r in runs for k in r.get(key, {})})
        # Mean count per replication, like every other figure here.
        out[key] = {k: _f(float(np.mean([r.get(key, {}).get(k, 0) for r in runs]))) for k in names}
    routes = sorted({k for r in runs for k in r.get("per_route", {})})
    out["per_route"] = {}
    for name in routes:
        rows = [r.get("per_route", {}).get(name) for r in runs]
        rows = [row for row in rows if row is not None]
        reasons = sorted({k for row in rows for k in row["failures"]})
        out["per_route"][name] = {
            "tasks": _f(float(np.mean([row["tasks"] for row in rows]))),
            "completed": _f(float(np.mean([row["completed"] for row in rows]))),
            "completion_rate": _f(float(np.mean([row["completion_rate"] for row in rows]))),
            "failures": {
                k: _f(float(np.mean([row["failures"].get(k, 0) for row in rows]))) for k in reasons
            },
        }
    seen = [r.get("diagnosis") for r in runs if r.get("diagnosis")]
    # The most frequent line; a tie goes to the earliest replication's (max keeps the
    # first maximum). Not max(set(seen)): a set's order of strings follows the
    # per-process hash seed, which made tied diagnoses differ from run to run.
    out["diagnosis"] = max(seen, key=seen.count) if seen else None
    out["replications"] = len(runs)
    out["ci"] = ci
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of B − A over the same seeds: mean diff and its 95% CI."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    m, h = mean_ci(d)  # type: ignore[arg-type]
    return {
        "a": _f(float(np.mean(a))),
        "b": _f(float(np.mean(b))),
        "diff": _f(m),
        "diff_ci_low": _f(m - h),
        "diff_ci_high": _f(m + h),
    }
