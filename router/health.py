"""Per-model health statistics: latency EWMA and rolling error rate."""

from __future__ import annotations


class ModelHealth:
    """Health of one model as the policy observed it.

    ``latency_ewma_s`` is ``None`` until the first observation. Latencies of
    fast failures (a 429, a refused connection, an instant 5xx) say nothing about
    how long an answer takes, so the driver-facing policy feeds only answered
    attempts and timeouts into the EWMA; every outcome feeds the error rate.
    """

    __slots__ = ("alpha", "latency_ewma_s", "observations", "_ring", "_pos", "_count", "_fails")

    def __init__(self, alpha: float, window: int) -> None:
        self.alpha = alpha
        self.latency_ewma_s: float | None = None
        self.observations = 0
        self._ring = bytearray(window)
        self._pos = 0
        self._count = 0
        self._fails = 0

    def observe_latency(self, latency_s: float) -> None:
        ewma = self.latency_ewma_s
        self.latency_ewma_s = latency_s if ewma is None else ewma + self.alpha * (latency_s - ewma)
        self.observations += 1

    def observe_answer(self, latency_s: float) -> None:
        """:meth:`observe_latency` then ``observe_outcome(False)`` (a success), in one
        call: the path of every successful attempt."""
        self.observe(latency_s, False)

    def observe_outcome(self, failed: bool) -> None:
        self.observe(None, failed)

    def observe(self, latency_s: float | None, failed: bool) -> None:
        """One attempt's end: :meth:`observe_latency` when ``latency_s`` is given (not
        ``None``), then the outcome (``failed`` or not) joins the error window. The
        state is exactly what the two separate updates leave; one call per attempt."""
        if latency_s is not None:
            ewma = self.latency_ewma_s
            self.latency_ewma_s = (
                latency_s if ewma is None else ewma + self.alpha * (latency_s - ewma)
            )
            self.observations += 1
        ring = self._ring
        pos = self._pos
        f = 1 if failed else 0
        self._fails += f - ring[pos]
        ring[pos] = f
        n = len(ring)
        self._pos = pos + 1 if pos + 1 < n else 0
        if self._count < n:
            self._count += 1

    @property
    def error_rate(self) -> float:
        """Failure share over the last ``window`` outcomes (0.0 before any)."""
        return self._fails / self._count if self._count else 0.0

    @property
    def samples(self) -> int:
        return self._count


class RouteStats:
    """What the policy has observed of one model on one route.

    *Latency*: an EWMA of answered attempts (and timeouts), ``None`` until the first
    sample. ``latency_hold_until`` is when a model skipped because this EWMA exceeds
    the route's limit gets another chance: then the EWMA is forgotten and the
    profile's figure applies again, so one slow sample never excludes a model for
    good and limits of other routes are not affected.

    *Quality*: a Beta posterior of completion over the answers this model gave on
    this route (``ok`` a success, ``validation`` a failure), with exponential
    forgetting (``decay`` per observation) and a prior worth ``prior_weight``
    observations at ``prior``. ``quality_hold_until`` plays the same role as the
    latency one for a route's ``min_observed_completion``.
    """

    __slots__ = (
        "latency_ewma_s",
        "latency_hold_until",
        "q_ok",
        "q_n",
        "q_count",
        "prior",
        "prior_weight",
        "decay",
        "quality_hold_until",
    )

    def __init__(self, prior: float, prior_weight: float, window: int) -> None:
        self.latency_ewma_s: float | None = None
        self.latency_hold_until = 0.0
        self.q_ok = 0.0
        self.q_n = 0.0
        self.q_count = 0  # answers seen since the last forget (undecayed)
        self.prior = prior
        self.prior_weight = prior_weight
        self.decay = 1.0 - 1.0 / window
        self.quality_hold_until = 0.0

    def observe_latency(self, latency_s: float, alpha: float) -> None:
        ewma = self.latency_ewma_s
        self.latency_ewma_s = latency_s if ewma is None else ewma + alpha * (latency_s - ewma)

    def observe_quality(self, ok: bool) -> None:
        d = self.decay
        self.q_ok = self.q_ok * d + (1.0 if ok else 0.0)
        self.q_n = self.q_n * d + 1.0
        self.q_count += 1

    def observe_success(self, latency_s: float, alpha: float) -> None:
        """:meth:`observe_latency` then ``observe_quality(True)``, in one call."""
        self.observe_answer(latency_s, True, alpha)

    def observe_answer(self, latency_s: float, ok: bool, alpha: float) -> None:
        """:meth:`observe_latency` then ``observe_quality(ok)``, in one call: the path of
        every answered attempt the quality statistic counts (ok, or failed validation);
        the state is exactly what the two separate updates leave."""
        ewma = self.latency_ewma_s
        self.latency_ewma_s = latency_s if ewma is None else ewma + alpha * (latency_s - ewma)
        d = self.decay
        self.q_ok = self.q_ok * d + (1.0 if ok else 0.0)
        self.q_n = self.q_n * d + 1.0
        self.q_count += 1

    @property
    def observed_completion(self) -> float:
        """The posterior mean of completion (the prior alone before any answer)."""
        w = self.prior_weight
        return (self.q_ok + w * self.prior) / (self.q_n + w)

    def forget_quality(self) -> None:
        self.q_ok = 0.0
        self.q_n = 0.0
        self.q_count = 0
