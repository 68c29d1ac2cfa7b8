"""Synthetic task traces: arrival processes, a task-type mix and token sizes.

:func:`synthesize` returns a frame in the trace schema (:mod:`sim.traces.tasks`) with
the required columns only. Three arrival processes, each parameterised so that
``rate_per_s`` is the long-run mean rate:

``poisson``
    homogeneous Poisson process.
``bursty``
    a two-state Markov-modulated Poisson process (MMPP): a *calm* and a *burst*
    state with exponentially distributed sojourns (means ``mean_calm_s`` and
    ``mean_burst_s``); the burst rate is ``burst_ratio`` times the calm rate. The
    first state is drawn from the stationary distribution, so the process is
    stationary from t = 0.
``diurnal``
    a non-homogeneous Poisson process with a sinusoidal 24 h rate,
    ``rate(t) = rate_per_s * (1 + a cos(2 pi (t - peak_hour * 3600) / 86400))``
    with ``a = (peak_to_trough - 1) / (peak_to_trough + 1)``, simulated by
    thinning a Poisson process at the peak rate. t = 0 is midnight.

Randomness: every draw comes from :class:`numpy.random.Generator` streams spawned
from ``seed`` -- one each for the arrivals, the task types, the prompt sizes and
the completion sizes -- so the same seed gives the same frame (and the same
Parquet bytes), and changing e.g. the mix leaves the arrival times unchanged
(common random numbers for paired comparisons).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import numpy as np
import polars as pl

from router.errors import InputError

__all__ = [
    "ARRIVAL_PROCESSES",
    "AZURE_CODE_COMPLETION_TOKENS",
    "AZURE_CODE_PROMPT_TOKENS",
    "DEFAULT_MIX",
    "DEFAULT_RATE_PER_S",
    "TokenDist",
    "draw_task_types",
    "rng_streams",
    "synthesize",
    "validate_mix",
]

ArrivalProcess = Literal["poisson", "bursty", "diurnal"]

#: The arrival processes :func:`synthesize` knows.
ARRIVAL_PROCESSES: tuple[str, ...] = ("poisson", "bursty", "diurnal")

#: Default mean arrival rate: one task every 4 s, about 21,600 tasks a day. An
#: assumption sized for a team's coding agents, not a measured figure.
DEFAULT_RATE_PER_S = 0.25

#: Default task-type mix. An ASSUMPTION (no public trace labels coding-agent calls
#: by type): structured-output calls (json) most common, then regex and sql
#: snippets, then the larger bug-patch and error-handling edits.
DEFAULT_MIX: Mapping[str, float] = {
    "json": 0.30,
    "regex": 0.20,
    "sql": 0.20,
    "bug_patch": 0.15,
    "error_handling": 0.15,
}

_DAY_S = 86_400.0

# Arrival blocks are generated this many expected tasks at a time, so memory stays
# bounded and a trace limited by n_tasks does not draw a whole long horizon.
_BLOCK_TASKS = 8192


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class TokenDist:
    """A token count ~ round(LogNormal(mu, sigma)), clipped to ``[low, high]``.

    ``mu`` and ``sigma`` are the mean and standard deviation of the natural log of
    the count (so the median is ``exp(mu)``); ``high=None`` means no upper bound.
    """

    mu: float
    sigma: float
    low: int = 1
    high: int | None = None

    def __post_init__(self) -> None:
        if not _is_real(self.mu) or not math.isfinite(self.mu):
            raise InputError(f"TokenDist.mu: expected a finite number, got {self.mu!r}")
        if not _is_real(self.sigma) or not math.isfinite(self.sigma) or self.sigma < 0:
            raise InputError(f"TokenDist.sigma: expected a finite number >= 0, got {self.sigma!r}")
        if not _is_int(self.low) or self.low < 0:
            raise InputError(f"TokenDist.low: expected an integer >= 0, got {self.low!r}")
        if self.high is not None and (not _is_int(self.high) or self.high < self.low):
            raise InputError(
                f"TokenDist.high: expected None or an integer >= low ({self.low}), "
                f"got {self.high!r}"
            )

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` counts as an int64 array."""
        values = np.rint(rng.lognormal(self.mu, self.sigma, size=n))
        upper = np.inf if self.high is None else float(self.high)
        return np.clip(values, float(self.low), upper).astype(np.int64)


# Token sizes FITTED to the Azure LLM inference trace of a code-completion service
# (/work/shared/data/azure-llm-trace-2023/AzureLLMInferenceTrace_code.csv, 8,819
# requests, CC-BY-4.0), by quantile matching on the log scale:
#     mu = ln(median),  sigma = (ln q75 - ln q25) / (2 * 0.67449)
# computed with numpy on the ContextTokens / GeneratedTokens columns:
#     prompt:     median 1469, q25 578, q75 2744.5 -> mu 7.2923, sigma 1.1548
#     completion: median 13,   q25 9,   q75 24     -> mu 2.5649, sigma 0.7271
# Quantile matching rather than maximum likelihood because the log-sizes are
# skewed: the MLE (prompt mu 6.9986, sigma 1.3602; completion mu 2.7882, sigma
# 0.8472) misses the medians (1095 vs 1469 prompt, 16 vs 13 completion). Prompts
# are clipped at 7437, the trace's maximum (its context window: 4.7% of the real
# prompts sit at >= 7400, 8% of the fitted mass lies above 7437). Known misfit:
# the completion tail is lighter than the data's (p99 71 vs 252 tokens).
AZURE_CODE_PROMPT_TOKENS = TokenDist(mu=7.2923, sigma=1.1548, low=1, high=7437)
AZURE_CODE_COMPLETION_TOKENS = TokenDist(mu=2.5649, sigma=0.7271, low=1, high=None)


def _positive(name: str, value: object, *, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a finite float > ``minimum`` (>= if not strict), else InputError."""
    ok = _is_real(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = number > minimum if strict else number >= minimum
    if not ok:
        relation = ">" if strict else ">="
        raise InputError(f"{name}: expected a finite number {relation} {minimum:g}, got {value!r}")
    return number


def validate_mix(
    mix: Mapping[str, float], *, argument: str = "mix"
) -> tuple[list[str], np.ndarray]:
    """Check a task-type mix; return its types and probabilities (weights normalised).

    Weights are relative (they need not sum to 1) but must be finite, >= 0 and sum
    to a positive number; types must be non-empty strings. Any type name is
    accepted: types without a route take the router's default route.
    """
    if not isinstance(mix, Mapping):
        raise InputError(f"{argument}: expected a mapping of task type to weight, got {mix!r}")
    if not mix:
        raise InputError(f"{argument}: expected at least one task type, got an empty mix")
    types: list[str] = []
    weights: list[float] = []
    for task_type, weight in mix.items():
        if not isinstance(task_type, str) or not task_type.strip():
            raise InputError(f"{argument}: expected non-empty task type names, got {task_type!r}")
        if not _is_real(weight) or not math.isfinite(float(weight)) or weight < 0:
            raise InputError(
                f"{argument}[{task_type!r}]: expected a finite weight >= 0, got {weight!r}"
            )
        types.append(task_type)
        weights.append(float(weight))
    total = math.fsum(weights)
    if total <= 0:
        raise InputError(f"{argument}: expected weights summing to a positive number, got {total}")
    return types, np.asarray(weights) / total


def draw_task_types(rng: np.random.Generator, n: int, mix: Mapping[str, float]) -> list[str]:
    """``n`` task types drawn independently from ``mix`` (validated, see :func:`validate_mix`).

    Draw i depends only on the i-th uniform of ``rng``, so a longer trace from the
    same generator starts with the same types.
    """
    types, probs = validate_mix(mix)
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0  # guard against the sum of rounded probabilities falling short of 1
    index = np.searchsorted(cdf, rng.random(n), side="right")
    return [types[i] for i in index]


# ------------------------------------------------------------------------ #
# Arrival processes. Each yields the sorted arrival times of consecutive      #
# windows [start, end) and stops at the horizon.                             #
# ------------------------------------------------------------------------ #


def _uniform_block(rng: np.random.Generator, rate: float, start: float, end: float) -> np.ndarray:
    # Given N ~ Poisson(rate * length), a Poisson process's N points are iid uniform
    # on the interval: exact, and vectorised.
    count = rng.poisson(rate * (end - start))
    return np.sort(rng.uniform(start, end, count))


def _poisson_blocks(rng: np.random.Generator, rate: float, horizon: float) -> Iterator[np.ndarray]:
    window = _BLOCK_TASKS / rate
    t = 0.0
    while t < horizon:
        end = min(t + window, horizon)
        yield _uniform_block(rng, rate, t, end)
        t = end


def _bursty_blocks(
    rng: np.random.Generator,
    rate: float,
    horizon: float,
    *,
    burst_ratio: float,
    mean_calm_s: float,
    mean_burst_s: float,
) -> Iterator[np.ndarray]:
    # Mean rate = (calm * Tc + burst * Tb) / (Tc + Tb) with burst = ratio * calm.
    calm_rate = rate * (mean_calm_s + mean_burst_s) / (mean_calm_s + burst_ratio * mean_burst_s)
    rates = (calm_rate, calm_rate * burst_ratio)
    means = (mean_calm_s, mean_burst_s)
    state = int(rng.random() < mean_burst_s / (mean_calm_s + mean_burst_s))
    t = 0.0
    while t < horizon:
        end = min(t + rng.exponential(means[state]), horizon)
        yield _uniform_block(rng, rates[state], t, end)
        t = end
        state = 1 - state


def _diurnal_blocks(
    rng: np.random.Generator,
    rate: float,
    horizon: float,
    *,
    peak_to_trough: float,
    peak_hour: float,
) -> Iterator[np.ndarray]:
    amplitude = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    peak_rate = rate * (1.0 + amplitude)
    window = _BLOCK_TASKS / peak_rate
    t = 0.0
    while t < horizon:
        end = min(t + window, horizon)
        candidates = _uniform_block(rng, peak_rate, t, end)
        phase = 2.0 * np.pi * (candidates - peak_hour * 3600.0) / _DAY_S
        keep = rng.random(candidates.size) * (1.0 + amplitude) < 1.0 + amplitude * np.cos(phase)
        yield candidates[keep]
        t = end


def synthesize(
    *,
    n_tasks: int | None = None,
    duration_s: float | None = None,
    arrival: ArrivalProcess = "poisson",
    rate_per_s: float = DEFAULT_RATE_PER_S,
    mix: Mapping[str, float] | None = None,
    seed: int | np.random.Generator,
    burst_ratio: float = 10.0,
    mean_calm_s: float = 900.0,
    mean_burst_s: float = 120.0,
    peak_to_trough: float = 3.0,
    peak_hour: float = 14.0,
    prompt_tokens: TokenDist = AZURE_CODE_PROMPT_TOKENS,
    completion_tokens: TokenDist = AZURE_CODE_COMPLETION_TOKENS,
    id_prefix: str = "synth-",
) -> pl.DataFrame:
    """A synthetic trace: ``task_id, arrival_s, task_type, prompt_tokens, completion_tokens``.

    Length: ``n_tasks`` tasks, or every arrival in ``[0, duration_s)``; with both,
    the first ``n_tasks`` arrivals before ``duration_s``. At least one is needed.
    A short ``duration_s`` may yield no arrivals: the frame is then empty (still
    typed).

    Arrivals: ``arrival`` picks the process (module docstring); ``rate_per_s`` is
    its long-run mean rate. Bursty: ``burst_ratio`` (burst rate / calm rate,
    default 10), ``mean_calm_s`` (default 900 s) and ``mean_burst_s`` (default
    120 s) -- defaults are assumptions, milder than the Azure code trace (whose
    index of dispersion of 60 s counts is about 160). Diurnal: ``peak_to_trough``
    (the ratio of the highest to the lowest rate, default 3) and ``peak_hour``
    (hour of the day of the peak, default 14.0; t = 0 is midnight).

    Types are drawn from ``mix`` (default :data:`DEFAULT_MIX`); token counts from
    ``prompt_tokens`` and ``completion_tokens`` (defaults fitted to the Azure code
    trace). Ids are ``id_prefix`` + a 1-based number zero-padded to 6 digits.
    ``seed`` is an int (same int, same frame) or a Generator (consumed).

    Raises :class:`~router.errors.InputError` naming the offending argument.
    """
    if n_tasks is None and duration_s is None:
        raise InputError("n_tasks/duration_s: expected at least one of them, got neither")
    if n_tasks is not None and (not _is_int(n_tasks) or n_tasks < 1):
        raise InputError(f"n_tasks: expected an integer >= 1, got {n_tasks!r}")
    horizon = math.inf if duration_s is None else _positive("duration_s", duration_s)
    if arrival not in ARRIVAL_PROCESSES:
        raise InputError(
            f"arrival: expected one of {', '.join(ARRIVAL_PROCESSES)}, got {arrival!r}"
        )
    rate = _positive("rate_per_s", rate_per_s)
    task_mix = DEFAULT_MIX if mix is None else mix
    validate_mix(task_mix)
    # Every process parameter is checked even when another process is chosen: a
    # bad value is a bug in the caller either way.
    burst = _positive("burst_ratio", burst_ratio, minimum=1.0, strict=False)
    calm_s = _positive("mean_calm_s", mean_calm_s)
    burst_s = _positive("mean_burst_s", mean_burst_s)
    ratio = _positive("peak_to_trough", peak_to_trough, minimum=1.0, strict=False)
    hour = _positive("peak_hour", peak_hour, strict=False)
    if hour >= 24.0:
        raise InputError(f"peak_hour: expected a number in [0, 24), got {peak_hour!r}")
    if not isinstance(prompt_tokens, TokenDist):
        raise InputError(f"prompt_tokens: expected a TokenDist, got {prompt_tokens!r}")
    if not isinstance(completion_tokens, TokenDist):
        raise InputError(f"completion_tokens: expected a TokenDist, got {completion_tokens!r}")
    if not isinstance(id_prefix, str):
        raise InputError(f"id_prefix: expected a string, got {id_prefix!r}")
    streams = rng_streams(seed, 4)

    blocks: Iterator[np.ndarray]
    if arrival == "poisson":
        blocks = _poisson_blocks(streams[0], rate, horizon)
    elif arrival == "bursty":
        blocks = _bursty_blocks(
            streams[0], rate, horizon, burst_ratio=burst, mean_calm_s=calm_s, mean_burst_s=burst_s
        )
    else:
        blocks = _diurnal_blocks(streams[0], rate, horizon, peak_to_trough=ratio, peak_hour=hour)
    arrivals = _collect(blocks, n_tasks)

    n = arrivals.size
    return pl.DataFrame(
        {
            "task_id": [f"{id_prefix}{i:06d}" for i in range(1, n + 1)],
            "arrival_s": arrivals,
            "task_type": draw_task_types(streams[1], n, task_mix),
            "prompt_tokens": prompt_tokens.draw(streams[2], n),
            "completion_tokens": completion_tokens.draw(streams[3], n),
        },
        schema={
            "task_id": pl.String,
            "arrival_s": pl.Float64,
            "task_type": pl.String,
            "prompt_tokens": pl.Int64,
            "completion_tokens": pl.Int64,
        },
    )


def rng_streams(seed: int | np.random.Generator, count: int) -> list[np.random.Generator]:
    """``count`` independent generators derived from ``seed`` (an int >= 0 or a Generator).

    The same int always gives the same streams (via :class:`numpy.random.SeedSequence`);
    a Generator is advanced by spawning. Raises InputError naming ``seed``.
    """
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(count))
    if not _is_int(seed) or seed < 0:
        raise InputError(f"seed: expected an integer >= 0 or a numpy Generator, got {seed!r}")
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(count)]


def _collect(blocks: Iterator[np.ndarray], n_tasks: int | None) -> np.ndarray:
    """Concatenate arrival blocks until the horizon or ``n_tasks`` arrivals."""
    parts: list[np.ndarray] = []
    total = 0
    for times in blocks:
        parts.append(times)
        total += times.size
        if n_tasks is not None and total >= n_tasks:
            break
    arrivals = np.concatenate(parts) if parts else np.empty(0)
    return arrivals[:n_tasks] if n_tasks is not None else arrivals
