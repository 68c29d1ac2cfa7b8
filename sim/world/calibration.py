"""Fit a scenario from recorded attempts: ``sim calibrate``.

:func:`calibrate` reads what the router (or another tool) recorded -- attempt records
(:mod:`sim.traces.attempts`), and task records where they help -- and fits every figure
of a :class:`~sim.world.scenario.Scenario`. :func:`render_yaml` writes the fit as YAML with a
comment beside each fitted number (how many observations it rests on, a 95% CI and,
for a distribution, its goodness of fit), and :func:`write_calibration` writes that
file after loading it back with the scenario loader. The methods, in brief:

Completion (per model and task type), difficulty, unsolvable share, retry correlation
    The scenario's world (:mod:`sim.world.providers`): task ``i`` has a latent difficulty
    ``d = sigma z`` (``z ~ N(0, 1)``), is unsolvable with probability ``u``; attempt
    ``k`` of model ``m`` succeeds iff ``sqrt(rho) eta_im + sqrt(1 - rho) eps_imk <
    a_mt - d``. A router falls back only after failures, so the tasks a second model
    sees are harder than average: per-attempt success shares of later models are
    biased. The fit is the maximum likelihood of *each task's whole sequence of
    answers* under the latent model, integrating ``z`` (and each model's ``eta``) by
    Gauss-Hermite quadrature. Because it conditions on everything observed (which
    models answered, how often, with what), the router's choices -- functions of what
    it had seen -- drop out of the likelihood and the selection is accounted for.
    Which answers carry information: ``ok`` (solved) and ``validation`` /
    ``malformed`` (not solved); a timeout, 5xx or 429 says nothing about the task.
    ``sigma`` and ``u`` are identified from tasks with two or more answers (a retry
    or a fallback), ``rho`` from tasks that retried a model after an answer; without
    such tasks they are fixed at 0 and the YAML says so. CIs: Wald intervals from the
    observed information (a Hessian from the analytic gradient), mapped to ``p`` by
    the delta method (``profile=True``: profile-likelihood intervals for ``sigma``,
    ``u`` and ``rho``). Each model's ``beta_concentration`` is set so that the Beta
    draws of a replication have the spread of those CIs: replays carry the fit's
    own uncertainty.
Latency (per model)
    ``latency = base + prompt_tokens x per_input_token_s + completion_tokens x
    per_output_token_s``: the per-token terms by median regression (robust to the
    heavy tail; Powell's censored version, so that timeouts -- right-censored
    observations: the answer would have taken longer than the wait -- do not bias the
    slopes), each kept when its sizes vary and its bootstrap CI excludes 0. The shape
    of ``base`` (the time to first token of the token form) is chosen among
    lognormal, gamma, Weibull, 2- and 3-component lognormal mixtures and the
    empirical distribution (kernel-smoothed) by held-out log-likelihood (5 folds, 10
    below 500 values; censored points scored by their survival probability), a near
    tie going to the simpler family, among the families whose held-out values' PITs
    pass a KS test of uniformity (the likelihood alone can prefer a family that puts a
    spike on a cluster and the bulk of its CDF in the wrong place). A mixture is written as one
    (``dist: lognormal_mixture``: weights, mu and sigma per component); an empirical fit
    as its quantiles (``dist: empirical``). Goodness of
    fit: the Kolmogorov-Smirnov distance of the fit from the Kaplan-Meier estimate
    and the Anderson-Darling statistic of the uncensored values.
Errors
    ``server_error_rate``: 5xx and connection failures outside outage episodes per
    call that reached the model; ``malformed_rate``: the maximum-likelihood share of
    malformed answers among unsolved answers, times ``1 - p`` (the world's rule, which
    selection does not bias); ``fail_fast_latency_s``: the median latency of fast
    failures; timeouts are not a parameter (they follow from the latency and the
    config's timeouts) but are reported.
Outages
    Per provider (the config's grouping; each model alone without a config), runs of
    fast failures (5xx, connection errors) or of timeouts so long that the baseline
    rate of that kind would produce one by chance with probability below 5% in the
    whole log are outage episodes; their ends are placed half-way between the last
    answer and the first failure (and back). Timeouts at several providers at once
    are the recording client stalling, not an outage, and are left out (of the
    error rates and censored latencies too). Up-times and lengths get families
    chosen by held-out likelihood from ``MIN_EPISODES`` episodes on; with fewer, the
    up-time is exponential at the observed rate and the length lognormal, fitted to
    3 or more episodes, else with the observed median and the shape of the shipped
    seed scenario's public status-page figures; with none, the seed scenario's
    status-page process itself. The YAML says which.
Rate limits, context windows, prices
    ``rate_limit_rpm``: the median number of calls a model accepted in the clock
    minutes in which it answered a 429; ``retry_after_s`` the median Retry-After;
    ``context_window`` the largest prompt answered when some prompt was refused as
    too long; prices by least squares of the recorded cost on the token counts (token
    prices when they explain the costs, else ``cost_per_task``). Capacity (a
    concurrency limit) is not fitted: queueing shows only as latency.
Models in the config but not in the records
    Their figures come from the config's profile, and the YAML says so.

Every error of the input is a :class:`~router.errors.InputError` (a
:class:`~sim.errors.TraceError` or :class:`~sim.errors.ScenarioError`) with one line.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from scipy import optimize, special, stats

from router.errors import InputError
from router.task import TASK_TYPES
from sim.errors import TraceError

if TYPE_CHECKING:
    from router import RouterConfig
    from sim.world.scenario import Scenario

__all__ = [
    "ANSWERED",
    "Calibration",
    "CompletionFit",
    "Estimate",
    "LatencyFit",
    "MIN_EPISODES",
    "OutageFit",
    "Records",
    "calibrate",
    "fit_completion",
    "fit_latency",
    "load_records",
    "render_yaml",
    "scale_times",
    "write_calibration",
]

#: Outcomes that are answers (the model produced something the router judged).
ANSWERED: frozenset[str] = frozenset({"ok", "validation", "malformed"})
#: Answers that did not solve the task.
UNSOLVED: frozenset[str] = frozenset({"validation", "malformed"})
#: Outcomes that say "the model is unavailable" (and, outside outages, 5xx-like errors).
FAST_FAILURES: frozenset[str] = frozenset({"server_error", "connect", "connection"})
#: Outcomes of an answer that did not arrive in time (right-censored latencies).
TIMEOUTS: frozenset[str] = frozenset({"timeout", "first_token_timeout"})
#: Episodes needed before outage up-times and lengths are fitted rather than
#: borrowed (in part) from the seed scenario's public status-page figures.
MIN_EPISODES = 10
#: Observations below which a family cannot be fitted; the latency is then lognormal.
_MIN_LATENCY_N = 8
#: z of a two-sided 95% interval.
_Z95 = float(special.ndtri(0.975))
#: The lognormal shape of outage lengths in the shipped seed scenario (OpenAI's public
#: status-page figures: median 72 min, p90 5 h), used when a log has too few episodes.
_STATUS_PAGE_KEY = "openai"


# --------------------------------------------------------------------------- basics
@dataclass(frozen=True)
class Estimate:
    """One fitted number: its value, how many observations it rests on, a 95% CI
    (``None`` when there is none to give) and a note (method, goodness of fit, or
    why it is not fitted). :meth:`comment` is the YAML comment beside the value."""

    value: float
    n: int
    ci: tuple[float, float] | None = None
    note: str = ""

    def comment(self, unit: str = "") -> str:
        parts = [f"n={self.n:,}"]
        if self.ci is not None:
            lo, hi = self.ci
            parts.append(f"95% CI [{_num(lo)}, {_num(hi)}]{unit}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def _num(x: float, digits: int = 4) -> str:
    """A number as YAML reads it back as a float: ``digits`` significant digits, fixed
    notation for everyday magnitudes (PyYAML reads ``5e-05`` as a string, so an
    exponent always comes with a decimal point)."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    text = f"{x:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        e = int(exp)
        if -8 <= e < 0:
            text = f"{x:.{digits - 1 - e}f}"
        elif 0 < e < 16:
            return str(round(x))
        else:
            if "." not in mant:
                mant += ".0"
            return f"{mant}e{exp}"
    if "." in text:
        text = text.rstrip("0").rstrip(".") or "0"
    return text


def _wilson(k: float, n: float) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``k / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    if k <= 0:
        return (0.0, float(1 - 0.025 ** (1 / n)))  # Clopper-Pearson at 0
    z2 = _Z95 * _Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _median_ci(x: np.ndarray) -> tuple[float, float]:
    """A distribution-free 95% interval of the median (binomial order statistics)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    lo = int(stats.binom.ppf(0.025, n, 0.5))
    hi = int(stats.binom.ppf(0.975, n, 0.5))
    return (float(x[max(0, lo - 1)]), float(x[min(n - 1, hi)]))


# ------------------------------------------------------------------------- records
@dataclass
class Records:
    """What :func:`calibrate` reads: attempt records (the :mod:`sim.traces.attempts`
    schema, sorted by start) and, when given, task records (the :mod:`sim.traces.tasks`
    schema: arrivals, sizes and the tasks that never reached a model)."""

    attempts: pl.DataFrame
    tasks: pl.DataFrame | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def n_tasks(self) -> int:
        ids = set(self.attempts.get_column("task_id").unique().to_list())
        if self.tasks is not None:
            ids |= set(self.tasks.get_column("task_id").to_list())
        return len(ids)

    def task_table(self) -> pl.DataFrame:
        """One row per task: ``task_id, arrival_s, task_type, prompt_tokens,
        completion_tokens``, sorted by arrival.

        Arrivals and types come from the task records where given (they also list the
        tasks that never reached a model), else from the attempts. Sizes are the
        largest usage a call of the task reported (what one call of it takes); a task
        record's own sizes are used only for tasks no call reported usage for, because
        the live router records the *sum* of its calls' usage there.
        """
        from sim.traces.attempts import tasks_from_attempts

        cols = ["task_id", "arrival_s", "task_type", "prompt_tokens", "completion_tokens"]
        implied = tasks_from_attempts(self.attempts).select(cols)
        if self.tasks is None:
            return implied
        given = self.tasks.select(cols)
        sizes = implied.select(
            "task_id",
            pl.col("prompt_tokens").alias("_ipt"),
            pl.col("completion_tokens").alias("_ict"),
        )
        merged = given.join(sizes, on="task_id", how="left").with_columns(
            pl.when(pl.col("_ipt") > 0)
            .then(pl.col("_ipt"))
            .otherwise(pl.col("prompt_tokens"))
            .alias("prompt_tokens"),
            pl.when(pl.col("_ict") > 0)
            .then(pl.col("_ict"))
            .otherwise(pl.col("completion_tokens"))
            .alias("completion_tokens"),
        )
        extra = implied.filter(~pl.col("task_id").is_in(given.get_column("task_id").implode()))
        return pl.concat([merged.select(cols), extra]).sort("arrival_s", "task_id")


def _file_kind(path: Path) -> str:
    """``"attempts"`` or ``"tasks"``, from the columns the file has (read cheaply)."""
    from sim.traces.tasks import TRACE_EXTENSIONS

    fmt = TRACE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(TRACE_EXTENSIONS)
        raise TraceError(
            f"{path}: unknown record format '{path.suffix or '(no extension)'}' "
            f"(expected one of {known})"
        )
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            columns = set(pq.read_schema(path).names)
        elif fmt == "csv":
            with open(path, encoding="utf-8") as fh:
                header = fh.readline()
            columns = {c.strip().strip('"') for c in header.split(",")}
        else:
            import json

            columns = set()
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except ValueError:
                            break  # the reader names the bad line
                        if isinstance(row, dict):
                            columns = set(row)
                        break
    except OSError as exc:
        raise TraceError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    except Exception as exc:  # a file that is not what its suffix says
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TraceError(f"{path}: not a readable {fmt} file ({first})") from None
    if {"attempt", "outcome"} <= columns:
        return "attempts"
    if "arrival_s" in columns:
        return "tasks"
    return "attempts"  # the attempt reader names the missing columns


def load_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    time_scale: float = 1.0,
) -> Records:
    """Read attempt records and task records from files or directories.

    Each file is read as attempt records when it has ``attempt`` and ``outcome``
    columns, else as a task trace (``arrival_s``...): the live router's
    :class:`~router.recording.AttemptRecorder` and
    :class:`~router.recording.TraceRecorder` outputs can be passed together. At
    least one attempt file is required. ``time_scale`` (the twin's, for a recording
    made against ``sim serve --time-scale X``) divides every time and duration.
    Raises :class:`TraceError` (one line, naming the file) for anything unreadable.
    """
    from sim.traces.attempts import discover_attempt_files, read_attempts
    from sim.traces.tasks import read_trace

    if not (isinstance(time_scale, int | float) and math.isfinite(time_scale) and time_scale > 0):
        raise InputError(f"time_scale: expected a positive number, got {time_scale!r}")
    files = discover_attempt_files(paths)
    attempt_files = [p for p in files if _file_kind(p) == "attempts"]
    task_files = [p for p in files if p not in attempt_files]
    if not attempt_files:
        names = ", ".join(str(p) for p in files)
        raise TraceError(
            f"{names}: no attempt records (task records only); record with "
            "Router(attempt_recorder=AttemptRecorder(path)) or import with sim import-..."
        )
    attempts = read_attempts(attempt_files)
    tasks = None
    if task_files:
        tasks = pl.concat([read_trace(p) for p in task_files], how="diagonal_relaxed")
        dup = tasks.get_column("task_id").is_duplicated()
        if dup.any():
            tid = tasks.filter(dup).get_column("task_id")[0]
            raise TraceError(f"{', '.join(map(str, task_files))}: task {tid!r} is recorded twice")
    records = Records(attempts, tasks, [str(p) for p in files])
    return scale_times(records, 1.0 / time_scale) if time_scale != 1.0 else records


def scale_times(records: Records, factor: float) -> Records:
    """``records`` with every time and duration multiplied by ``factor`` (e.g.
    ``1 / time_scale`` to read a recording made against a time-scaled twin in scenario
    seconds). Token counts and costs are unchanged."""
    cols = ("start_s", "latency_s", "ttft_s", "retry_after_s")
    attempts = records.attempts.with_columns(
        [(pl.col(c) * factor).alias(c) for c in cols if c in records.attempts.columns]
    )
    tasks = records.tasks
    if tasks is not None:
        tasks = tasks.with_columns(
            [
                (pl.col(c) * factor).alias(c)
                for c in ("arrival_s", "latency_s")
                if c in tasks.columns
            ]
        )
    return Records(attempts, tasks, list(records.sources))


# ------------------------------------------------------------------ distributions
# Each family: parameters on an unconstrained scale, log-density and log-survival of
# the censored likelihood, the CDF and quantile function, and the scenario mapping.
_LOG_FLOOR = -700.0


def _norm_logpdf(z: np.ndarray) -> np.ndarray:
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi)


def _mills(z: np.ndarray) -> np.ndarray:
    """phi(z) / (1 - Phi(z)), the inverse Mills ratio (stable in both tails)."""
    return np.exp(_norm_logpdf(z) - special.log_ndtr(-z))


#: The narrowest latency law any family may fit (sd of log latency): 0.3 %. Served
#: latencies can be that tight (llmperf runs: 2 % around the median); narrower would be a
#: spike on one value, and a sample of equal values (a fixed error delay) would drive
#: the fit's scale to 0 and its likelihood to infinity.
_MIN_SPREAD = 0.003
_LOG_MIN_SIGMA = math.log(_MIN_SPREAD)


class _Family:
    """A distribution family for a positive duration (the base latency)."""

    name = ""
    #: Complexity rank for breaking near ties (fewer parameters first).
    complexity = 2

    def init(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logpdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logsf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def cdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        return -np.expm1(self.logsf(th, x))

    def ppf(self, th: np.ndarray, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def loglik(self, th: np.ndarray, x: np.ndarray, cens: np.ndarray) -> np.ndarray:
        """Per-observation log-likelihood: density for exact values, survival for
        right-censored ones."""
        out = np.empty(x.shape)
        exact = ~cens
        out[exact] = self.logpdf(th, x[exact])
        if cens.any():
            out[cens] = self.logsf(th, x[cens])
        return np.maximum(np.nan_to_num(out, nan=_LOG_FLOOR, neginf=_LOG_FLOOR), _LOG_FLOOR)

    def grad(self, th: np.ndarray, x: np.ndarray, cens: np.ndarray) -> np.ndarray | None:
        """Gradient of the summed log-likelihood (None: use finite differences)."""
        return None

    def bounds(self, th: np.ndarray) -> list[tuple[float | None, float | None]] | None:
        return None

    def fit(self, x: np.ndarray, cens: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """Maximum likelihood with right-censoring (L-BFGS from ``start``, else
        :meth:`init`)."""
        exact = x[~cens] if (~cens).sum() >= 2 else x
        th0 = self.init(exact) if start is None else np.asarray(start, dtype=float)
        bounds = self.bounds(th0)
        if bounds is not None:  # a start outside them would be kept if nothing beat it
            lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
            hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
            th0 = np.clip(th0, lo, hi)
        analytic = self.grad(th0, x[:1], cens[:1]) is not None

        def nll(th: np.ndarray) -> Any:
            # Far from the optimum terms overflow; they are floored or zeroed here.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                v = -float(self.loglik(th, x, cens).sum())
                v = v if math.isfinite(v) else 1e300
                if not analytic:
                    return v
                g = -np.nan_to_num(self.grad(th, x, cens), nan=0.0, posinf=0.0, neginf=0.0)  # type: ignore[arg-type]
            return v, g

        # A relative tolerance of 1e-9 on a sum of thousands of log-densities is far
        # below what moves a fitted quantile.
        res = optimize.minimize(
            nll,
            th0,
            jac=analytic or None,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": 1e-9, "maxiter": 400},
        )
        f0 = nll(th0)
        f0 = f0[0] if analytic else f0
        best = res.x if res.fun <= f0 else th0
        return np.asarray(best, dtype=float)


class _LognormalF(_Family):
    name = "lognormal"

    def init(self, x: np.ndarray) -> np.ndarray:
        lx = np.log(x)
        return np.array([lx.mean(), math.log(max(lx.std(), _MIN_SPREAD))])

    def logpdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        mu, s = th[0], math.exp(th[1])
        lx = np.log(x)
        return _norm_logpdf((lx - mu) / s) - th[1] - lx

    def logsf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        return special.log_ndtr(-(np.log(x) - th[0]) / math.exp(th[1]))

    def ppf(self, th: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.exp(th[0] + math.exp(th[1]) * special.ndtri(u))

    def bounds(self, th: np.ndarray) -> list[tuple[float | None, float | None]]:
        return [(None, None), (_LOG_MIN_SIGMA, 5.0)]

    def grad(self, th: np.ndarray, x: np.ndarray, cens: np.ndarray) -> np.ndarray:
        s = math.exp(th[1])
        z = (np.log(x) - th[0]) / s
        h = _mills(z)
        d_mu = np.where(cens, h / s, z / s)
        d_ls = np.where(cens, h * z, z * z - 1.0)
        return np.array([d_mu.sum(), d_ls.sum()])


class _GammaF(_Family):
    name = "gamma"

    def init(self, x: np.ndarray) -> np.ndarray:
        m, v = x.mean(), max(x.var(), 1e-12)
        k = min(max(m * m / v, 0.05), _MIN_SPREAD**-2)
        return np.array([math.log(k), math.log(m / k)])

    def logpdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        k, sc = math.exp(th[0]), math.exp(th[1])
        return (k - 1) * np.log(x) - x / sc - special.gammaln(k) - k * th[1]

    def bounds(self, th: np.ndarray) -> list[tuple[float | None, float | None]]:
        # shape <= 1 / 0.003**2: a coefficient of variation of at least _MIN_SPREAD
        return [(-10.0, -2.0 * math.log(_MIN_SPREAD)), (-60.0, 60.0)]

    def logsf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        k, sc = math.exp(th[0]), math.exp(th[1])
        return np.log(np.maximum(special.gammaincc(k, x / sc), 1e-300))

    def cdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        return special.gammainc(math.exp(th[0]), x / math.exp(th[1]))

    def ppf(self, th: np.ndarray, u: np.ndarray) -> np.ndarray:
        return math.exp(th[1]) * special.gammaincinv(math.exp(th[0]), u)


class _WeibullF(_Family):
    name = "weibull"

    def init(self, x: np.ndarray) -> np.ndarray:
        lx = np.log(x)
        k = 1.2825 / max(lx.std(), _MIN_SPREAD)  # pi / sqrt(6) / sd(log x)
        return np.array([math.log(k), lx.mean() + 0.5772 / k])

    def logpdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        k = math.exp(th[0])
        lz = np.log(x) - th[1]
        return th[0] - th[1] + (k - 1) * lz - np.exp(np.minimum(k * lz, 700.0))

    def bounds(self, th: np.ndarray) -> list[tuple[float | None, float | None]]:
        # shape <= 1.2825 / 0.003: a spread of log x of at least _MIN_SPREAD
        return [(-10.0, math.log(1.2825 / _MIN_SPREAD)), (-60.0, 60.0)]

    def logsf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        return -np.exp(math.exp(th[0]) * (np.log(x) - th[1]))

    def ppf(self, th: np.ndarray, u: np.ndarray) -> np.ndarray:
        return math.exp(th[1]) * (-np.log1p(-u)) ** (1.0 / math.exp(th[0]))

    def grad(self, th: np.ndarray, x: np.ndarray, cens: np.ndarray) -> np.ndarray:
        k = math.exp(th[0])
        lz = np.log(x) - th[1]
        t = np.exp(np.minimum(k * lz, 700.0))
        # exact: log k - log lam + (k - 1) lz - t; censored: -t (t = (x / lam)^k)
        d_lk = np.where(cens, 0.0, 1.0 + k * lz) - t * k * lz
        d_ll = np.where(cens, 0.0, -k) + t * k
        return np.array([d_lk.sum(), d_ll.sum()])


class _MixtureF(_Family):
    """A mixture of ``k`` lognormals: ``k - 1`` weight logits, ``k`` mus, ``k`` log sigmas."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"lognormal_mix{k}"
        self.complexity = 3 * k - 1

    def parts(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.k
        logits = np.concatenate(([0.0], th[: k - 1]))
        logw = logits - special.logsumexp(logits)
        mu = th[k - 1 : 2 * k - 1]
        s = np.exp(np.maximum(th[2 * k - 1 :], _LOG_MIN_SIGMA))
        return logw, mu, s

    def init(self, x: np.ndarray) -> np.ndarray:
        lx = np.sort(np.log(x))
        groups = np.array_split(lx, self.k)
        mus = [g.mean() for g in groups]
        sds = [math.log(max(g.std(), 0.05)) for g in groups]
        logits = [math.log(len(g) / len(groups[0])) for g in groups[1:]]
        return np.array(logits + mus + sds, dtype=float)

    def logpdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        logw, mu, s = self.parts(th)
        lx = np.log(x)[:, None]
        comp = logw + _norm_logpdf((lx - mu) / s) - np.log(s)
        return special.logsumexp(comp, axis=1) - lx[:, 0]

    def logsf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        logw, mu, s = self.parts(th)
        lx = np.log(x)[:, None]
        return special.logsumexp(logw + special.log_ndtr(-(lx - mu) / s), axis=1)

    def cdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        logw, mu, s = self.parts(th)
        lx = np.log(np.maximum(np.asarray(x, dtype=float), 1e-300))[..., None]
        return (np.exp(logw) * special.ndtr((lx - mu) / s)).sum(axis=-1)

    def ppf(self, th: np.ndarray, u: np.ndarray) -> np.ndarray:
        # Monotone CDF on the log scale: bisection, vectorised.
        logw, mu, s = self.parts(th)
        u = np.asarray(u, dtype=float)
        lo = np.full(u.shape, float((mu - 9 * s).min()))
        hi = np.full(u.shape, float((mu + 9 * s).max()))
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.cdf(th, np.exp(mid)) < u
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return np.exp(0.5 * (lo + hi))

    def bounds(self, th: np.ndarray) -> list[tuple[float | None, float | None]]:
        k = self.k
        return [(-20.0, 20.0)] * (k - 1) + [(None, None)] * k + [(_LOG_MIN_SIGMA, 5.0)] * k

    def value_grad(
        self, th: np.ndarray, y_exact: np.ndarray, y_cens: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Summed log-likelihood and its gradient, from log values split into exact and
        censored ones (computed once per fit: this is the inner loop)."""
        k = self.k
        logw, mu, s = self.parts(th)
        ls = np.log(s)
        d_mu = np.zeros(k)
        d_ls = np.zeros(k)
        resp_sum = np.zeros(k)
        total = 0.0
        for y, censored in ((y_exact, False), (y_cens, True)):
            if y.size == 0:
                continue
            z = (y[:, None] - mu) / s
            if censored:
                comp = special.log_ndtr(-z) + logw
            else:
                comp = -0.5 * z * z - 0.5 * math.log(2 * math.pi) - ls + logw
            top = comp.max(axis=1, keepdims=True)
            e = np.exp(comp - top)
            norm = e.sum(axis=1, keepdims=True)
            total += float((np.log(norm) + top).sum()) - (0.0 if censored else float(y.sum()))
            r = e / norm
            if censored:
                h = _mills(z)
                d_mu += (r * h).sum(axis=0) / s
                d_ls += (r * h * z).sum(axis=0)
            else:
                d_mu += (r * z).sum(axis=0) / s
                d_ls += (r * (z * z - 1.0)).sum(axis=0)
            resp_sum += r.sum(axis=0)
        n = y_exact.size + y_cens.size
        d_logit = resp_sum[1:] - n * np.exp(logw[1:])
        # The floor on sigma: no gradient below it (L-BFGS-B's bound keeps it there).
        d_ls = np.where(th[2 * k - 1 :] < _LOG_MIN_SIGMA, 0.0, d_ls)
        return total, np.concatenate((d_logit, d_mu, d_ls))

    def fit(self, x: np.ndarray, cens: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        ly = np.log(x)
        ye, yc = ly[~cens], ly[cens]

        def nll(th: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = self.value_grad(th, ye, yc)
            if not math.isfinite(v):
                return 1e300, np.zeros(th.size)
            return -v, -np.nan_to_num(g)

        def run(th0: np.ndarray) -> np.ndarray:
            res = optimize.minimize(
                nll,
                th0,
                jac=True,
                method="L-BFGS-B",
                bounds=self.bounds(th0),
                options={"ftol": 1e-9, "maxiter": 400},
            )
            return np.asarray(res.x if res.fun <= nll(th0)[0] else th0, dtype=float)

        if start is not None:
            return run(np.asarray(start, dtype=float))
        # Two starts (quantile groups, and the same spread apart): mixtures have local
        # optima.
        exact = x[~cens] if (~cens).sum() >= 2 else x
        first = self.init(exact)
        alt = first.copy()
        alt[self.k - 1 : 2 * self.k - 1] += np.linspace(-0.3, 0.3, self.k)
        fits = [run(t) for t in (first, alt)]
        return max(fits, key=lambda th: self.value_grad(th, ye, yc)[0])


#: Significance below which a family's held-out PITs are not uniform (see
#: :func:`select_family`).
_PIT_ALPHA = 0.05
#: Held-out log-likelihood (in total, over every value) within which a simpler family
#: is preferred: about what an information criterion charges for a few parameters.
_TIE_NATS = 2.0

#: Quantile points an empirical fit is written as (the scenario's empirical
#: distribution interpolates between them).
_QUANTILE_POINTS = 256
#: Mixture weights below this are dropped when a mixture is written (see
#: :meth:`LatencyFit.distribution`).
_MIN_WEIGHT = 1e-4
#: Values an empirical fit keeps (beyond, evenly spaced quantiles of them).
_EMPIRICAL_MAX = 2000


class _EmpiricalF(_Family):
    """The empirical distribution, smoothed on the log scale by a normal kernel (the
    bandwidth: Silverman's rule or a fraction of it, by leave-one-out likelihood): it
    then has a density, so held-out values can be scored like
    any family's (the raw empirical distribution gives a value between two close
    sample points an arbitrarily high density and one beyond the sample none). Its
    parameters are ``(bandwidth, log values...)``; it is written as its quantiles."""

    name = "empirical"
    complexity = 1000

    def fit(self, x: np.ndarray, cens: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        v = np.sort(np.log(x[~cens] if (~cens).any() else x))
        if v.size > _EMPIRICAL_MAX:
            v = np.quantile(v, (np.arange(_EMPIRICAL_MAX) + 0.5) / _EMPIRICAL_MAX)
        n = v.size
        spread = min(float(v.std()), float(np.subtract(*np.quantile(v, [0.75, 0.25]))) / 1.349)
        if not spread > 0:
            spread = max(float(v.std()), 1e-3)
        silverman = max(0.9 * spread * n ** (-0.2), 1e-4)
        # Silverman's rule is tuned to one normal bump and smooths several away (served
        # latencies can be multimodal: queueing behind 1, 2, 3... requests); the
        # leave-one-out likelihood picks among it and narrower bandwidths.
        w = v if n <= 1000 else v[:: math.ceil(n / 1000)]
        d = w[:, None] - w[None, :]
        best, h = -math.inf, silverman
        for factor in (1.0, 0.5, 0.25, 0.125):
            bw = max(silverman * factor, 1e-4)
            k = _norm_logpdf(d / bw)
            np.fill_diagonal(k, -np.inf)
            loo = float((special.logsumexp(k, axis=1) - math.log((w.size - 1) * bw)).sum())
            if loo > best:
                best, h = loo, bw
        return np.concatenate(([h], v))

    def logpdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        h, v = th[0], th[1:]
        lx = np.log(x)
        z = (lx[:, None] - v[None, :]) / h
        return special.logsumexp(_norm_logpdf(z), axis=1) - math.log(v.size * h) - lx

    def logsf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        h, v = th[0], th[1:]
        z = (np.log(x)[:, None] - v[None, :]) / h
        return special.logsumexp(special.log_ndtr(-z), axis=1) - math.log(v.size)

    def cdf(self, th: np.ndarray, x: np.ndarray) -> np.ndarray:
        h, v = th[0], th[1:]
        lx = np.log(np.maximum(np.asarray(x, dtype=float), 1e-300))
        return special.ndtr((lx[..., None] - v) / h).mean(axis=-1)

    def ppf(self, th: np.ndarray, u: np.ndarray) -> np.ndarray:
        h, v = th[0], th[1:]
        u = np.asarray(u, dtype=float)
        lo = np.full(u.shape, float(v.min() - 9 * h))
        hi = np.full(u.shape, float(v.max() + 9 * h))
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.cdf(th, np.exp(mid)) < u
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return np.exp(0.5 * (lo + hi))


FAMILIES: dict[str, _Family] = {
    f.name: f
    for f in (
        _LognormalF(),
        _GammaF(),
        _WeibullF(),
        _MixtureF(2),
        _MixtureF(3),
        _EmpiricalF(),
    )
}


def _km(x: np.ndarray, cens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier: the distinct exact times and the CDF estimate just after each."""
    order = np.lexsort((cens, x))  # exact before censored at ties
    xs, cs = x[order], cens[order]
    n = xs.size
    at_risk = n - np.arange(n)
    factors = np.where(cs, 1.0, 1.0 - 1.0 / at_risk)
    surv = np.cumprod(factors)
    keep = ~cs
    return xs[keep], 1.0 - surv[keep]


def _ks_ad(
    fam: _Family, th: np.ndarray, x: np.ndarray, cens: np.ndarray
) -> tuple[float, float, float | None]:
    """(KS distance from the Kaplan-Meier CDF, its nominal p-value, AD statistic of the
    exact values or None when more than 2% are censored)."""
    t, f_km = _km(x, cens)
    if t.size == 0:
        return (math.nan, math.nan, None)
    f = fam.cdf(th, t)
    before = np.concatenate(([0.0], f_km[:-1]))
    d = float(max(np.abs(f_km - f).max(), np.abs(before - f).max()))
    p = float(stats.kstwo.sf(d, x.size))
    ad = None
    if cens.mean() <= 0.02:
        u = np.clip(np.sort(fam.cdf(th, x[~cens])), 1e-12, 1 - 1e-12)
        n = u.size
        i = np.arange(1, n + 1)
        ad = float(-n - np.mean((2 * i - 1) * (np.log(u) + np.log1p(-u[::-1]))))
    return (d, p, ad)


def select_family(
    x: np.ndarray,
    cens: np.ndarray,
    *,
    families: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    max_n: int = 1500,
) -> tuple[str, dict[str, float], dict[str, float]]:
    """Choose a family for positive durations ``x`` (``cens``: right-censored) by
    ``folds``-fold held-out log-likelihood (10 folds below 500 values; on at most
    ``max_n`` values, drawn at random).

    Returns ``(name, score per observation per family, standard error of each family's
    shortfall from the best)``. The choice is the family with the highest held-out
    log-likelihood, a near tie (within :data:`_TIE_NATS` in total) going to the less
    complex one. (Not a one-standard-error rule: with a few outliers, the spread of the
    per-value differences swamps a large, real gain of a mixture over a single
    family.) Only families whose held-out PITs (each value's CDF under the fit that did
    not see it) pass KS against uniform at :data:`_PIT_ALPHA` are candidates, while any
    does. The empirical family is a
    candidate only when at most 1% of the values are censored (it cannot extend past
    a censored tail), and the 3-component mixture only when the 2-component one beats
    the two-parameter families."""
    names = list(families or FAMILIES)
    if cens.mean() > 0.01 and "empirical" in names:
        names.remove("empirical")
    rng = np.random.default_rng(seed)
    if x.size > max_n:
        # The choice needs a few thousand values, not all of them; the chosen family
        # is then fitted to every value.
        keep = np.sort(rng.choice(x.size, max_n, replace=False))
        x, cens = x[keep], cens[keep]
    n = x.size
    if n < 500:
        # Few values: more, smaller folds, so that the choice rests on more fits (and
        # each fit on 90 % of the values rather than 80 %).
        folds = max(folds, 10)
    fold = rng.permutation(n) % folds
    held: dict[str, np.ndarray] = {}
    pits: dict[str, np.ndarray] = {}
    for name in names:
        if name == "lognormal_mix3" and "lognormal_mix2" in held:
            # Forward selection: three components are tried only when two beat every
            # two-parameter family out of sample (and they cost the most to fit).
            best_so_far = max(held, key=lambda k: held[k].mean())
            if best_so_far != "lognormal_mix2":
                continue
        fam = FAMILIES[name]
        full = fam.fit(x, cens)  # each fold starts here: a few iterations each
        out = np.empty(n)
        pit = np.full(n, np.nan)
        for j in range(folds):
            test = fold == j
            train = ~test
            if (~cens[train]).sum() < 3:
                out[test] = _LOG_FLOOR
                continue
            th = fam.fit(x[train], cens[train], start=full)
            out[test] = fam.loglik(th, x[test], cens[test])
            exact = test & ~cens
            pit[exact] = fam.cdf(th, x[exact])
        held[name] = out
        pits[name] = pit[np.isfinite(pit)]
    scores = {k: float(v.mean()) for k, v in held.items()}
    best = max(scores, key=lambda k: scores[k])
    se = {
        k: float(np.std(held[best] - held[k], ddof=1) * math.sqrt(n)) / n if n > 1 else 0.0
        for k in held
    }
    # The likelihood rewards a family for the density it puts where values fall; a
    # family can win that way (a spike on a cluster) and still place the bulk of its
    # CDF wrong. The held-out values' PITs under each fold's fit must look uniform
    # (KS at _PIT_ALPHA); a family whose do not is no candidate while one that passes
    # exists.
    fitting = [
        k
        for k in held
        if pits[k].size < 20 or stats.kstest(pits[k], "uniform").pvalue >= _PIT_ALPHA
    ]
    if fitting:
        best = max(fitting, key=lambda k: scores[k])
    else:
        fitting = list(held)
    # A near tie goes to the simpler family: within _TIE_NATS of the best in total.
    ok = [k for k in fitting if (scores[best] - scores[k]) * n <= _TIE_NATS]
    chosen = min(ok, key=lambda k: (FAMILIES[k].complexity, -scores[k]))
    return chosen, scores, se


# ------------------------------------------------------------------------ latency
def _median_regression(
    X: np.ndarray, y: np.ndarray, cens: np.ndarray | None = None, iters: int = 200
) -> np.ndarray:
    """Least absolute deviations by iteratively reweighted least squares; with
    ``cens``, Powell's censored version: a right-censored value whose fitted median is
    already above its censoring point agrees with the fit and pulls on nothing, one
    below it pulls up like an exact value (so censoring does not bias the slopes even
    where it reaches the median, e.g. for the largest answers)."""
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    if cens is not None and cens.any():
        beta = np.linalg.lstsq(X[~cens], y[~cens], rcond=None)[0]
    eps = 1e-6 * max(float(np.median(np.abs(y))), 1e-9)
    for _ in range(iters):
        fitted = X @ beta
        r = np.abs(y - fitted)
        w = 1.0 / np.maximum(r, eps)
        if cens is not None:
            w = np.where(cens & (fitted >= y), 0.0, w)
        Xw = X * w[:, None]
        try:
            new = np.linalg.solve(X.T @ Xw + 1e-12 * np.eye(X.shape[1]), Xw.T @ y)
        except np.linalg.LinAlgError:  # a resample whose sizes do not vary
            new = np.linalg.pinv(X.T @ Xw) @ (Xw.T @ y)
        if np.allclose(new, beta, rtol=1e-7, atol=1e-12):
            beta = new
            break
        beta = new
    return beta


@dataclass
class LatencyFit:
    """The latency model of one model: ``latency = base + prompt_tokens x per_input +
    completion_tokens x per_output`` with ``base`` of :attr:`family`.

    ``base`` and ``censored`` are the data the family was fitted to (timeouts are
    censored: the base would have exceeded the value); ``scores`` the held-out
    log-likelihood per observation of each candidate family and ``ks``/``ks_p``/``ad``
    the goodness of fit (see :func:`select_family` and :func:`_ks_ad`).
    """

    family: str
    params: np.ndarray
    per_output: Estimate | None
    per_input: Estimate | None
    base: np.ndarray
    censored: np.ndarray
    scores: dict[str, float]
    ks: float
    ks_p: float
    ad: float | None
    n: int
    dropped_terms: list[str] = field(default_factory=list)

    @property
    def n_censored(self) -> int:
        return int(self.censored.sum())

    def base_of(
        self, latency_s: np.ndarray, prompt_tokens: np.ndarray, completion_tokens: np.ndarray
    ) -> np.ndarray:
        """The base part of observed latencies: the latency minus the token terms."""
        out = np.asarray(latency_s, dtype=float).copy()
        if self.per_output is not None:
            out -= np.asarray(completion_tokens, dtype=float) * self.per_output.value
        if self.per_input is not None:
            out -= np.asarray(prompt_tokens, dtype=float) * self.per_input.value
        return out

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The fitted CDF of the base latency."""
        x = np.asarray(x, dtype=float)
        fam = FAMILIES[self.family]
        out = np.zeros(x.shape)
        pos = x > 0
        out[pos] = fam.cdf(self.params, x[pos])
        return out

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """The fitted quantile function of the base latency."""
        return FAMILIES[self.family].ppf(self.params, np.asarray(u, dtype=float))

    def mean(self) -> float:
        """Mean of the base latency (numerically, from the quantile function)."""
        u = (np.arange(4000) + 0.5) / 4000
        return float(self.ppf(u).mean())

    def distribution(self) -> tuple[dict[str, Any], str]:
        """The base latency as a scenario distribution mapping, and what it is (for the
        comment). A mixture is written as a ``lognormal_mixture`` (components in order of
        their medians; a component of weight below :data:`_MIN_WEIGHT` is dropped and the
        rest renormalised: it would not move a quantile the data can show), an empirical
        fit as its :data:`_QUANTILE_POINTS` quantiles."""
        th = self.params
        if self.family == "lognormal":
            return {"dist": "lognormal", "mu": th[0], "sigma": math.exp(th[1])}, "lognormal"
        if self.family == "gamma":
            return {"dist": "gamma", "shape": math.exp(th[0]), "scale_s": math.exp(th[1])}, "gamma"
        if self.family == "weibull":
            return {
                "dist": "weibull",
                "shape": math.exp(th[0]),
                "scale_s": math.exp(th[1]),
            }, "Weibull"
        u = (np.arange(_QUANTILE_POINTS) + 0.5) / _QUANTILE_POINTS
        if self.family == "empirical":
            samples = FAMILIES["empirical"].ppf(th, u).tolist()
            return {"dist": "empirical", "samples_s": samples}, (
                f"empirical ({th.size - 1:,} values smoothed by a lognormal kernel of "
                f"bandwidth {th[0]:.3g}) written as its {_QUANTILE_POINTS} quantiles"
            )
        fam = FAMILIES[self.family]
        assert isinstance(fam, _MixtureF)
        logw, mu, s = fam.parts(th)
        weights = np.exp(logw)
        keep = np.flatnonzero(weights >= _MIN_WEIGHT)
        keep = keep[np.argsort(mu[keep], kind="stable")]
        weights = weights[keep] / weights[keep].sum()
        parts = ", ".join(
            f"{w:.2f} x LN(median {math.exp(m):.3g} s, sigma {sd:.2f})"
            for w, m, sd in zip(weights, mu[keep], s[keep], strict=True)
        )
        mapping = {
            "dist": "lognormal_mixture",
            "weights": [float(x) for x in weights],
            "mu": [float(x) for x in mu[keep]],
            "sigma": [float(x) for x in s[keep]],
        }
        return mapping, f"{fam.k}-component lognormal mixture ({parts})"

    def gof(self) -> str:
        """The goodness-of-fit note: KS against Kaplan-Meier, and AD."""
        text = f"KS D={self.ks:.3f} (nominal p={self.ks_p:.2g})"
        text += f", AD={self.ad:.2f}" if self.ad is not None else ", AD n/a (censored)"
        return text


def fit_latency(
    latency_s: np.ndarray,
    prompt_tokens: np.ndarray,
    completion_tokens: np.ndarray,
    censored: np.ndarray | None = None,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    bootstrap: int = 40,
) -> LatencyFit:
    """Fit ``latency = base + per-token terms`` (see the module docstring).

    ``latency_s`` of answered calls, with ``censored`` True where the call timed out
    after that long (the answer would have come later). Token arrays hold the task's
    sizes (0 when unknown). A token term is kept only when its sizes vary (coefficient
    of variation above 5%) and its bootstrap 95% CI lies above 0; else its effect is
    left in the base. ``bootstrap`` resamples give the terms' CIs. Raises
    ``ValueError`` for fewer than 2 uncensored values.
    """
    y = np.asarray(latency_s, dtype=float)
    pt = np.nan_to_num(np.asarray(prompt_tokens, dtype=float))
    ct = np.nan_to_num(np.asarray(completion_tokens, dtype=float))
    cens = np.zeros(y.size, dtype=bool) if censored is None else np.asarray(censored, dtype=bool)
    if (~cens).sum() < 2:
        raise ValueError("fit_latency: fewer than 2 uncensored latencies")
    rng = np.random.default_rng(seed)
    names = ["completion_tokens", "prompt_tokens"]
    cols = [ct, pt]
    keep = [
        i for i, c in enumerate(cols) if y.size >= 20 and c.mean() > 0 and c.std() / c.mean() > 0.05
    ]
    dropped: list[str] = []
    terms: dict[str, Estimate] = {}
    while keep:
        X = np.column_stack([np.ones(y.size)] + [cols[i] for i in keep])
        beta = _median_regression(X, y, cens)
        boots = []
        for _ in range(bootstrap):
            idx = rng.integers(0, y.size, y.size)
            boots.append(_median_regression(X[idx], y[idx], cens[idx], iters=60))
        B = np.array(boots)
        bad = [
            j
            for j in range(len(keep))
            if not (beta[j + 1] > 0 and np.quantile(B[:, j + 1], 0.025) > 0)
        ]
        if not bad:
            for j, i in enumerate(keep):
                lo, hi = np.quantile(B[:, j + 1], [0.025, 0.975])
                terms[names[i]] = Estimate(
                    float(beta[j + 1]),
                    int(y.size),
                    (float(lo), float(hi)),
                    "median regression on the task's tokens (bootstrap CI)",
                )
            break
        # Drop the least significant term and refit without it.
        worst = min(bad, key=lambda j: np.quantile(B[:, j + 1], 0.025))
        dropped.append(names[keep[worst]])
        keep.pop(worst)
    base = y.copy()
    if "completion_tokens" in terms:
        base -= ct * terms["completion_tokens"].value
    if "prompt_tokens" in terms:
        base -= pt * terms["prompt_tokens"].value
    # A base at or below 0 is noise around the regression line: floor it just above.
    exact = base[~cens]
    floor = max(1e-4, 1e-3 * float(np.median(exact[exact > 0])) if (exact > 0).any() else 1e-4)
    base = np.maximum(base, floor)
    if (~cens).sum() < _MIN_LATENCY_N:
        chosen, scores = "lognormal", {}
    else:
        chosen, scores, _ = select_family(base, cens, families=families, seed=seed)
    fam = FAMILIES[chosen]
    th = fam.fit(base, cens)
    ks, ks_p, ad = _ks_ad(fam, th, base, cens)
    return LatencyFit(
        family=chosen,
        params=th,
        per_output=terms.get("completion_tokens"),
        per_input=terms.get("prompt_tokens"),
        base=base,
        censored=cens,
        scores=scores,
        ks=ks,
        ks_p=ks_p,
        ad=ad,
        n=int(y.size),
        dropped_terms=dropped,
    )


# --------------------------------------------------------------------- completion
#: Gauss-Hermite nodes for the task difficulty z and for a model's persistent noise eta.
_GH_Z = 32
_GH_ETA = 12
#: Prior standard deviation of an ability (latent scale): keeps a (model, type) that
#: never (or always) failed at a finite ability, and is otherwise negligible.
_ABILITY_PRIOR_SD = 3.0
#: Tasks with two answers needed before sigma and u are fitted; retried answers
#: needed before rho is.
_MIN_MULTI = 30


def _gh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and log-weights for E[f(Z)], Z ~ N(0, 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, np.log(w / math.sqrt(2 * math.pi))


@dataclass
class CompletionFit:
    """The fitted difficulty model and every (model, task type) completion.

    ``p[(model, type)]`` is the marginal completion (what the scenario writes) with its
    CI; ``ability`` the latent ``a``. ``default[model]`` is the model's completion
    over the types it was seen on (weighted by its answers), for the types it was not.
    ``sigma``, ``unsolvable``, ``rho`` are :class:`Estimate` s (their notes say when a
    value is fixed rather than fitted). ``n_tasks`` tasks had an answer; ``n_multi``
    had two or more; ``n_retried`` had a model answer twice. ``check`` compares, per
    position of an answer in its task (1st, 2nd, ...), the observed share solved with
    the fit's prediction given the task's earlier answers (``position -> (n,
    observed, predicted)``), and ``chi2``/``chi2_p`` summarise it.
    """

    p: dict[tuple[str, str], Estimate]
    ability: dict[tuple[str, str], float]
    default: dict[str, Estimate]
    sigma: Estimate
    unsolvable: Estimate
    rho: Estimate
    n_tasks: int
    n_multi: int
    n_retried: int
    loglik: float
    check: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    chi2: float = math.nan
    chi2_p: float = math.nan


class _SequenceLikelihood:
    """The likelihood of every task's answers under the latent-difficulty model.

    A task's answers are summarised per model as (solved, unsolved) counts: given ``z``
    and the model's ``eta`` the answers are independent, so their order does not
    matter. Identical tasks (same type, same counts per model) are pooled, which
    makes the likelihood cheap however many tasks there are.
    """

    def __init__(self, tasks: list[tuple[str, dict[str, tuple[int, int]]]]) -> None:
        pairs: dict[tuple[str, str], int] = {}
        comps: dict[tuple[int, int, int], int] = {}
        patterns: dict[tuple[int, ...], list[Any]] = {}
        for task_type, per_model in tasks:
            key_comps = []
            for model, (s, f) in sorted(per_model.items()):
                pair = pairs.setdefault((model, task_type), len(pairs))
                key_comps.append(comps.setdefault((pair, s, f), len(comps)))
            key = tuple(sorted(key_comps))
            solved = any(s for s, _ in per_model.values())
            entry = patterns.setdefault(key, [0, solved])
            entry[0] += 1
        self.pairs = pairs
        self.comp_pair = np.array([c[0] for c in comps], dtype=int)
        self.comp_s = np.array([c[1] for c in comps], dtype=float)
        self.comp_f = np.array([c[2] for c in comps], dtype=float)
        keys = list(patterns)
        order = {k: i for i, k in enumerate(keys)}
        #: The pattern of each input task, in input order.
        self.index = np.array(
            [
                order[tuple(sorted(comps[(pairs[(m, t)], s, f)] for m, (s, f) in per.items()))]
                for t, per in tasks
            ],
            dtype=int,
        )
        self.counts = np.array([patterns[k][0] for k in keys], dtype=float)
        self.solved = np.array([patterns[k][1] for k in keys], dtype=bool)
        # Pattern x component incidence (a task's log-likelihood given z is a sum).
        self.M = np.zeros((len(keys), max(len(comps), 1)))
        for i, k in enumerate(keys):
            for c in k:
                self.M[i, c] += 1.0
        self.z, self.lwz = _gh(_GH_Z)
        self.eta, self.lweta = _gh(_GH_ETA)
        # Components with two or more answers of one model: only they depend on rho
        # (one answer integrates eta out exactly: Phi of a sum of normals).
        self.multi = (self.comp_s + self.comp_f) >= 2
        # Component -> pair incidence (sums a component gradient into its ability).
        self.pair_matrix = np.zeros((max(len(comps), 1), max(len(pairs), 1)))
        for (pair, _, _), c in comps.items():
            self.pair_matrix[c, pair] = 1.0

    def task_loglik(self, a: np.ndarray, sigma: float, u: float, rho: float) -> np.ndarray:
        """Log-likelihood of each pattern (one task of it)."""
        return self._evaluate(a, sigma, u, rho, rho > 0, grad=False)[0]

    def _components(
        self, a: np.ndarray, sigma: float, rho: float, latent_rho: bool, grad: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``log g_c(z)`` per component and node, and its derivatives in the
        component's ability, in sigma and in rho (when ``grad``)."""
        base = a[self.comp_pair][:, None] - sigma * self.z[None, :]  # (C, K)
        s, f = self.comp_s[:, None], self.comp_f[:, None]
        log_g = s * special.log_ndtr(base) + f * special.log_ndtr(-base)
        ga = gs = gr = None
        if grad:
            d = s * _mills(-base) - f * _mills(base)  # d log g / d x
            ga, gs, gr = d, -self.z[None, :] * d, np.zeros_like(d)
        multi = self.multi
        if latent_rho and multi.any():
            # With rho > 0 a model's answers share eta: integrate it per component.
            r = max(rho, 1e-10)  # at rho = 0 the derivative is the limit from above
            sr, c = math.sqrt(r), 1.0 / math.sqrt(1.0 - r)
            bm = base[multi][:, :, None]  # (Cm, K, 1)
            inner = bm - sr * self.eta[None, None, :]
            x = inner * c  # (Cm, K, J)
            sm, fm = s[multi][..., None], f[multi][..., None]
            lg = sm * special.log_ndtr(x) + fm * special.log_ndtr(-x) + self.lweta
            lgm = special.logsumexp(lg, axis=2)
            log_g[multi] = lgm
            if grad:
                w = np.exp(lg - lgm[..., None])  # responsibilities over eta
                d = sm * _mills(-x) - fm * _mills(x)
                wd = w * d
                ga[multi] = c * wd.sum(axis=2)  # type: ignore[index]
                gs[multi] = -c * self.z[None, :] * wd.sum(axis=2)  # type: ignore[index]
                dx_drho = -self.eta[None, None, :] * c / (2 * sr) + inner * c**3 / 2
                gr[multi] = (wd * dx_drho).sum(axis=2)  # type: ignore[index]
        return log_g, ga, gs, gr

    def _evaluate(
        self, a: np.ndarray, sigma: float, u: float, rho: float, latent_rho: bool, grad: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-pattern log-likelihood and, when ``grad``, its gradient (patterns x
        (pairs + 3))."""
        n_pat = self.counts.size
        n_pairs = len(self.pairs)
        if self.comp_pair.size == 0:  # only tasks without answers: probability 1
            return np.zeros(n_pat), np.zeros((n_pat, n_pairs + 3)) if grad else None
        log_g, ga, gs, gr = self._components(a, sigma, rho, latent_rho, grad)
        per_z = self.M @ log_g + self.lwz  # (P, K)
        log_s = special.logsumexp(per_z, axis=1)
        if u > 0:
            unsolved = np.where(self.solved, -np.inf, 0.0)
            ll = np.logaddexp(math.log1p(-u) + log_s, math.log(u) + unsolved)
        else:
            ll = log_s
        if not grad:
            return ll, None
        R = np.exp(per_z - log_s[:, None])  # (P, K) responsibilities over z
        omega = np.exp(math.log1p(-u) + log_s - ll) if u > 0 else np.ones(n_pat)
        out = np.empty((n_pat, n_pairs + 3))
        E = self.M * (R @ ga.T)  # type: ignore[union-attr]
        out[:, :n_pairs] = (E @ self.pair_matrix) * omega[:, None]
        out[:, n_pairs] = (self.M * (R @ gs.T)).sum(axis=1) * omega  # type: ignore[union-attr]
        # d l / d u = (U - S) / L, with U the unsolvable world's probability (0 or 1)
        out[:, n_pairs + 1] = (np.where(self.solved, 0.0, 1.0) - np.exp(log_s)) / np.exp(ll)
        out[:, n_pairs + 2] = (self.M * (R @ gr.T)).sum(axis=1) * omega  # type: ignore[union-attr]
        return ll, out

    def nll(self, theta: np.ndarray, latent_rho: bool = False) -> float:
        return self.nll_grad(theta, latent_rho, grad=False)[0]

    def nll_grad(
        self, theta: np.ndarray, latent_rho: bool = False, grad: bool = True
    ) -> tuple[float, np.ndarray]:
        """The penalised negative log-likelihood of every task and its gradient in
        ``theta = (abilities..., sigma, u, rho)``. ``latent_rho`` integrates each
        model's persistent noise (needed whenever rho may be > 0)."""
        n = len(self.pairs)
        a = theta[:n]
        sigma, u, rho = float(theta[n]), float(theta[n + 1]), float(theta[n + 2])
        ll, g = self._evaluate(a, sigma, u, rho, latent_rho or rho > 0, grad)
        total = float(self.counts @ ll)
        prior = 0.5 * float((a / _ABILITY_PRIOR_SD) @ (a / _ABILITY_PRIOR_SD))
        if not math.isfinite(total):
            return 1e300, np.zeros(theta.size)
        if g is None:
            return -total + prior, np.zeros(theta.size)
        gt = -(self.counts @ g)
        gt[:n] += a / _ABILITY_PRIOR_SD**2
        return -total + prior, np.nan_to_num(gt)


def _task_answers(attempts: pl.DataFrame) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """Per task with an answer: its type and, per model, (solved, unsolved) answers."""
    answered = attempts.filter(pl.col("outcome").is_in(list(ANSWERED)))
    if answered.height == 0:
        return []
    grouped = (
        answered.with_columns(
            pl.col("task_type").fill_null("*"),
            (pl.col("outcome") == "ok").cast(pl.Int64).alias("_s"),
        )
        .group_by("task_id", "model", maintain_order=True)
        .agg(
            pl.col("task_type").first(),
            pl.col("_s").sum().alias("s"),
            (pl.len() - pl.col("_s").sum()).alias("f"),
        )
    )
    tasks: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}
    for tid, model, ttype, s, f in grouped.iter_rows():
        entry = tasks.setdefault(tid, (ttype, {}))
        entry[1][model] = (int(s), int(f))
    return list(tasks.values())


def _type_key(task_type: str) -> str:
    """The scenario's key for a task type: canonical types are their own, anything else
    (unknown, unset) falls to the model's ``default``."""
    return task_type if task_type in TASK_TYPES else "*"


def _hessian(g: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Hessian by central differences of the gradient ``g`` at ``x`` (steps ``h``),
    symmetrised."""
    n = x.size
    H = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h[i]
        H[i] = (g(x + e) - g(x - e)) / (2 * h[i])
    return 0.5 * (H + H.T)


def fit_completion(attempts: pl.DataFrame, *, profile: bool = False) -> CompletionFit:
    """Fit abilities, ``sigma``, ``u`` and ``rho`` by maximum likelihood of every task's
    answers (see the module docstring). ``attempts`` in the attempt schema; only
    answered attempts (``ok``, ``validation``, ``malformed``) are used. CIs are Wald
    intervals from the observed information; ``profile`` computes profile-likelihood
    intervals for ``sigma``, ``u`` and ``rho`` instead (better near a bound, about
    20 times slower).
    Raises ``ValueError`` when no attempt was answered.
    """
    from sim.traces.attempts import ATTEMPT_SCHEMA, validate_attempts

    if any(c not in attempts.columns for c in ATTEMPT_SCHEMA):
        attempts = validate_attempts(attempts, source="attempt records")
    raw = _task_answers(attempts)
    if not raw:
        raise ValueError("no answered attempt (ok, validation or malformed) to fit completion")
    tasks = [(_type_key(t), per) for t, per in raw]
    n_multi = sum(1 for _, per in tasks if sum(s + f for s, f in per.values()) >= 2)
    n_retried = sum(1 for _, per in tasks if any(s + f >= 2 for s, f in per.values()))
    lik = _SequenceLikelihood(tasks)
    n_pairs = len(lik.pairs)
    free_diff = n_multi >= _MIN_MULTI
    free_rho = free_diff and n_retried >= _MIN_MULTI
    # Start: independent world, abilities from each pair's raw share of solved answers.
    a0 = np.zeros(n_pairs)
    for (model, ttype), j in lik.pairs.items():
        s = sum(per[model][0] for t, per in tasks if t == ttype and model in per)
        n = sum(sum(per[model]) for t, per in tasks if t == ttype and model in per)
        a0[j] = float(special.ndtri(min(max((s + 0.5) / (n + 1.0), 0.02), 0.98)))
    bounds = [(-8.0, 8.0)] * n_pairs + [
        (0.0, 4.0) if free_diff else (0.0, 0.0),
        (0.0, 0.9) if free_diff else (0.0, 0.0),
        (0.0, 0.95) if free_rho else (0.0, 0.0),
    ]

    def solve(x0: np.ndarray, bnds: list[tuple[float, float]]) -> Any:
        return optimize.minimize(
            lik.nll_grad, x0, args=(free_rho,), jac=True, method="L-BFGS-B", bounds=bnds
        )

    best = None
    starts = [np.concatenate((a0, [0.0, 0.0, 0.0]))]
    if free_diff:
        # From a difficult world too: the likelihood in (sigma, u) can be flat-ish.
        starts.append(np.concatenate((a0 * math.sqrt(2.0), [1.0, 0.05, 0.3 if free_rho else 0])))
    for x0 in starts:
        res = solve(x0, bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    theta = best.x
    nll0 = float(best.fun)
    a, sigma, u, rho = (
        theta[:n_pairs],
        float(theta[n_pairs]),
        float(theta[n_pairs + 1]),
        float(theta[n_pairs + 2]),
    )
    # Wald covariance on the free coordinates (those not at a bound).
    free = [
        i
        for i in range(theta.size)
        if bounds[i][0] != bounds[i][1]
        and (i < n_pairs or bounds[i][0] + 1e-6 < theta[i] < bounds[i][1] - 1e-6)
    ]
    cov = np.full((theta.size, theta.size), np.nan)
    if free:
        x_free = theta[free]

        def sub_grad(xf: np.ndarray) -> np.ndarray:
            t = theta.copy()
            t[free] = xf
            return lik.nll_grad(t, free_rho)[1][free]

        H = _hessian(sub_grad, x_free, np.maximum(1e-5, 1e-4 * np.abs(x_free)))
        try:
            C = np.linalg.inv(H)
            if np.all(np.isfinite(C)) and np.all(np.diag(C) > 0):
                cov[np.ix_(free, free)] = C
        except np.linalg.LinAlgError:
            pass

    def marginal(av: float, sg: float, uu: float) -> float:
        return (1.0 - uu) * float(special.ndtr(av / math.sqrt(1.0 + sg * sg)))

    p: dict[tuple[str, str], Estimate] = {}
    ability: dict[tuple[str, str], float] = {}
    answers: dict[tuple[str, str], int] = {}
    for t, per in tasks:
        for m, (s, f) in per.items():
            answers[(m, t)] = answers.get((m, t), 0) + s + f
    # Delta method for p = (1 - u) Phi(a / sqrt(1 + sigma^2)) over (a, sigma, u).
    for (model, ttype), j in lik.pairs.items():
        value = marginal(a[j], sigma, u)
        idx = [j, n_pairs, n_pairs + 1]
        eps = 1e-5
        grad = np.array(
            [
                (marginal(a[j] + eps, sigma, u) - marginal(a[j] - eps, sigma, u)) / (2 * eps),
                (marginal(a[j], sigma + eps, u) - marginal(a[j], max(sigma - eps, 0), u))
                / (sigma + eps - max(sigma - eps, 0)),
                -value / (1 - u) if u < 1 else 0.0,
            ]
        )
        sub_cov = np.nan_to_num(cov[np.ix_(idx, idx)], nan=0.0)
        se = math.sqrt(max(float(grad @ sub_cov @ grad), 0.0))
        ci = (max(0.0, value - _Z95 * se), min(1.0 - u, value + _Z95 * se)) if se > 0 else None
        n_ans = answers[(model, ttype)]
        p[(model, ttype)] = Estimate(value, n_ans, ci, "latent-difficulty MLE (delta-method CI)")
        ability[(model, ttype)] = float(a[j])
    default: dict[str, Estimate] = {}
    for model in sorted({m for m, _ in lik.pairs}):
        mine = [(t, answers[(model, t)]) for (m, t) in lik.pairs if m == model]
        if ("*") in [t for t, _ in mine]:
            default[model] = p[(model, "*")]
            continue
        total = sum(n for _, n in mine)
        value = sum(p[(model, t)].value * n for t, n in mine) / total
        cis = [p[(model, t)].ci for t, _ in mine]
        ci = None
        if all(c is not None for c in cis):
            ci = (
                sum(c[0] * n for c, (_, n) in zip(cis, mine, strict=True)) / total,  # type: ignore[index]
                sum(c[1] * n for c, (_, n) in zip(cis, mine, strict=True)) / total,  # type: ignore[index]
            )
        default[model] = Estimate(
            value, total, ci, "answer-weighted over " + ", ".join(t for t, _ in mine)
        )

    def profile_ci(k: int, hi_bound: float) -> tuple[float, float] | None:
        """Profile-likelihood 95% interval of coordinate ``n_pairs + k``."""
        i = n_pairs + k
        target = nll0 + 0.5 * stats.chi2.ppf(0.95, 1)

        def prof(v: float) -> float:
            b = list(bounds)
            b[i] = (v, v)
            x0 = theta.copy()
            x0[i] = v
            return float(solve(x0, b).fun)

        def edge(inside: float, outside: float) -> float:
            # prof(inside) <= target < prof(outside): bisect on the profile.
            for _ in range(10):
                mid = 0.5 * (inside + outside)
                if prof(mid) > target:
                    outside = mid
                else:
                    inside = mid
            return 0.5 * (inside + outside)

        v = float(theta[i])
        lower = 0.0 if v <= 1e-9 or prof(0.0) <= target else edge(v, 0.0)
        upper = hi_bound if prof(hi_bound) <= target else edge(v, hi_bound)
        return (lower, upper)

    def wald(i: int) -> tuple[float, float] | None:
        var = cov[i, i]
        if not np.isfinite(var):
            return None
        se = math.sqrt(var)
        return (max(0.0, theta[i] - _Z95 * se), theta[i] + _Z95 * se)

    n_t = len(tasks)
    if free_diff:
        note = f"{n_multi:,} tasks with >= 2 answers identify it"
        ci_s = profile_ci(0, 4.0) if profile else wald(n_pairs)
        ci_u = profile_ci(1, 0.9) if profile else wald(n_pairs + 1)
        sigma_e = Estimate(sigma, n_t, ci_s, f"profile CI; {note}" if profile else note)
        u_e = Estimate(u, n_t, ci_u, f"profile CI; {note}" if profile else note)
    else:
        why = (
            f"NOT IDENTIFIABLE: only {n_multi} task(s) with two or more answers "
            f"(need {_MIN_MULTI}); fixed at 0 (independent failures)"
        )
        sigma_e = Estimate(0.0, n_t, None, why)
        u_e = Estimate(0.0, n_t, None, why)
    if free_rho:
        ci_r = profile_ci(2, 0.95) if profile else wald(n_pairs + 2)
        rho_e = Estimate(
            rho, n_retried, ci_r, f"{n_retried:,} tasks retried a model after an answer"
        )
    else:
        rho_e = Estimate(
            0.0,
            n_retried,
            None,
            f"NOT IDENTIFIABLE: only {n_retried} task(s) retried a model after an answer "
            f"(need {_MIN_MULTI}{'' if free_diff else ' and sigma fitted'}); fixed at 0",
        )
    fit = CompletionFit(
        p=p,
        ability=ability,
        default=default,
        sigma=sigma_e,
        unsolvable=u_e,
        rho=rho_e,
        n_tasks=n_t,
        n_multi=n_multi,
        n_retried=n_retried,
        loglik=-nll0,
    )
    _position_check(fit, raw, attempts)
    return fit


def _position_check(
    fit: CompletionFit,
    raw: list[tuple[str, dict[str, tuple[int, int]]]],
    attempts: pl.DataFrame,
) -> None:
    """Fill ``fit.check``: per answer position, observed vs predicted share solved,
    each answer predicted from its task's earlier answers (posterior predictive)."""
    seqs = (
        attempts.filter(pl.col("outcome").is_in(list(ANSWERED)))
        .with_row_index("_row")
        .sort("start_s", "_row")
        .group_by("task_id", maintain_order=True)
        .agg(pl.col("task_type").first(), pl.col("model"), (pl.col("outcome") == "ok"))
    )
    buckets: dict[tuple[Any, ...], list[float]] = {}
    for _, ttype, models, oks in seqs.iter_rows():
        t = _type_key(ttype if ttype is not None else "*")
        hist: dict[str, tuple[int, int]] = {}
        for j, (m, ok) in enumerate(zip(models, oks, strict=True)):
            key = (t, tuple(sorted(hist.items())), m, min(j + 1, 4))
            entry = buckets.setdefault(key, [0.0, 0.0])
            entry[0] += 1
            entry[1] += bool(ok)
            s, f = hist.get(m, (0, 0))
            hist[m] = (s + 1, f) if ok else (s, f + 1)
    if not buckets:
        return
    keys = list(buckets)
    before = [(k[0], dict(k[1])) for k in keys]
    after = []
    for t, hist in before:
        new = dict(hist)
        m = keys[len(after)][2]
        s, f = new.get(m, (0, 0))
        new[m] = (s + 1, f)
        after.append((t, new))
    sigma, u, rho = fit.sigma.value, fit.unsolvable.value, fit.rho.value
    lik = _SequenceLikelihood(before + after)
    a = np.array([fit.ability[pair] for pair in lik.pairs])
    ll = lik.task_loglik(a, sigma, u, rho)[lik.index]
    pred = np.exp(ll[len(keys) :] - ll[: len(keys)])
    by_pos: dict[int, list[float]] = {}
    for k, q in zip(keys, pred, strict=True):
        n, ok = buckets[k]
        row = by_pos.setdefault(k[3], [0.0, 0.0, 0.0, 0.0])
        row[0] += n
        row[1] += ok
        row[2] += n * q
        row[3] += n * q * (1 - q)
    fit.check = {pos: (int(n), ok / n, e / n) for pos, (n, ok, e, _) in sorted(by_pos.items()) if n}
    chi2 = sum((ok - e) ** 2 / v for n, ok, e, v in by_pos.values() if v > 0)
    fit.chi2 = float(chi2)
    fit.chi2_p = float(stats.chi2.sf(chi2, len(by_pos)))


# ------------------------------------------------------------------------ outages
@dataclass(frozen=True)
class Episode:
    """One detected outage: ``[start_s, end_s)`` (each end half-way between the last
    answer and the first failure, or back), the failures seen in it and how many of
    them were timeouts (a hanging provider). ``open_start``/``open_end``: the log
    begins/ends inside it (its length is then a lower bound)."""

    start_s: float
    end_s: float
    failures: int
    timeouts: int
    open_start: bool = False
    open_end: bool = False

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class OutageFit:
    """The outage process of one provider (or one model without a config).

    ``source`` is ``"fitted"`` (both families chosen from the log, from
    :data:`MIN_EPISODES` episodes), ``"partial"`` (fewer: an exponential up-time at the
    observed rate and a lognormal length fitted to 3 or more episodes, or with 1-2 the
    observed median and the status-page shape) or ``"seed"`` (no episode: the shipped
    seed scenario's status-page process)."""

    key: str
    models: list[str]
    episodes: list[Episode]
    span_s: float
    events: int
    baseline: float
    run_length: int
    mode: str
    time_between: dict[str, Any]
    duration: dict[str, Any]
    time_between_est: Estimate
    duration_est: Estimate
    source: str
    #: (start_s, is_failure) of every up/down event, for the timeline figure.
    timeline: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.empty(0), np.empty(0, dtype=bool))
    )

    def down_at(self, t: np.ndarray) -> np.ndarray:
        """True where a time falls inside a detected episode."""
        t = np.asarray(t, dtype=float)
        out = np.zeros(t.shape, dtype=bool)
        for e in self.episodes:
            out |= (t >= e.start_s) & (t < e.end_s)
        return out


def _runs(down: np.ndarray, k: int) -> list[tuple[int, int]]:
    """``(first, last)`` indices of every run of at least ``k`` consecutive True."""
    out = []
    i, n = 0, down.size
    while i < n:
        if down[i]:
            j = i
            while j + 1 < n and down[j + 1]:
                j += 1
            if j - i + 1 >= k:
                out.append((i, j))
            i = j + 1
        else:
            i += 1
    return out


def _run_threshold(n: int, rate: float) -> int:
    """The shortest run of failures the baseline ``rate`` produces anywhere in ``n``
    events with probability below 5% (at least 3)."""
    if rate <= 0:
        return 3
    if rate >= 1:
        return n + 1
    k = 3
    while n * (1 - rate) * rate**k >= 0.05 and k < n + 1:
        k += 1
    return k


def _detect(
    t: np.ndarray, is_down: np.ndarray, timeout: np.ndarray
) -> tuple[list[Episode], float, int]:
    """Runs of failures in one event sequence (see :func:`find_episodes`)."""
    n = t.size
    inside = np.zeros(n, dtype=bool)
    rate, k = 0.0, 3
    runs: list[tuple[int, int]] = []
    for _ in range(2):
        outside = ~inside
        rate = float(is_down[outside].mean()) if outside.any() else 0.0
        k = _run_threshold(n, rate)
        runs = _runs(is_down, k)
        inside = np.zeros(n, dtype=bool)
        for i, j in runs:
            inside[i : j + 1] = True
    episodes = []
    for i, j in runs:
        open_start, open_end = i == 0, j == n - 1
        start = t[i] if open_start else 0.5 * (t[i - 1] + t[i])
        end = t[j] if open_end else 0.5 * (t[j] + t[j + 1])
        episodes.append(
            Episode(
                float(start),
                float(max(end, start)),
                j - i + 1,
                int(timeout[i : j + 1].sum()),
                open_start,
                open_end,
            )
        )
    return episodes, rate, k


def find_episodes(
    start_s: np.ndarray, outcome: np.ndarray
) -> tuple[list[Episode], float, int, np.ndarray, np.ndarray]:
    """Outage episodes in one process's calls (sorted by start).

    Two signatures are looked for separately, each against its own baseline: runs of
    fast failures (5xx, connection errors: a provider that fails fast) and runs of
    timeouts (a provider that hangs). A run counts when it is longer than its baseline
    rate explains (:func:`_run_threshold`); the baseline is measured twice, the second
    time outside the first pass's episodes. Answers break runs; calls that are neither
    an answer nor a failure of the kind (429s, refusals, the other kind) are skipped,
    so a slow answer cut off now and then cannot join 5xx's into a false outage.
    Returns ``(episodes by start, baseline rate of availability failures, shortest run
    counted, event times, event is-failure)``: the last two over every answer and
    failure, for the timeline figure."""
    outcome = np.asarray(outcome, dtype=object)
    t_all = np.asarray(start_s, dtype=float)
    up = np.isin(outcome, list(ANSWERED))
    fast = np.isin(outcome, list(FAST_FAILURES))
    slow = np.isin(outcome, list(TIMEOUTS))
    episodes: list[Episode] = []
    ks = []
    for cls in (fast, slow):
        keep = up | cls
        if not cls.any():
            continue
        eps, _, k = _detect(t_all[keep], cls[keep], slow[keep])
        episodes += eps
        ks.append(k)
    episodes.sort(key=lambda e: e.start_s)
    merged: list[Episode] = []
    for e in episodes:
        if merged and e.start_s <= merged[-1].end_s:
            m = merged[-1]
            merged[-1] = Episode(
                m.start_s,
                max(m.end_s, e.end_s),
                m.failures + e.failures,
                m.timeouts + e.timeouts,
                m.open_start,
                m.open_end or e.open_end,
            )
        else:
            merged.append(e)
    keep = up | fast | slow
    t, is_down = t_all[keep], (fast | slow)[keep]
    outside = np.ones(t.size, dtype=bool)
    for e in merged:
        outside &= ~((t >= e.start_s) & (t <= e.end_s))
    rate = float(is_down[outside].mean()) if outside.any() else 0.0
    return merged, rate, min(ks) if ks else 3, t, is_down


def _dist_mapping(family: str, th: np.ndarray) -> dict[str, Any]:
    if family == "lognormal":
        return {"dist": "lognormal", "median_s": math.exp(th[0]), "sigma": math.exp(th[1])}
    if family == "gamma":
        return {"dist": "gamma", "shape": math.exp(th[0]), "scale_s": math.exp(th[1])}
    if family == "weibull":
        return {"dist": "weibull", "shape": math.exp(th[0]), "scale_s": math.exp(th[1])}
    raise ValueError(f"no scenario mapping for {family}")


def _mean_of(mapping: dict[str, Any]) -> float:
    from sim.world.distributions import Exponential, Gamma, Lognormal, Weibull

    cls = {"lognormal": Lognormal, "gamma": Gamma, "weibull": Weibull, "exponential": Exponential}
    return float(cls[mapping["dist"]].model_validate(mapping).mean())


#: Timeout episodes of different providers this close together count as one stall.
_STALL_SLACK_S = 10.0


def _merge_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching ``(start, end)`` windows merged, sorted."""
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted((float(a), float(b)) for a, b in windows):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def client_stalls(
    episodes: dict[str, list[Episode]], providers_seen: int
) -> list[tuple[float, float]]:
    """Windows in which several providers timed out at once: the recording client (or
    its network) stalled, not a provider (independent providers rarely hang together,
    and a provider that was not called then cannot show it). ``episodes`` per
    provider; a window counts when timeout episodes of at least 2 providers, and of at
    least half of the ``providers_seen``, overlap it (within :data:`_STALL_SLACK_S`).
    Returns the windows, merged, sorted."""
    need = max(2, math.ceil(providers_seen / 2))
    if providers_seen < 2:
        return []
    hangs = [
        (e.start_s, e.end_s, key)
        for key, eps in episodes.items()
        for e in eps
        if e.timeouts * 2 > e.failures
    ]
    windows: list[tuple[float, float]] = []
    for start, end, _ in hangs:
        # The providers whose timeout episodes overlap this one (or come within
        # _STALL_SLACK_S: a stall's timeouts end each provider's run at a different call).
        near = [
            (s, e, k)
            for s, e, k in hangs
            if s <= end + _STALL_SLACK_S and e >= start - _STALL_SLACK_S
        ]
        if len({k for _, _, k in near}) >= need:
            windows.append((min(s for s, _, _ in near), max(e for _, e, _ in near)))
    windows.sort()
    merged: list[tuple[float, float]] = []
    for lo, hi in windows:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def fit_outages(
    key: str,
    models: list[str],
    calls: pl.DataFrame,
    *,
    seed: int = 0,
    exclude: Sequence[tuple[float, float]] = (),
) -> OutageFit:
    """Detect and fit the outage process of the calls of ``models`` (one provider);
    episodes overlapping an ``exclude`` window (a client stall) are not outages."""
    from sim.world.scenario import load_seed_scenario

    calls = calls.sort("start_s")
    starts = calls.get_column("start_s").to_numpy()
    outcome = calls.get_column("outcome").to_numpy()
    episodes, rate, k, t, is_down = find_episodes(starts, outcome)
    episodes = [
        e for e in episodes if not any(e.start_s <= hi and e.end_s >= lo for lo, hi in exclude)
    ]
    span = float(starts.max() - starts.min()) if starts.size else 0.0
    t0 = float(starts.min()) if starts.size else 0.0
    t1 = float(starts.max()) if starts.size else 0.0
    timeouts = sum(e.timeouts for e in episodes)
    fails = sum(e.failures for e in episodes)
    mode = "hang" if fails and timeouts > fails / 2 else "fail_fast"
    n_ep = len(episodes)
    starts_seen = sum(1 for e in episodes if not e.open_start)
    down_time = sum(e.length_s for e in episodes)
    up_time = max(span - down_time, 1e-9)
    seed_outage = load_seed_scenario().providers[_STATUS_PAGE_KEY].outage
    assert seed_outage is not None and seed_outage.duration is not None
    status_sigma = float(seed_outage.duration.sigma_)  # type: ignore[union-attr]
    hours = span / 3600.0
    lengths = np.array([e.length_s for e in episodes])
    open_len = np.array([e.open_start or e.open_end for e in episodes], dtype=bool)
    if n_ep >= MIN_EPISODES:
        fams = ["lognormal", "gamma", "weibull"]
        d_cens = open_len
        d_fam, _, _ = select_family(
            np.maximum(lengths, 1e-3), d_cens, families=fams, seed=seed, folds=min(5, n_ep)
        )
        d_th = FAMILIES[d_fam].fit(np.maximum(lengths, 1e-3), d_cens)
        ks, ks_p, ad = _ks_ad(FAMILIES[d_fam], d_th, np.maximum(lengths, 1e-3), d_cens)
        duration = _dist_mapping(d_fam, d_th)
        d_note = f"{d_fam} chosen by held-out log-likelihood; KS D={ks:.3f} (p={ks_p:.2g})" + (
            f", AD={ad:.2f}" if ad is not None else ""
        )
        ups, u_cens = [], []
        if episodes:
            ups.append(episodes[0].start_s - t0)
            u_cens.append(True)
            for a, b in zip(episodes, episodes[1:], strict=False):
                ups.append(b.start_s - a.end_s)
                u_cens.append(False)
            ups.append(t1 - episodes[-1].end_s)
            u_cens.append(True)
        up_arr = np.maximum(np.array(ups), 1e-3)
        uc = np.array(u_cens, dtype=bool)
        u_fam, _, _ = select_family(up_arr, uc, families=fams, seed=seed, folds=min(5, n_ep))
        u_th = FAMILIES[u_fam].fit(up_arr, uc)
        uks, uks_p, uad = _ks_ad(FAMILIES[u_fam], u_th, up_arr, uc)
        time_between = _dist_mapping(u_fam, u_th)
        u_note = f"{u_fam} chosen by held-out log-likelihood; KS D={uks:.3f} (p={uks_p:.2g})"
        source = "fitted"
        tb_mean = _mean_of(time_between)
        lo = 2 * up_time / stats.chi2.ppf(0.975, 2 * max(starts_seen, 1))
        hi = 2 * up_time / stats.chi2.ppf(0.025, 2 * max(starts_seen, 1))
        tb_est = Estimate(tb_mean, starts_seen, (lo, hi), f"mean up-time; {u_note}")
        d_est = Estimate(
            _mean_of(duration), n_ep, _median_ci(lengths) if n_ep else None, f"mean; {d_note}"
        )
    elif n_ep >= 3:
        # Too few episodes to choose families, enough for two parameters: exponential
        # up-times at the observed rate (the MLE with the censored first and last
        # gaps) and a lognormal length fitted to the episodes.
        mean_up = up_time / max(starts_seen, 1)
        lo = 2 * up_time / stats.chi2.ppf(0.975, 2 * max(starts_seen, 1))
        hi = 2 * up_time / stats.chi2.ppf(0.025, 2 * max(starts_seen, 1))
        time_between = {"dist": "exponential", "mean_s": mean_up}
        th = FAMILIES["lognormal"].fit(np.maximum(lengths, 1e-3), open_len)
        duration = _dist_mapping("lognormal", th)
        ks, ks_p, _ = _ks_ad(FAMILIES["lognormal"], th, np.maximum(lengths, 1e-3), open_len)
        tb_est = Estimate(
            mean_up,
            starts_seen,
            (lo, hi),
            f"exponential at the observed rate: {n_ep} episodes in {hours:.3g} h (a family "
            f"is chosen from {MIN_EPISODES})",
        )
        d_est = Estimate(
            _mean_of(duration),
            n_ep,
            _median_ci(lengths),
            f"mean of a lognormal fitted to {n_ep} episodes (too few to choose a family); "
            f"KS D={ks:.3f} (p={ks_p:.2g})",
        )
        source = "partial"
    elif n_ep >= 1:
        # Too few episodes for a shape: the rate is still measured (exponential
        # up-times, the MLE with the censored first and last gaps) and so is the median
        # length; the shape of the length comes from the status pages.
        mean_up = up_time / max(starts_seen, 1)
        lo = 2 * up_time / stats.chi2.ppf(0.975, 2 * max(starts_seen, 1))
        hi = 2 * up_time / stats.chi2.ppf(0.025, 2 * max(starts_seen, 1))
        time_between = {"dist": "exponential", "mean_s": mean_up}
        median = float(np.median(lengths))
        duration = {"dist": "lognormal", "median_s": max(median, 1e-3), "sigma": status_sigma}
        tb_est = Estimate(
            mean_up,
            starts_seen,
            (lo, hi),
            f"exponential at the observed rate: only {n_ep} episode(s) in {hours:.3g} h "
            f"(a family needs {MIN_EPISODES})",
        )
        d_est = Estimate(
            max(median, 1e-3),
            n_ep,
            _median_ci(lengths),
            f"median of {n_ep} episode(s); sigma {status_sigma:.4g} is the seed scenario's "
            "public status-page shape (too few episodes to fit one)",
        )
        source = "partial"
    else:
        time_between = seed_outage.time_between.model_dump(exclude_none=True)  # type: ignore[union-attr]
        duration = seed_outage.duration.model_dump(exclude_none=True)
        why = (
            f"no outage episode in {hours:.3g} h of traffic: the seed scenario's public "
            f"status-page process ({_STATUS_PAGE_KEY}), not fitted"
        )
        tb_est = Estimate(float(seed_outage.time_between.mean()), 0, None, why)  # type: ignore[union-attr]
        d_est = Estimate(float(seed_outage.duration.mean()), 0, None, why)
        mode = seed_outage.mode
        source = "seed"
    return OutageFit(
        key=key,
        models=list(models),
        episodes=episodes,
        span_s=span,
        events=int(t.size),
        baseline=rate,
        run_length=k,
        mode=mode,
        time_between=time_between,
        duration=duration,
        time_between_est=tb_est,
        duration_est=d_est,
        source=source,
        timeline=(t, is_down),
    )


# ------------------------------------------------------------- errors, limits, prices
def _malformed(
    unsolved: dict[str, tuple[int, int]], p_of: dict[str, float], cap: float
) -> tuple[float, tuple[float, float] | None]:
    """MLE of a model's marginal malformed rate ``m`` from, per task type, (malformed,
    unsolved answers): the world makes an unsolved answer malformed with probability
    ``m / (1 - p_type)`` whatever the task's difficulty, so this share is not biased
    by which tasks reached the model. Likelihood-ratio 95% CI. ``cap`` is the largest
    ``m`` the scenario allows (``1 - max p``)."""
    items = [(mal, fail, max(1.0 - p_of[t], 1e-9)) for t, (mal, fail) in unsolved.items() if fail]
    if not items or cap <= 0:
        return 0.0, None

    def nll(m: float) -> float:
        total = 0.0
        for mal, fail, q in items:
            share = min(max(m / q, 1e-12), 1 - 1e-12)
            total -= mal * math.log(share) + (fail - mal) * math.log1p(-share)
        return total

    hi = min(cap, min(q for _, _, q in items)) * (1 - 1e-9)
    res = optimize.minimize_scalar(nll, bounds=(0.0, hi), method="bounded")
    m = float(res.x) if sum(mal for mal, _, _ in items) else 0.0
    target = nll(m) + 0.5 * stats.chi2.ppf(0.95, 1)

    def cross(a: float, b: float) -> float:
        fa = nll(a) - target
        fb = nll(b) - target
        if fa * fb > 0:
            return b
        return float(optimize.brentq(lambda v: nll(v) - target, a, b))

    return m, (cross(m, 0.0) if m > 0 else 0.0, cross(m, hi))


@dataclass
class ModelFit:
    """Everything fitted for one model (``observed`` False: the model is in the config
    but never in the records; its figures then come from the config's profile)."""

    model: str
    provider: str
    observed: bool
    calls: int
    outcomes: dict[str, int]
    latency: LatencyFit | None
    server_error_rate: Estimate
    malformed_rate: Estimate
    fail_fast_latency_s: Estimate
    timeouts: Estimate
    rate_limit_rpm: Estimate | None
    retry_after_s: Estimate | None
    context_window: Estimate | None
    prices: dict[str, Estimate]
    outage: str | None
    profile_latency: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _rate_limit(calls: pl.DataFrame) -> tuple[Estimate | None, Estimate | None]:
    """(rate_limit_rpm, retry_after_s) from a model's calls (see the module docstring)."""
    limited = calls.filter(pl.col("outcome") == "rate_limited")
    n = calls.height
    minutes = (
        calls.with_columns((pl.col("start_s") // 60).alias("_min"))
        .group_by("_min")
        .agg(
            (pl.col("outcome") != "rate_limited").sum().alias("accepted"),
            (pl.col("outcome") == "rate_limited").sum().alias("limited"),
        )
    )
    if limited.height == 0:
        busiest = int(minutes.get_column("accepted").max() or 0)
        return None, None
    hit = minutes.filter(pl.col("limited") > 0).get_column("accepted").to_numpy().astype(float)
    rpm = float(np.median(hit))
    lo, hi = _median_ci(hit)
    busiest = int(minutes.get_column("accepted").max() or 0)
    rpm_e = Estimate(
        max(rpm, 1.0),
        int(hit.size),
        (max(lo, 1.0), max(hi, 1.0)),
        f"median calls accepted in the {hit.size} clock minute(s) with a 429 "
        f"({limited.height} 429s in {n:,} calls; busiest minute {busiest})",
    )
    ra = limited.get_column("retry_after_s").drop_nulls().to_numpy()
    if ra.size:
        ra_e = Estimate(float(np.median(ra)), int(ra.size), _median_ci(ra), "median Retry-After")
    else:
        ra_e = Estimate(1.0, 0, None, "no Retry-After recorded: the scenario default")
    return rpm_e, ra_e


def _context_window(calls: pl.DataFrame) -> Estimate | None:
    """The largest prompt answered, when some prompt was refused as too long."""
    refused = calls.filter(pl.col("outcome") == "context_length").get_column("_pt").drop_nulls()
    if refused.len() == 0:
        return None
    took = calls.filter(pl.col("outcome").is_in(list(ANSWERED))).get_column("_pt").drop_nulls()
    r = np.sort(refused.to_numpy())
    a = np.sort(took.to_numpy()) if took.len() else np.array([0])
    # The window w answers prompts <= w and refuses the rest; choose the w that
    # misclassifies fewest calls, the smallest of those: the largest prompt seen
    # answered when the data agree (no prompt is assumed answerable that never was).
    cands = np.unique(np.concatenate((a, r - 1)))
    cands = cands[cands >= 1]
    if cands.size == 0:
        return None
    errors = [
        (np.searchsorted(r, w, side="right") + (a.size - np.searchsorted(a, w, side="right")), w)
        for w in cands
    ]
    best = int(cands[min(range(len(cands)), key=lambda i: errors[i])])
    lo = int(a[a <= best].max()) if (a <= best).any() else 1
    hi = int(r[r > best].min()) - 1 if (r > best).any() else best
    return Estimate(
        float(best),
        int(r.size + a.size),
        (float(lo), float(hi)),
        f"{r.size} prompt(s) refused as too long (smallest {int(r[0]):,} tokens), the largest "
        f"answered {int(a[-1]):,}",
    )


def _prices(calls: pl.DataFrame) -> dict[str, Estimate] | None:
    """Token prices when they explain the recorded costs, else a cost per answer; None
    when no answer has a recorded cost."""
    paid = calls.filter(pl.col("outcome").is_in(list(ANSWERED)) & pl.col("cost_usd").is_not_null())
    if paid.height == 0:
        return None
    cost = paid.get_column("cost_usd").to_numpy()
    pt = paid.get_column("_pt").fill_null(0).to_numpy().astype(float)
    ct = paid.get_column("_ct").fill_null(0).to_numpy().astype(float)
    n = int(cost.size)
    mean = float(cost.mean())
    if mean == 0:
        return {"cost_per_task": Estimate(0.0, n, (0.0, 0.0), "every answer was free")}
    spread = float(cost.std() / mean)
    if spread < 0.01 or (pt.std() == 0 and ct.std() == 0):
        return {
            "cost_per_task": Estimate(
                float(np.median(cost)),
                n,
                (float(cost.min()), float(cost.max())),
                f"recorded cost per answer (range; CV {spread:.2g})",
            )
        }
    X = np.column_stack([pt, ct]) / 1e6
    coef, _ = optimize.nnls(X, cost)
    pred = X @ coef
    resid = float(np.sqrt(np.mean((cost - pred) ** 2)) / mean)
    if resid < 0.02:
        note = f"least squares of cost on tokens: RMS residual {resid:.2%} of the mean cost"
        return {
            "input_per_mtok": Estimate(float(coef[0]), n, None, note),
            "output_per_mtok": Estimate(float(coef[1]), n, None, "the same fit"),
        }
    lo, hi = np.quantile(cost, [0.025, 0.975])
    return {
        "cost_per_task": Estimate(
            mean,
            n,
            (float(lo), float(hi)),
            f"mean recorded cost per answer (token prices leave {resid:.0%} RMS unexplained)",
        )
    }


# ----------------------------------------------------------------------- assembly
#: The latency shape of a model the records never called (the seed scenario's
#: llmperf-leaderboard tail shape).
_PROFILE_SIGMA = 0.0911


@dataclass
class Calibration:
    """The result of :func:`calibrate`: every fit, the rendered YAML and the scenario
    it loads as (:attr:`scenario`, validated by the scenario loader)."""

    name: str
    sources: list[str]
    n_attempts: int
    n_tasks: int
    span_s: float
    completion: CompletionFit | None
    models: dict[str, ModelFit]
    outages: dict[str, OutageFit]
    notes: list[str]
    stalls: list[tuple[float, float]] = field(default_factory=list)
    yaml_text: str = ""
    scenario: Scenario | None = None


def _with_sizes(records: Records) -> pl.DataFrame:
    """The attempts with ``_pt``/``_ct`` (the call's reported usage, else the task's
    sizes) and the task type filled from the task records."""
    tasks = records.task_table().select(
        "task_id",
        pl.col("task_type").alias("_tt"),
        pl.col("prompt_tokens").alias("_tpt"),
        pl.col("completion_tokens").alias("_tct"),
    )
    att = records.attempts.join(tasks, on="task_id", how="left")
    return att.with_columns(
        pl.coalesce("prompt_tokens", "_tpt").alias("_pt"),
        pl.coalesce("completion_tokens", "_tct").alias("_ct"),
        pl.coalesce("task_type", "_tt").alias("task_type"),
    ).sort("start_s", maintain_order=True)


def calibrate(
    records: Records,
    config: RouterConfig | None = None,
    *,
    name: str = "calibrated",
    seed: int = 0,
    profile: bool = False,
    stalls: Sequence[tuple[float, float]] = (),
) -> Calibration:
    """Fit a scenario from ``records`` (see the module docstring for the methods).

    ``config`` (the router config that was live) supplies the provider of each model
    (models of one provider share an outage process) and, for config models the
    records never called, a scenario model from the profile (said so in the YAML).
    ``seed`` seeds the held-out splits and bootstraps (the result is deterministic).
    ``profile``: profile-likelihood CIs for the difficulty (slower). ``stalls``:
    windows ``(start_s, end_s)`` in which the recording client is *known* to have
    stalled (measured by the harness, e.g. ``record_against_twin``'s ``"stalls"``), left
    out like the stalls the fit infers. Returns a
    :class:`Calibration` whose :attr:`~Calibration.scenario` is the rendered YAML
    loaded back by the scenario loader. Raises :class:`InputError` (one line) when the
    records cannot be calibrated from (e.g. no call was ever answered).
    """
    from sim.world.scenario import parse_scenario

    att = _with_sizes(records)
    if att.height == 0:
        raise InputError("no attempt records to calibrate from")
    if not att.get_column("outcome").is_in(list(ANSWERED)).any():
        raise InputError(
            "no call in the records was answered (ok, validation or malformed): nothing to "
            "fit completion or latency from"
        )
    seen = list(dict.fromkeys(att.get_column("model").to_list()))
    cfg_ids = [m.id for m in config.models] if config is not None else []
    order = cfg_ids + [m for m in seen if m not in cfg_ids]
    provider = {m: m for m in order}
    if config is not None:
        provider.update({m.id: m.provider for m in config.models})
    notes: list[str] = []
    if config is None:
        notes.append(
            "no --config: each model has its own outage process (provider = model id); "
            "pass the router config to share one per provider"
        )
    completion = fit_completion(att, profile=profile)
    groups: dict[str, list[str]] = {}
    for m in seen:
        groups.setdefault(provider[m], []).append(m)
    calls_of = {key: att.filter(pl.col("model").is_in(models)) for key, models in groups.items()}
    detected = {
        key: find_episodes(c.get_column("start_s").to_numpy(), c.get_column("outcome").to_numpy())[
            0
        ]
        for key, c in calls_of.items()
    }
    stalls = _merge_windows([*client_stalls(detected, len(groups)), *stalls])
    if stalls:
        notes.append(
            f"{len(stalls)} window(s) in which the recording client stalled (several "
            "providers timed out at once, or the harness measured it) "
            f"({', '.join(f'{a:.0f}-{b:.0f} s' for a, b in stalls[:5])}"
            f"{', ...' if len(stalls) > 5 else ''}): not a provider; calls in flight then "
            "are left out of the outages, error rates and latencies"
        )
    outages = {
        key: fit_outages(key, groups[key], c, seed=seed, exclude=stalls)
        for key, c in calls_of.items()
    }
    models: dict[str, ModelFit] = {}
    for m in order:
        if m in seen:
            models[m] = _fit_model(
                m, provider[m], att, completion, outages[provider[m]], seed, stalls
            )
        else:
            assert config is not None
            models[m] = _profile_model(config, m)
            notes.append(f"{m}: never called in the records; its figures are the config profile's")
    starts = att.get_column("start_s")
    cal = Calibration(
        name=name,
        sources=list(records.sources),
        n_attempts=att.height,
        n_tasks=records.n_tasks,
        span_s=float(starts.max() - starts.min()),  # type: ignore[operator]
        completion=completion,
        models=models,
        outages=outages,
        notes=notes,
        stalls=stalls,
    )
    cal.yaml_text = render_yaml(cal)
    import yaml

    cal.scenario = parse_scenario(yaml.safe_load(cal.yaml_text), f"{name} (calibrated)")
    return cal


def _fit_model(
    m: str,
    provider: str,
    att: pl.DataFrame,
    completion: CompletionFit,
    outage: OutageFit,
    seed: int,
    stalls: Sequence[tuple[float, float]] = (),
) -> ModelFit:
    calls = att.filter(pl.col("model") == m)
    outcome = calls.get_column("outcome").to_numpy()
    counts = {k: int(v) for k, v in zip(*np.unique(outcome, return_counts=True), strict=True)}
    starts = calls.get_column("start_s").to_numpy()
    lat = calls.get_column("latency_s").to_numpy()
    # A call in flight while the client stalled (not only one started then) came back
    # late by the stall: its latency and outcome say nothing about the provider.
    stalled = np.zeros(starts.size, dtype=bool)
    for lo, hi in stalls:
        stalled |= (starts <= hi) & (starts + np.maximum(lat, 0.0) >= lo)
    down = outage.down_at(starts) | stalled
    answered = np.isin(outcome, list(ANSWERED))
    fast = np.isin(outcome, list(FAST_FAILURES))
    slow = np.isin(outcome, list(TIMEOUTS))
    notes: list[str] = []
    # Server errors: per call that reached the model outside outages.
    reached = (answered | fast | slow) & ~down
    k_fast, n_reached = int((fast & ~down).sum()), int(reached.sum())
    ser = Estimate(
        k_fast / n_reached if n_reached else 0.0,
        n_reached,
        _wilson(k_fast, n_reached) if n_reached else None,
        f"{k_fast} 5xx/connection failures outside outage episodes (Wilson CI)",
    )
    k_slow, n_timed = int((slow & ~down).sum()), int(((answered | slow) & ~down).sum())
    timeouts = Estimate(
        k_slow / n_timed if n_timed else 0.0,
        n_timed,
        _wilson(k_slow, n_timed) if n_timed else None,
        "observed share of answers that timed out (follows from the latency and the "
        "config's timeouts; not a scenario parameter)",
    )
    ff = np.isin(outcome, list(FAST_FAILURES | {"context_length"})) & (lat > 0)
    if ff.any():
        v = lat[ff]
        ffl = Estimate(
            float(np.median(v)), int(v.size), _median_ci(v), "median 5xx/refusal latency"
        )
    else:
        ffl = Estimate(0.5, 0, None, "no fast failure recorded: the scenario default")
    # Latency: answers (exact) and timeouts outside outages (right-censored).
    use = ((answered & ~stalled) | (slow & ~down)) & (lat > 0)
    lat_fit = None
    if int((answered & ~stalled & (lat > 0)).sum()) >= 2:
        pt = calls.get_column("_pt").fill_null(0).to_numpy()[use]
        ct = calls.get_column("_ct").fill_null(0).to_numpy()[use]
        lat_fit = fit_latency(lat[use], pt, ct, slow[use], seed=seed)
    else:
        notes.append("fewer than 2 answers with a latency: latency from the scenario default")
    # Malformed: per task type, (malformed, unsolved) answers.
    types = calls.get_column("task_type").fill_null("*").to_list()
    unsolved: dict[str, list[int]] = {}
    for t, o in zip(types, outcome, strict=True):
        if o in UNSOLVED:
            row = unsolved.setdefault(_type_key(t), [0, 0])
            row[0] += o == "malformed"
            row[1] += 1
    p_of = {t: completion.p[(m, t)].value for (mm, t) in completion.p if mm == m}
    default_p = completion.default[m].value if m in completion.default else 0.0
    written = list(p_of.values()) + [default_p]
    cap = max(0.0, 1.0 - max(written) - 1e-3)
    n_unsolved = sum(f for _, f in unsolved.values())
    m_rate, m_ci = _malformed(
        {t: (a, b) for t, (a, b) in unsolved.items()},
        {t: p_of.get(t, default_p) for t in unsolved},
        cap,
    )
    mal = Estimate(
        m_rate,
        n_unsolved,
        m_ci,
        f"{counts.get('malformed', 0)} malformed of {n_unsolved} unsolved answers, "
        "times 1 - p (likelihood-ratio CI)",
    )
    rpm, ra = _rate_limit(calls)
    ctx = _context_window(calls)
    prices = _prices(calls) or {
        "cost_per_task": Estimate(0.0, 0, None, "no cost recorded: assumed free")
    }
    return ModelFit(
        model=m,
        provider=provider,
        observed=True,
        calls=calls.height,
        outcomes=counts,
        latency=lat_fit,
        server_error_rate=ser,
        malformed_rate=mal,
        fail_fast_latency_s=ffl,
        timeouts=timeouts,
        rate_limit_rpm=rpm,
        retry_after_s=ra,
        context_window=ctx,
        prices=prices,
        outage=outage.key,
        notes=notes,
    )


def _profile_model(config: RouterConfig, m: str) -> ModelFit:
    """A model the records never called, from its config profile (every figure says so)."""
    prof = config.model(m)
    why = "not in the records: the config profile's"
    lat_mean = (prof.avg_latency_ms or 1000.0) / 1000.0
    prices: dict[str, Estimate] = {}
    if prof.input_per_mtok is not None and prof.output_per_mtok is not None:
        prices["input_per_mtok"] = Estimate(prof.input_per_mtok, 0, None, why)
        prices["output_per_mtok"] = Estimate(prof.output_per_mtok, 0, None, why)
    else:
        prices["cost_per_task"] = Estimate(prof.cost_per_task or 0.0, 0, None, why)
    zero = Estimate(0.0, 0, None, why)
    return ModelFit(
        model=m,
        provider=prof.provider,
        observed=False,
        calls=0,
        outcomes={},
        latency=None,
        server_error_rate=zero,
        malformed_rate=zero,
        fail_fast_latency_s=Estimate(0.5, 0, None, "not in the records: the scenario default"),
        timeouts=zero,
        rate_limit_rpm=None,
        retry_after_s=None,
        context_window=(
            Estimate(float(prof.context_window), 0, None, why) if prof.context_window else None
        ),
        prices=prices,
        outage=None,
        profile_latency={
            "dist": "lognormal",
            "mean_s": lat_mean,
            "sigma": _PROFILE_SIGMA,
            "_note": (
                f"not in the records: the profile's avg_latency_ms"
                f"{'' if prof.avg_latency_ms else ' (none: 1 s assumed)'}; sigma "
                f"{_PROFILE_SIGMA} is the seed scenario's llmperf tail shape"
            ),
        },
        notes=[why],
    )


# -------------------------------------------------------------------------- YAML
def _flow(mapping: dict[str, Any]) -> str:
    """A one-line YAML flow mapping of scalars and lists of numbers (a mixture's
    components, to 5 significant digits: its weights must still sum to 1 within
    0.001 when read back)."""
    parts = []
    for k, v in mapping.items():
        if k.startswith("_"):
            continue
        if isinstance(v, str):
            parts.append(f"{k}: {v}")
        elif isinstance(v, list | tuple):
            parts.append(f"{k}: [{', '.join(_num(x, 5) for x in v)}]")
        else:
            parts.append(f"{k}: {_num(v)}")
    return "{" + ", ".join(parts) + "}"


def _samples_block(values: Sequence[float], indent: int) -> list[str]:
    """A flow sequence of numbers wrapped over lines (valid YAML: continuation lines
    are indented deeper than the key)."""
    pad = " " * indent
    nums = [_num(v, 5) for v in values]
    lines, line = [], ""
    for i, t in enumerate(nums):
        piece = t + ("," if i < len(nums) - 1 else "]")
        if len(line) + len(piece) + 1 > 88 - indent:
            lines.append(pad + line.rstrip())
            line = ""
        line += piece + " "
    lines.append(pad + line.rstrip())
    lines[0] = lines[0][:indent] + "[" + lines[0][indent:]
    return lines


def _dist_lines(key: str, mapping: dict[str, Any], comment: str, indent: int) -> list[str]:
    """``key: <distribution>  # comment`` (an empirical one as a block)."""
    pad = " " * indent
    if mapping.get("dist") != "empirical":
        return [f"{pad}{key}: {_flow(mapping)}  # {comment}"]
    return [
        f"{pad}{key}:  # {comment}",
        f"{pad}  dist: empirical",
        f"{pad}  samples_s:",
        *_samples_block(mapping["samples_s"], indent + 4),
    ]


def _latency_mapping(fit: LatencyFit) -> dict[str, Any]:
    """The base distribution of ``fit`` as a scenario mapping, readable parameters."""
    mapping, _ = fit.distribution()
    if mapping["dist"] == "lognormal":
        return {"dist": "lognormal", "median_s": math.exp(mapping["mu"]), "sigma": mapping["sigma"]}
    return mapping


def _concentration(estimates: Sequence[Estimate]) -> float | None:
    """The Beta concentration ``k`` whose spread, ``p (1 - p) / (k + 1)``, matches the
    fitted CIs (the median over the model's task types), so that replays carry the
    calibration's own uncertainty; None without CIs."""
    ks = []
    for e in estimates:
        if e.ci is None or not 0.0 < e.value < 1.0:
            continue
        se = (e.ci[1] - e.ci[0]) / (2 * _Z95)
        if se > 0:
            ks.append(e.value * (1 - e.value) / (se * se) - 1.0)
    if not ks:
        return None
    return float(min(max(np.median(ks), 2.0), 1e5))


def _kv(indent: int, key: str, value: str, comment: str) -> str:
    """``key: value  # comment`` at ``indent`` spaces."""
    return f"{' ' * indent}{key}: {value}  # {comment}"


def render_yaml(cal: Calibration) -> str:
    """The calibrated scenario as YAML text, every fitted number commented with its
    n, 95% CI and goodness of fit (or why it is not fitted)."""
    comp = cal.completion
    out: list[str] = []
    w = out.append
    w(f"# Calibrated by `sim calibrate` from {cal.n_attempts:,} attempts of {cal.n_tasks:,} tasks")
    w(f"# over {cal.span_s / 3600:.3g} h of traffic ({', '.join(cal.sources) or 'in memory'}).")
    w("# Every fitted number carries a comment: n = the observations it rests on, a 95% CI,")
    w("# and for a distribution its goodness of fit (KS distance from the Kaplan-Meier CDF")
    w("# with its nominal p-value, which is conservative for fitted parameters; AD =")
    w("# Anderson-Darling). Methods: sim/world/calibration.py. A number marked NOT")
    w("# IDENTIFIABLE, or taken from the seed scenario or the config, was not fitted from")
    w("# these records.")
    for note in cal.notes:
        w(f"# note: {note}")
    w(f"name: {cal.name}")
    w("description: >-")
    w(
        f"  Fitted by sim calibrate from {cal.n_attempts:,} recorded attempts of "
        f"{cal.n_tasks:,} tasks."
    )
    w("")
    u_val = 0.0
    if comp is not None:
        u_val = float(_num(comp.unsolvable.value))
        w("# Latent task difficulty: the maximum likelihood of every task's sequence of answers")
        w("# (Gauss-Hermite over the difficulty), which accounts for fallbacks seeing only")
        w("# the tasks earlier models failed.")
        w("difficulty:")
        w(f"  sigma: {_num(comp.sigma.value)}  # {comp.sigma.comment()}")
        w(f"  unsolvable: {_num(u_val)}  # {comp.unsolvable.comment()}")
        w(f"  retry_correlation: {_num(comp.rho.value)}  # {comp.rho.comment()}")
        w(f"  # {comp.n_tasks:,} tasks with an answer; per answer position (1st, 2nd, ...) the")
        w("  # share solved, observed vs predicted from the task's earlier answers:")
        for pos, (n, obs, pred) in comp.check.items():
            label = f"{pos}th+" if pos == 4 else {1: "1st", 2: "2nd", 3: "3rd"}[pos]
            w(f"  #   {label:>5}: n={n:,}, observed {obs:.3f}, predicted {pred:.3f}")
        if math.isfinite(comp.chi2):
            w(f"  #   chi-square {comp.chi2:.2f} on {len(comp.check)} df, p={comp.chi2_p:.2g}")
        w("")
    used = {f.outage for f in cal.models.values() if f.outage is not None}
    if used:
        w("providers:")
        for key in [k for k in cal.outages if k in used]:
            o = cal.outages[key]
            eps = ", ".join(f"{e.start_s:.0f}-{e.end_s:.0f} s" for e in o.episodes[:8])
            more = f" and {len(o.episodes) - 8} more" if len(o.episodes) > 8 else ""
            w(f"  {key}:  # models {', '.join(o.models)}")
            w(
                f"    # {len(o.episodes)} outage episode(s) in {o.span_s / 3600:.3g} h"
                + (f": {eps}{more}" if eps else "")
                + f" (runs of >= {o.run_length} failures; baseline failure rate {o.baseline:.3g})"
            )
            w("    outage:")
            out.extend(
                _dist_lines("time_between", o.time_between, o.time_between_est.comment(" s"), 6)
            )
            out.extend(_dist_lines("duration", o.duration, o.duration_est.comment(" s"), 6))
            fails = sum(e.failures for e in o.episodes)
            hangs = sum(e.timeouts for e in o.episodes)
            why = (
                f"{hangs} of {fails} failures in episodes were timeouts"
                if fails
                else "the seed scenario's mode"
            )
            w(f"      mode: {o.mode}  # {why}")
        w("")
    w("models:")
    for m, fit in cal.models.items():
        w(f"  {m}:")
        w(f"    provider: {fit.provider}" + ("" if fit.observed else "  # the config's"))
        for note in fit.notes:
            w(f"    # note: {note}")
        w("    completion:")
        p_vals: list[float] = []
        if comp is not None and m in comp.default:
            d = comp.default[m]
            dv = min(float(_num(d.value)), 1.0 - u_val)
            p_vals.append(dv)
            w(f"      default: {_num(dv)}  # {d.comment()}")
            per = sorted((t, e) for (mm, t), e in comp.p.items() if mm == m and t != "*")
            if per:
                w("      per_type:")
                for t, e in per:
                    v = min(float(_num(e.value)), 1.0 - u_val)
                    p_vals.append(v)
                    w(f"        {t}: {_num(v)}  # {e.comment()}")
            k = _concentration([e for (mm, _), e in comp.p.items() if mm == m])
            if k is not None:
                w(
                    _kv(
                        6,
                        "beta_concentration",
                        _num(k, 3),
                        f"n={d.n:,}; the fit's own uncertainty: each replication draws p ~ "
                        "Beta(k p, k (1 - p)), whose spread matches the CIs above (median "
                        "over types)",
                    )
                )
        else:
            prof_p = 0.5
            w(
                _kv(
                    6,
                    "default",
                    _num(min(prof_p, 1.0 - u_val)),
                    "not in the records: an assumption (no answer to fit from)",
                )
            )
            p_vals.append(min(prof_p, 1.0 - u_val))
        if fit.latency is not None:
            lf = fit.latency
            mapping = _latency_mapping(lf)
            _, what = lf.distribution()
            scores = ", ".join(f"{k} {v:.4f}" for k, v in lf.scores.items())
            cens = f", {lf.n_censored} censored (timeouts)" if lf.n_censored else ""
            base_note = (
                f"n={lf.n:,}{cens}; {what}; held-out log-lik per obs: {scores}; {lf.gof()}"
                if lf.scores
                else f"n={lf.n:,}{cens}; too few values to choose a family; {lf.gof()}"
            )
            terms = [t for t in (lf.per_output, lf.per_input) if t is not None]
            dropped = (
                f"; no significant {', '.join(lf.dropped_terms)} term" if lf.dropped_terms else ""
            )
            if terms:
                w("    latency:")
                out.extend(
                    _dist_lines(
                        "ttft", mapping, "base (time to first token) " + base_note + dropped, 6
                    )
                )
                if lf.per_output is not None:
                    po = lf.per_output
                    w(_kv(6, "per_output_token_s", _num(po.value), po.comment(" s")))
                if lf.per_input is not None:
                    pi = lf.per_input
                    w(_kv(6, "per_input_token_s", _num(pi.value), pi.comment(" s")))
            else:
                out.extend(_dist_lines("latency", mapping, base_note + dropped, 4))
        elif fit.profile_latency is not None:
            out.extend(_dist_lines("latency", fit.profile_latency, fit.profile_latency["_note"], 4))
        else:
            w(
                "    latency: {dist: lognormal, mean_s: 1, sigma: 0.0911}  # no latency recorded: "
                "an assumption (the seed's llmperf shape)"
            )
        if fit.context_window is not None:
            cw = fit.context_window
            w(_kv(4, "context_window", str(int(cw.value)), cw.comment()))
        if fit.outage is not None:
            w(f"    outage: {{shared: true}}  # provider {fit.outage}'s process")
        if fit.rate_limit_rpm is not None:
            rpm = fit.rate_limit_rpm
            w(_kv(4, "rate_limit_rpm", _num(rpm.value), rpm.comment()))
            if fit.retry_after_s is not None:
                ra = fit.retry_after_s
                w(_kv(4, "retry_after_s", _num(ra.value), ra.comment(" s")))
        elif fit.observed:
            w(f"    # rate_limit_rpm: none (no 429 in {fit.calls:,} calls)")
        ff = fit.fail_fast_latency_s
        w(_kv(4, "fail_fast_latency_s", _num(ff.value), ff.comment(" s")))
        cap = max(0.0, 1.0 - max(p_vals) - 1e-4) if p_vals else 1.0
        mal, ser = fit.malformed_rate, fit.server_error_rate
        w(_kv(4, "malformed_rate", _num(min(mal.value, cap)), mal.comment()))
        w(_kv(4, "server_error_rate", _num(ser.value), ser.comment()))
        if fit.observed:
            w(f"    # timeouts: {fit.timeouts.value:.3%} of answers ({fit.timeouts.comment()})")
        for key, est in fit.prices.items():
            w(f"    {key}: {_num(est.value)}  # {est.comment()}")
    return "\n".join(out) + "\n"


def write_calibration(
    cal: Calibration,
    out: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    html: bool = False,
) -> Path:
    """Write the scenario YAML to ``out`` atomically, after loading it back with the
    scenario loader (:func:`sim.world.scenario.load_scenario`); with ``report``, the
    Markdown report and its figures to that directory (:mod:`sim.world.calibration_report`),
    replaced atomically. Nothing is left half-written: on any failure neither output
    is changed."""
    from sim.world.scenario import load_scenario

    out = Path(out)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".yaml", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(cal.yaml_text)
        load_scenario(tmp)  # the contract: what we write loads
        if report is not None:
            from sim.world.calibration_report import write_report

            write_report(cal, report, html=html)
        os.chmod(tmp, out.stat().st_mode & 0o7777 if out.exists() else 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
