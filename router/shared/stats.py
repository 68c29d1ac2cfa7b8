"""Merging quality and latency statistics across replicas.

Each replica's :class:`~router.health.RouteStats` per (route, model) holds a Beta
posterior of completion as decayed counts (``q_ok`` of ``q_n``, ``q_count`` answers)
and a latency EWMA. Replicas share them periodically:

* *quality* is evidence, so it is **summed**: a replica pushes only its *own* evidence
  and sets its statistic to own + the sum of the others' latest pushes. What came
  from others at the last merge is remembered (and decayed as the statistic decays),
  so own evidence can be told apart and nothing is counted twice. A statistic the
  policy forgot meanwhile (a quality cool-down) is recognised because ``q_n`` is a
  deterministic function of the number of answers seen, and starts over;
* *latency* EWMAs are **averaged** (own with the others'), only while this replica
  has an estimate of its own (a latency cool-down that forgot it is not undone).

Staleness is bounded by the merge interval plus one store round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router.policy import RoutingPolicy

__all__ = ["Evidence", "StatsMerger", "decode", "encode"]

_SEP = "\x1f"

#: (q_ok, q_n, q_count, latency EWMA or None) of one (route, model).
Evidence = tuple[float, float, float, float | None]


def encode(evidence: Evidence) -> str:
    ok, n, count, ewma = evidence
    return f"{ok!r} {n!r} {count!r} {'-' if ewma is None else repr(ewma)}"


def decode(text: str | bytes) -> Evidence:
    if isinstance(text, bytes):
        text = text.decode()
    ok, n, count, ewma = text.split(" ")
    return float(ok), float(n), float(count), None if ewma == "-" else float(ewma)


def key_of(route: str, model: str) -> str:
    return f"{route}{_SEP}{model}"


@dataclass(slots=True)
class _Mark:
    count: float
    n: float
    decay: float
    r_ok: float
    r_n: float
    r_count: float


class StatsMerger:
    """Own-evidence bookkeeping for one replica's policy (see the module docstring)."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], _Mark] = {}

    def own(self, policy: RoutingPolicy) -> dict[str, Evidence]:
        """This replica's own evidence per ``route<US>model`` key, to push."""
        out: dict[str, Evidence] = {}
        for (route, model), st in policy.route_stats.items():
            ok, n, count = st.q_ok, st.q_n, float(st.q_count)
            mark = self._marks.get((route, model))
            if mark is not None and mark.decay == st.decay:
                k = count - mark.count
                d = st.decay
                if k >= 0:
                    f = d ** int(k)
                    expected = mark.n * f + (1.0 - f) / (1.0 - d)
                    if abs(n - expected) <= 1e-6 * max(1.0, n):
                        ok = max(0.0, ok - mark.r_ok * f)
                        n = max(0.0, n - mark.r_n * f)
                        count = max(0.0, count - mark.r_count)
            if n > 0.0 or st.latency_ewma_s is not None:
                out[key_of(route, model)] = (ok, n, count, st.latency_ewma_s)
        return out

    def apply(self, policy: RoutingPolicy, others: Iterable[Mapping[str, Evidence]]) -> None:
        """Set each statistic to own evidence + the others' (latency: the average).

        Own evidence is taken afresh here (answers seen while the others' snapshots
        were being fetched are kept)."""
        own = self.own(policy)
        sums: dict[str, list[float]] = {}
        lats: dict[str, list[float]] = {}
        for snapshot in others:
            for key, (ok, n, count, ewma) in snapshot.items():
                acc = sums.setdefault(key, [0.0, 0.0, 0.0])
                acc[0] += ok
                acc[1] += n
                acc[2] += count
                if ewma is not None:
                    lats.setdefault(key, []).append(ewma)
        for (route, model), st in policy.route_stats.items():
            key = key_of(route, model)
            r_ok, r_n, r_count = sums.get(key, (0.0, 0.0, 0.0))
            o_ok, o_n, o_count, _ = own.get(key, (0.0, 0.0, 0.0, None))
            st.q_ok = o_ok + r_ok
            st.q_n = o_n + r_n
            st.q_count = int(round(o_count + r_count))
            self._marks[(route, model)] = _Mark(
                float(st.q_count), st.q_n, st.decay, r_ok, r_n, float(st.q_count) - o_count
            )
            theirs = lats.get(key)
            if theirs and st.latency_ewma_s is not None:
                st.latency_ewma_s = (st.latency_ewma_s + sum(theirs)) / (1 + len(theirs))
