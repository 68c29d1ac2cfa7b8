"""One replication's randomness: outage timelines and per-attempt draws.

A :class:`World` is what :meth:`sim.world.scenario.Scenario.realize` returns for one
replication seed and one trace. It owns *no clock* and makes *no policy decision*: the
SimPy driver asks it what the environment does, and the router's policy decides what
to try.

Common random numbers
---------------------
Two router configs run with the same seed on the same trace must meet the same world,
so every draw is keyed by *what it is about*, never by the order in which it was asked
for. ``tk`` below is the world's ``trace_key`` (:func:`sim.engine.replays.trace_key`: a CRC-32
of the trace's content), appended as the last word of every seed sequence of a per-task
draw, so two different traces never share draws; a world without a trace key
(``trace_key=None``) leaves it out, which is the layout of worlds before traces were
keyed (and what a twin server without a trace uses).

* An outage timeline belongs to a provider (``shared: true``) or to one model and is
  drawn from ``default_rng([seed, tag, crc32(key)])`` with ``key`` =
  ``"provider:<name>"`` or ``"model:<id>"``. ``zlib.crc32`` hashes the name stably
  across processes (Python's ``hash()`` is salted per process). Timelines are keyed by
  the seed *only*, not by the trace: they describe the providers, not the traffic, so
  two traces replayed with one seed are two workloads on the same days of the same
  providers (and their outages coincide, as they would have).
* The uniforms of attempt ``k`` (1-based, counted per model within a task) of task
  ``i`` on model ``m`` depend only on ``(seed, m's id, i, k, tk)``: they come in
  blocks of 4,096 task indices, one block per ``(model, block, k)`` generated lazily
  from ``default_rng([seed, tag, crc32(id), i // 4096, k(, tk)])`` and mapped through
  the latency ``ppf`` in one vectorised call. A token-form latency with per-token
  *distributions* draws its per-token times from a second stream of the same key
  (another tag), so its TTFT uses the very uniform a flat latency would. Blocks of
  attempts that are never made are never generated, so retries cost nothing until
  they happen.
* Task difficulty: the latent ``z_i ~ N(0, 1)`` (``d = sigma z``) and the unsolvable
  uniform ``v_i`` of task ``i`` depend only on ``(seed, i, tk)`` (blocks from
  ``default_rng([seed, tag, i // 4096(, tk)])``, one tag each): never on a model or a
  config. A model's persistent noise ``eta(i, m)`` (only when some
  ``retry_correlation`` > 0) depends only on ``(seed, m's id, i, tk)``.
* Beta-drawn completion probabilities are keyed by ``(seed, id, task type)``: they are
  the uncertainty about a provider, not about the traffic, so not by the trace.

So neither the set nor the order of ``model_ids`` nor the calls made so far change
any draw. A model's index is only its position in ``model_ids``; a task's index is its
position in the trace's canonical order (:func:`sim.traces.tasks.replay_columns`: by arrival,
ties by task id), so shuffling a trace's rows changes nothing.

Outcome of an answered attempt (see :mod:`sim.world.scenario` for the model): with
``u_out`` the attempt's outcome uniform, ``q`` the probability that this model solves
this task given its difficulty (and its persistent noise), the answer is "ok" iff
``u_out < q``, else "malformed" iff ``(u_out - q) / (1 - q) < m / (1 - p)``, else
"wrong". With ``sigma = u = rho = 0`` that is ``q = p`` and exactly the rule of the
independent world (``u_out`` in ``[p, p + m)`` is malformed), computed by the same
comparisons, so such a world reproduces the independent one bit for bit.

Outage timelines are stationary from t = 0: the process starts *down* with
probability E[D] / (E[U] + E[D]) and the first period is drawn from the equilibrium
residual of its law (:meth:`sim.world.distributions._Dist.sample_residual`), so a short
replay is as likely to open inside an outage as any other instant is. They are drawn
up to ``horizon_s`` at construction and extended lazily (identically: the cycles come
in fixed chunks of one stream) if the driver asks about later times.

How a driver is expected to use it, per call of model ``m`` for task ``i`` at time
``t``: ``outage(m, t)`` first (``"fail_fast"``: a 5xx after
``fail_fast_latency_s(m)``; ``"hang"``: no answer until the caller's timeout); then
its own rate-limit window against ``rate_limit_rpm(m)`` (a 429 carrying
``retry_after_s(m)``) and its ``capacity(m)`` queue; then ``attempt(m, i, k, ...)``
for the answer and its latency, with ``k`` counting the calls of ``m`` for task
``i`` that reached ``attempt`` (so an outage or a 429 does not shift later draws).
"""

from __future__ import annotations

import math
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import special

from router.task import TASK_TYPES
from sim.errors import ScenarioError

if TYPE_CHECKING:
    from sim.world.distributions import _Dist
    from sim.world.scenario import DifficultySpec, ModelSpec, OutageSpec, Scenario

__all__ = [
    "BLOCK_SIZE",
    "AttemptKind",
    "OutageMode",
    "OutageTimeline",
    "World",
    "stable_key",
]

#: Task indices per precomputed block (a power of two: index arithmetic by shifts).
BLOCK_BITS = 12
BLOCK_SIZE = 1 << BLOCK_BITS
_BLOCK_MASK = BLOCK_SIZE - 1
# Renewal cycles drawn per refill of a timeline. Fixed, so the stream layout (and so
# every timeline) does not depend on the horizon.
_OUTAGE_CHUNK = 64

# First words of every seed sequence: streams for different purposes never coincide.
_TAG_ATTEMPTS = 1
_TAG_OUTAGE_CYCLES = 2
_TAG_OUTAGE_START = 3
_TAG_BETA = 4
_TAG_DIFFICULTY = 5
_TAG_UNSOLVABLE = 6
_TAG_PERSISTENT = 7
_TAG_TOKEN_TIMES = 8

#: What an attempt that reached the model answers (see :meth:`World.attempt`).
AttemptKind = Literal["ok", "wrong", "malformed", "server_error", "context_length"]
OutageMode = Literal["fail_fast", "hang"]


def stable_key(name: str) -> int:
    """A process-independent 32-bit key for ``name`` (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(name.encode("utf-8"))


class OutageTimeline:
    """The down periods of one alternating renewal process, as sorted lists.

    ``starts[j] <= t < ends[j]`` means down at ``t``. Exact for every
    ``t < covered_until``; :meth:`state` extends the timeline first when asked beyond.
    Kept as Python lists because ``bisect`` on a list of floats is several times
    faster per scalar lookup than ``np.searchsorted``; :meth:`as_arrays` gives numpy.
    """

    __slots__ = (
        "key",
        "mode",
        "starts",
        "ends",
        "covered_until",
        "_rng",
        "_up",
        "_down",
        "_first_up",
    )

    def __init__(self, key: str, spec: OutageSpec, seed: int, horizon_s: float) -> None:
        assert spec.time_between is not None and spec.duration is not None
        self.key: str = key
        self.mode: OutageMode = spec.mode
        self._up: _Dist = spec.time_between
        self._down: _Dist = spec.duration
        self.starts: list[float] = []
        self.ends: list[float] = []
        h = stable_key(key)
        start_rng = np.random.default_rng([seed, _TAG_OUTAGE_START, h])
        self._rng: np.random.Generator = np.random.default_rng([seed, _TAG_OUTAGE_CYCLES, h])
        mean_up, mean_down = self._up.mean(), self._down.mean()
        self._first_up: float | None = None
        #: the timeline is exact for every t < covered_until
        self.covered_until: float
        if start_rng.random() < mean_down / (mean_up + mean_down):
            # Opens inside an outage: its remaining length is the duration's residual.
            rest = float(self._down.sample_residual(start_rng, 1)[0])
            self.starts.append(0.0)
            self.ends.append(rest)
            self.covered_until = rest
        else:
            # Opens up: the first up-time is the residual of the up-time law.
            self._first_up = float(self._up.sample_residual(start_rng, 1)[0])
            self.covered_until = 0.0
        self.extend_to(horizon_s)

    def extend_to(self, t: float) -> None:
        """Draw further cycles until the timeline is exact beyond ``t``."""
        while self.covered_until <= t:
            u = self._rng.random((_OUTAGE_CHUNK, 2))
            periods = np.empty(2 * _OUTAGE_CHUNK)
            periods[0::2] = self._up.ppf(u[:, 0])
            periods[1::2] = self._down.ppf(u[:, 1])
            if self._first_up is not None:
                periods[0] = self._first_up
                self._first_up = None
            # Sequential sums from the current end: period boundaries up, down, up, ...
            edges = np.cumsum(np.concatenate(([self.covered_until], periods)))[1:]
            self.starts.extend(edges[0::2].tolist())
            self.ends.extend(edges[1::2].tolist())
            self.covered_until = float(edges[-1])

    def state(self, t: float) -> OutageMode | None:
        """The outage mode at time ``t``, or None when up. O(log n)."""
        if t >= self.covered_until:
            self.extend_to(t)
        i = bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return self.mode
        return None

    def end_of_outage(self, t: float) -> float | None:
        """When the outage covering ``t`` ends, or None when up at ``t``."""
        if t >= self.covered_until:
            self.extend_to(t)
        i = bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return self.ends[i]
        return None

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, ends)`` of every down period drawn so far, as sorted float arrays."""
        return np.asarray(self.starts, dtype=float), np.asarray(self.ends, dtype=float)

    def intervals(self, until: float) -> list[tuple[float, float]]:
        """The down periods ``(start, end)`` that begin before ``until`` (ends unclipped)."""
        self.extend_to(until)
        n = bisect_right(self.starts, until)
        if n and self.starts[n - 1] == until:
            n -= 1
        return list(zip(self.starts[:n], self.ends[:n], strict=True))


class _Latent:
    """The latent-difficulty constants of one (model, task type), for the hot path.

    ``ability`` a with P(ok | d, eta) = Phi((a - sigma z - sqrt(rho) eta) / sqrt(1 - rho)).
    """

    __slots__ = ("ability", "sigma", "unsolvable", "sqrt_rho", "inv_sqrt_1m_rho", "mal_share")

    def __init__(self, p: float, malformed: float, levels: tuple[float, float, float]) -> None:
        sigma, u, rho = levels
        # A Beta-drawn p above 1 - u is capped there: no model solves an unsolvable task.
        p = min(p, 1.0 - u)
        # Marginal completion stays p: sqrt(rho) eta + sqrt(1 - rho) eps - ... is N(0, 1)
        # and independent of d ~ N(0, sigma^2), so P(ok) = (1 - u) Phi(a / sqrt(1 + s^2)).
        self.ability = math.sqrt(1.0 + sigma * sigma) * float(special.ndtri(p / (1.0 - u)))
        self.sigma = sigma
        self.unsolvable = u
        self.sqrt_rho = math.sqrt(rho)
        self.inv_sqrt_1m_rho = 1.0 / math.sqrt(1.0 - rho)
        # Among failures (share 1 - p), malformed with m / (1 - p): marginal exactly m.
        # If a Beta draw pushed p above 1 - m, malformed is what gives way (as before).
        self.mal_share = min(1.0, malformed / (1.0 - p)) if p < 1.0 else 0.0


class _ModelRuntime:
    """Per-model constants of one world, flattened for the hot path."""

    __slots__ = (
        "model_id",
        "spec",
        "key",
        "latency",
        "per_prompt",
        "per_completion",
        "per_output_dist",
        "per_input_dist",
        "stride",
        "context_window",
        "server_error_rate",
        "fail_fast",
        "outcomes",
        "default_outcome",
        "probabilities",
        "default_probability",
        "timeline",
    )

    def __init__(
        self, model_id: str, spec: ModelSpec, seed: int, difficulty: DifficultySpec
    ) -> None:
        from sim.world.scenario import TokenLatency

        self.model_id = model_id
        self.spec = spec
        self.key = stable_key(model_id)
        lat = spec.latency
        self.per_output_dist: _Dist | None = None
        self.per_input_dist: _Dist | None = None
        if isinstance(lat, TokenLatency):
            self.latency: _Dist = lat.ttft
            # A constant per-token time is a size term like per_1k_*; a distribution is
            # drawn per attempt, which widens each block to 5 values per task.
            self.per_completion = 0.0
            self.per_prompt = 0.0
            sizes = (("out", lat.per_output_token_s), ("in", lat.per_input_token_s))
            for name, dist in sizes:
                if dist is None:
                    continue
                if dist.dist == "fixed":
                    if name == "out":
                        self.per_completion = float(dist.value_s)
                    else:
                        self.per_prompt = float(dist.value_s)
                elif name == "out":
                    self.per_output_dist = dist
                else:
                    self.per_input_dist = dist
        else:
            self.latency = lat
            self.per_prompt = lat.per_1k_prompt_tokens_s / 1000.0
            self.per_completion = lat.per_1k_completion_tokens_s / 1000.0
        drawn = self.per_output_dist is not None or self.per_input_dist is not None
        # Values per task in an attempt block: u_server, u_outcome, base latency(, s per
        # output token, s per input token).
        self.stride = 5 if drawn else 3
        self.context_window = spec.context_window if spec.context_window else 1 << 62
        self.server_error_rate = spec.server_error_rate
        self.fail_fast = spec.fail_fast_latency_s
        comp = spec.completion
        k = comp.beta_concentration

        def realised(p: float, type_key: str) -> float:
            if k is None or p <= 0.0 or p >= 1.0:
                return p
            rng = np.random.default_rng([seed, _TAG_BETA, self.key, stable_key(type_key)])
            return float(rng.beta(k * p, k * (1.0 - p)))

        # "*" is not a task type, so the default's stream never equals a type's stream.
        self.default_probability = realised(comp.default, "*")
        self.probabilities = {
            t: realised(comp.per_type[t], t) if t in comp.per_type else self.default_probability
            for t in TASK_TYPES
        }
        mal = spec.malformed_rate

        # Independent types (sigma = u = rho = 0): one uniform splits an answer: [0, p) ok,
        # [p, p + m) malformed, rest wrong. If a Beta draw pushes p above 1 - m, malformed
        # is what gives way. Latent types carry their constants instead.
        def outcome(p: float, levels: tuple[float, float, float]) -> tuple:
            if levels == (0.0, 0.0, 0.0):
                return (p, min(1.0, p + mal), None)
            return (p, min(1.0, p + mal), _Latent(p, mal, levels))

        # "" is no task type: unknown types get the top-level difficulty.
        self.default_outcome = outcome(self.default_probability, difficulty.levels(""))
        self.outcomes = {t: outcome(p, difficulty.levels(t)) for t, p in self.probabilities.items()}
        self.timeline: OutageTimeline | None = None


class World:
    """The randomness of one replication (see the module docstring for the contract).

    Build it with :meth:`sim.world.scenario.Scenario.realize`. ``model_index`` arguments are
    positions in :attr:`model_ids`. Cheap to construct (outage timelines only); the
    attempt draws are generated lazily per block and cached, at most
    ``max_cached_blocks`` blocks per kind at a time (attempt blocks: 96 KiB each,
    4,096 tasks x 3 doubles, 160 KiB for a token-form latency with drawn per-token
    times; task-difficulty blocks 64 KiB; persistent-noise blocks 32 KiB), oldest
    evicted first; the default 512 bounds the attempt cache at 48 MiB however long the
    replay. ``trace_key`` (a non-negative integer, or None) keys every per-task draw
    to the traffic (see the module docstring).
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        horizon_s: float,
        model_ids: Sequence[str],
        *,
        trace_key: int | None = None,
        max_cached_blocks: int = 512,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ScenarioError(f"seed: expected an integer >= 0, got {seed!r}")
        if not (isinstance(horizon_s, int | float) and math.isfinite(horizon_s) and horizon_s > 0):
            raise ScenarioError(f"horizon_s: expected a positive number, got {horizon_s!r}")
        if trace_key is not None and (
            isinstance(trace_key, bool)
            or not isinstance(trace_key, int | np.integer)
            or trace_key < 0
        ):
            raise ScenarioError(f"trace_key: expected an integer >= 0 or None, got {trace_key!r}")
        ids = list(model_ids)
        if not ids:
            raise ScenarioError("model_ids: expected at least one model id")
        dup = sorted({m for m in ids if ids.count(m) > 1})
        if dup:
            raise ScenarioError(f"model_ids: duplicate model id {dup[0]!r}")
        if len(ids) >= 4096:
            raise ScenarioError(f"model_ids: at most 4095 models, got {len(ids)}")
        if max_cached_blocks < 1:
            raise ValueError(f"max_cached_blocks must be >= 1, got {max_cached_blocks}")
        self.scenario = scenario
        self.seed = int(seed)
        self.horizon_s = float(horizon_s)
        self.trace_key: int | None = None if trace_key is None else int(trace_key)
        # The last words of every per-task seed sequence: none for an unkeyed world, so
        # its streams are exactly those of a world keyed by the seed alone.
        self._tail: tuple[int, ...] = () if trace_key is None else (int(trace_key),)
        self.model_ids: tuple[str, ...] = tuple(ids)
        self._index = {m: i for i, m in enumerate(ids)}
        self._rt: list[_ModelRuntime] = [
            _ModelRuntime(m, scenario.model(m), self.seed, scenario.difficulty) for m in ids
        ]
        # One timeline object per process: models sharing a provider share the object.
        # Keyed by the seed only (not the trace): see the module docstring.
        self._timelines: dict[str, OutageTimeline] = {}
        for rt in self._rt:
            key, spec = scenario.outage_of(rt.model_id)
            if key is None or spec is None:
                continue
            if key not in self._timelines:
                self._timelines[key] = OutageTimeline(key, spec, self.seed, self.horizon_s)
            rt.timeline = self._timelines[key]
        self._max_blocks = int(max_cached_blocks)
        # (block << 20 | model_index << 8 | attempt) -> draws; see attempt().
        self._cache: dict[int, array] = {}
        # block -> [z, v] per task (difficulty, unsolvable uniform); see _task_block().
        self._tasks: dict[int, array] = {}
        # (block << 12 | model_index) -> eta per task; see _eta_block().
        self._eta: dict[int, array] = {}

    # ---------------------------------------------------------------- lookups
    def index(self, model_id: str) -> int:
        """The index of ``model_id`` in :attr:`model_ids`."""
        try:
            return self._index[model_id]
        except KeyError:
            raise ScenarioError(f"model {model_id!r} is not in this world") from None

    def provider(self, model_index: int) -> str:
        return self._rt[model_index].spec.provider

    def spec(self, model_index: int) -> ModelSpec:
        """The scenario's spec of the model (nominal values, before any Beta draw)."""
        return self._rt[model_index].spec

    def capacity(self, model_index: int) -> int | None:
        """Max concurrent calls (None: unlimited); beyond it the driver queues."""
        return self._rt[model_index].spec.capacity

    def rate_limit_rpm(self, model_index: int) -> float | None:
        """Calls per minute before 429s (None: unlimited); the driver keeps the window."""
        return self._rt[model_index].spec.rate_limit_rpm

    def retry_after_s(self, model_index: int) -> float:
        """The Retry-After a 429 of this model carries."""
        return self._rt[model_index].spec.retry_after_s

    def fail_fast_latency_s(self, model_index: int) -> float:
        """Seconds until a fast 5xx (fail-fast outage or a plain server error) arrives,
        and until a ``context_length`` refusal does."""
        return self._rt[model_index].fail_fast

    def context_window(self, model_index: int) -> int | None:
        """Most prompt tokens the model accepts (None: no limit)."""
        return self._rt[model_index].spec.context_window

    def cost(self, model_index: int, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of one answered call of this size (:meth:`sim.world.scenario.ModelSpec.cost`)."""
        return self._rt[model_index].spec.cost(prompt_tokens, completion_tokens)

    def prices(self, model_index: int) -> tuple[float | None, float | None, float]:
        """``(input_per_mtok, output_per_mtok, per_task)`` of one model: what :meth:`cost`
        computes from (per-token prices when both are set, else the per-task price, 0
        when there is none)."""
        spec = self._rt[model_index].spec
        return spec.input_per_mtok, spec.output_per_mtok, spec.cost_per_task or 0.0

    def completion_probability(self, model_index: int, task_type: str) -> float:
        """This seed's marginal completion probability for ``task_type``: the scenario's
        figure, Beta-drawn when the scenario says so, and capped at 1 - unsolvable."""
        rt = self._rt[model_index]
        p, _, latent = rt.outcomes.get(task_type, rt.default_outcome)
        return p if latent is None else min(p, 1.0 - latent.unsolvable)

    def ability(self, model_index: int, task_type: str) -> float | None:
        """The latent ability ``a`` of the model for ``task_type`` (None for a type
        without difficulty: there success is a plain draw with the probability)."""
        rt = self._rt[model_index]
        latent = rt.outcomes.get(task_type, rt.default_outcome)[2]
        return None if latent is None else latent.ability

    def mean_latency_s(self, model_index: int, prompt_tokens: int, completion_tokens: int) -> float:
        """Expected latency of an answer of this size (the distribution mean plus terms)."""
        rt = self._rt[model_index]
        per_out = rt.per_completion
        per_in = rt.per_prompt
        if rt.per_output_dist is not None:
            per_out = rt.per_output_dist.mean()
        if rt.per_input_dist is not None:
            per_in = rt.per_input_dist.mean()
        return rt.latency.mean() + prompt_tokens * per_in + (completion_tokens * per_out)

    # ---------------------------------------------------------------- outages
    def outage(self, model_index: int, t: float) -> OutageMode | None:
        """``"fail_fast"`` / ``"hang"`` if model ``model_index`` is down at ``t``, else None."""
        tl = self._rt[model_index].timeline
        if tl is None:
            return None
        return tl.state(t)

    def outage_end(self, model_index: int, t: float) -> float | None:
        """When the outage covering ``t`` ends (None when up at ``t``)."""
        tl = self._rt[model_index].timeline
        return None if tl is None else tl.end_of_outage(t)

    def outage_mode(self, model_index: int) -> OutageMode | None:
        """The mode of this model's outage process (None: the model never goes down)."""
        tl = self._rt[model_index].timeline
        return None if tl is None else tl.mode

    def outage_timeline(self, model_index: int) -> OutageTimeline | None:
        """The (possibly shared) timeline object of this model, None if it never fails."""
        return self._rt[model_index].timeline

    def outage_intervals(self, model_index: int | None = None) -> list[tuple[str, float, float]]:
        """``(model_id, start_s, end_s)`` of every outage starting in [0, horizon_s].

        For one model, or for all models (in index order) when ``model_index`` is None.
        A shared outage appears once per model of its provider. Ends are not clipped.
        """
        rts = self._rt if model_index is None else [self._rt[model_index]]
        out: list[tuple[str, float, float]] = []
        for rt in rts:
            if rt.timeline is not None:
                out.extend((rt.model_id, s, e) for s, e in rt.timeline.intervals(self.horizon_s))
        return out

    # --------------------------------------------------------------- attempts
    def attempt(
        self,
        model_index: int,
        task_index: int,
        attempt: int,
        task_type: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> tuple[AttemptKind, float]:
        """What the model answers to attempt ``attempt`` (1-based) of task ``task_index``.

        Returns ``(kind, latency_s)``: ``"context_length"`` after
        :meth:`fail_fast_latency_s` when ``prompt_tokens`` exceeds the model's context
        window (decided before anything is drawn: the request itself is refused);
        ``"server_error"`` after :meth:`fail_fast_latency_s`; else an answer after the
        latency draw plus the size terms, which is ``"ok"`` (completed), ``"malformed"``
        (fails validation) or ``"wrong"`` (well-formed, task not done). The draws depend
        only on ``(seed, trace key, model id, task_index, attempt)`` and, for the
        outcome, on the task's difficulty draws ``(seed, trace key, task_index)``;
        ``task_type`` and the sizes only select constants and add latency. Outages are
        *not* applied here (see :meth:`outage`). Unknown task types use the model's
        default probability and the scenario's top-level difficulty.
        """
        rt = self._rt[model_index]
        if prompt_tokens > rt.context_window:
            return "context_length", rt.fail_fast
        block = task_index >> BLOCK_BITS
        r = task_index & _BLOCK_MASK
        if 0 < attempt < 256:
            blk = self._cache.get((block << 20) | (model_index << 8) | attempt)
            if blk is None:
                blk = self._load_block(model_index, task_index, attempt)
        else:
            blk = self._make_block(rt, task_index, attempt)
        stride = rt.stride
        j = stride * r
        if blk[j] < rt.server_error_rate:
            return "server_error", rt.fail_fast
        u_out = blk[j + 1]
        if stride == 3:
            # The same expression, in the same order, as ever: the floats stay identical.
            latency = (
                blk[j + 2] + prompt_tokens * rt.per_prompt + completion_tokens * rt.per_completion
            )
        else:
            latency = blk[j + 2] + prompt_tokens * blk[j + 4] + completion_tokens * blk[j + 3]
        ok, mal, latent = rt.outcomes.get(task_type, rt.default_outcome)
        if latent is None:
            if u_out < ok:
                return "ok", latency
            if u_out < mal:
                return "malformed", latency
            return "wrong", latency
        # q = P(ok | this task's d, its unsolvable flag and the model's eta), inlined:
        # this runs once per answered attempt.
        tb = self._tasks.get(block)
        if tb is None:
            tb = self._task_block(block)
        if tb[2 * r + 1] < latent.unsolvable:
            q = 0.0
        else:
            x = latent.ability - latent.sigma * tb[2 * r]
            if latent.sqrt_rho:
                eta = self._eta.get((block << 12) | model_index)
                if eta is None:
                    eta = self._eta_block(model_index, block)
                x -= latent.sqrt_rho * eta[r]
            # Phi(x / sqrt(1 - rho)) by erfc: exact in both tails, infinite x included.
            q = 0.5 * math.erfc(-x * latent.inv_sqrt_1m_rho * _SQRT_HALF)
        if u_out < q:
            return "ok", latency
        # Among failures, (u_out - q) / (1 - q) is uniform: malformed below the share.
        if u_out < q + (1.0 - q) * latent.mal_share:
            return "malformed", latency
        return "wrong", latency

    def task_draws(self, task_index: int) -> tuple[float, float]:
        """``(z, v)`` of task ``task_index``: its standard-normal difficulty (``d = sigma
        z``) and its unsolvable uniform (unsolvable iff ``v < unsolvable``)."""
        if task_index < 0:
            raise ValueError(f"task_index must be >= 0, got {task_index}")
        block = task_index >> BLOCK_BITS
        tb = self._tasks.get(block)
        if tb is None:
            tb = self._task_block(block)
        r = task_index & _BLOCK_MASK
        return tb[2 * r], tb[2 * r + 1]

    def _task_block(self, block: int) -> array:
        # One stream per draw (a tag each), so adding the unsolvable share or changing
        # sigma never moves the other draw.
        tail = self._tail
        z = np.random.default_rng([self.seed, _TAG_DIFFICULTY, block, *tail]).standard_normal(
            BLOCK_SIZE
        )
        v = np.random.default_rng([self.seed, _TAG_UNSOLVABLE, block, *tail]).random(BLOCK_SIZE)
        out = np.empty(2 * BLOCK_SIZE)
        out[0::2] = z
        out[1::2] = v
        blk = array("d", out.tobytes())
        _put(self._tasks, block, blk, self._max_blocks)
        return blk

    def _eta_block(self, model_index: int, block: int) -> array:
        rt = self._rt[model_index]
        rng = np.random.default_rng([self.seed, _TAG_PERSISTENT, rt.key, block, *self._tail])
        blk = array("d", rng.standard_normal(BLOCK_SIZE).tobytes())
        _put(self._eta, (block << 12) | model_index, blk, self._max_blocks)
        return blk

    def _make_block(self, rt: _ModelRuntime, task_index: int, attempt: int) -> array:
        """The draws of attempt ``attempt`` for the block of tasks holding ``task_index``:
        per task ``[u_server, u_outcome, base latency]`` (plus the seconds per output
        and per input token when the latency draws them), flattened."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        if task_index < 0:
            raise ValueError(f"task_index must be >= 0, got {task_index}")
        block = task_index >> BLOCK_BITS
        tail = self._tail
        rng = np.random.default_rng([self.seed, _TAG_ATTEMPTS, rt.key, block, attempt, *tail])
        # Always the whole block from its own keyed stream, so a draw never depends on
        # which task of the block (or which other attempt) caused the generation.
        out = rng.random((BLOCK_SIZE, 3))  # columns: u_server, u_outcome, u_latency
        out[:, 2] = rt.latency.ppf(out[:, 2])
        if rt.stride == 5:
            # Per-token times from their own stream: the three columns above stay the
            # uniforms a flat latency would use.
            tok = np.random.default_rng(
                [self.seed, _TAG_TOKEN_TIMES, rt.key, block, attempt, *tail]
            ).random((BLOCK_SIZE, 2))
            wide = np.empty((BLOCK_SIZE, 5))
            wide[:, :3] = out
            po, pi = rt.per_output_dist, rt.per_input_dist
            wide[:, 3] = po.ppf(tok[:, 0]) if po is not None else rt.per_completion
            wide[:, 4] = pi.ppf(tok[:, 1]) if pi is not None else rt.per_prompt
            out = wide
        # array('d') indexes to Python floats at list speed, at 8 bytes per value.
        return array("d", out.tobytes())

    def _load_block(self, model_index: int, task_index: int, attempt: int) -> array:
        blk = self._make_block(self._rt[model_index], task_index, attempt)
        key = ((task_index >> BLOCK_BITS) << 20) | (model_index << 8) | attempt
        _put(self._cache, key, blk, self._max_blocks)
        return blk

    def cached_blocks(self) -> int:
        """How many attempt blocks are cached now (bounded by ``max_cached_blocks``)."""
        return len(self._cache)

    def __repr__(self) -> str:
        key = "" if self.trace_key is None else f", trace_key={self.trace_key}"
        return (
            f"World(scenario={self.scenario.name!r}, seed={self.seed}, "
            f"horizon_s={self.horizon_s}, models={len(self.model_ids)}{key})"
        )


_SQRT_HALF = math.sqrt(0.5)


def _put(cache: dict[int, array], key: int, blk: array, limit: int) -> None:
    """Insert into a bounded cache, evicting the oldest entry first (replays move
    forward in task order, so the oldest block is the one least likely needed again)."""
    if len(cache) >= limit:
        del cache[next(iter(cache))]
    cache[key] = blk
