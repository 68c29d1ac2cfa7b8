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

    def observe_outcome(self, failed: bool) -> None:
        ring = self._ring
        pos = self._pos
        f = 1 if failed else 0
        self._fails += f - ring[pos]
        ring[pos] = f
        self._pos = pos + 1 if pos + 1 < len(ring) else 0
        if self._count < len(ring):
            self._count += 1

    @property
    def error_rate(self) -> float:
        """Failure share over the last ``window`` outcomes (0.0 before any)."""
        return self._fails / self._count if self._count else 0.0

    @property
    def samples(self) -> int:
        return self._count
