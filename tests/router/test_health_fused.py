"""The fused success updates of the health statistics equal the separate ones.

The policy calls ``ModelHealth.observe_answer`` and ``RouteStats.observe_success`` on
every successful attempt instead of two calls each; the state after any sequence must
be exactly (bit for bit) what the separate calls leave.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.health import ModelHealth, RouteStats

# (latency, success) per attempt; a failure is the separate path in both.
_SEQ = st.lists(st.tuples(st.floats(0.001, 60.0), st.booleans()), max_size=40)


@settings(max_examples=200, deadline=None)
@given(seq=_SEQ, window=st.integers(1, 8), alpha=st.sampled_from([0.1, 0.3, 0.9]))
def test_fused_updates_leave_the_separate_updates_state(
    seq: list[tuple[float, bool]], window: int, alpha: float
) -> None:
    fused_h, plain_h = ModelHealth(alpha, window), ModelHealth(alpha, window)
    fused_r, plain_r = RouteStats(0.7, 4.0, window), RouteStats(0.7, 4.0, window)
    for latency, ok in seq:
        if ok:
            fused_h.observe_answer(latency)
            fused_r.observe_success(latency, alpha)
            plain_h.observe_latency(latency)
            plain_h.observe_outcome(False)
            plain_r.observe_latency(latency, alpha)
            plain_r.observe_quality(True)
        else:
            for h, r in ((fused_h, fused_r), (plain_h, plain_r)):
                h.observe_outcome(True)
                r.observe_quality(False)
        for attr in ("latency_ewma_s", "observations", "_ring", "_pos", "_count", "_fails"):
            assert getattr(fused_h, attr) == getattr(plain_h, attr), attr
        for attr in ("latency_ewma_s", "q_ok", "q_n", "q_count"):
            assert getattr(fused_r, attr) == getattr(plain_r, attr), attr
