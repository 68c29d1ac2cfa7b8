"""World: common random numbers, outage timelines, Beta uncertainty, attempt draws."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sim.scenario import Scenario, load_seed_scenario, parse_scenario
from sim.world import BLOCK_SIZE, World

TYPES = ("regex", "sql", "json", "bug_patch", "error_handling")

# Up ~ Exp(mean 1000 s); down ~ lognormal(median 100 s, p90 400 s): many cycles quickly.
FAST_OUTAGE = {
    "time_between": {"dist": "exponential", "mean_s": 1000.0},
    "duration": {"dist": "lognormal", "median_s": 100.0, "p90_s": 400.0},
}


def scenario(**model_overrides: Any) -> Scenario:
    base = {
        "provider": "p",
        "completion": {"default": 0.6, "per_type": {"sql": 0.3}},
        "latency": {
            "median_s": 1.0,
            "p95_s": 3.0,
            "per_1k_prompt_tokens_s": 0.5,
            "per_1k_completion_tokens_s": 20.0,
        },
        "malformed_rate": 0.1,
        "server_error_rate": 0.05,
        "fail_fast_latency_s": 0.3,
        "cost_per_task": 0.0,
    }
    return parse_scenario(
        {
            "name": "t",
            "providers": {"p": {"outage": FAST_OUTAGE}, "q": {"outage": FAST_OUTAGE}},
            "models": {
                "a": {**base, "outage": {"shared": True}, **model_overrides},
                "b": {**base, "outage": {"shared": True}},
                "c": {**base, "provider": "q", "outage": {"shared": True}},
                "d": {**base, "outage": {**FAST_OUTAGE, "mode": "hang"}},
                "e": {**base, "input_per_mtok": 2.0, "output_per_mtok": 8.0},
            },
        }
    )


def calls(world: World, model_id: str, keys: list[tuple[int, int]]) -> list[tuple[str, float]]:
    m = world.index(model_id)
    return [world.attempt(m, i, k, TYPES[i % 5], 100 + i % 7, 50 + i % 11) for i, k in keys]


# ------------------------------------------------------------ common random numbers
def test_draws_do_not_depend_on_what_else_was_asked() -> None:
    s = scenario()
    rng = np.random.default_rng(5)
    keys = [(int(i), int(k)) for i, k in zip(rng.integers(0, 50_000, 150), rng.integers(1, 9, 150),
                                             strict=True)]  # fmt: skip
    fresh = calls(s.realize(42, 100.0, ["a"]), "a", keys)
    # Another world: other models first, in another order, many other tasks, and the
    # same keys asked in reverse order, with a tiny cache that keeps evicting.
    busy = s.realize(42, 100.0, ["e", "c", "a", "b"], max_cached_blocks=2)
    for mid in ("e", "c", "b"):
        calls(busy, mid, [(int(i), 1) for i in rng.integers(0, 200_000, 300)])
    calls(busy, "a", [(int(i), 3) for i in rng.integers(0, 200_000, 200)])
    again = calls(busy, "a", keys[::-1])[::-1]
    assert again == fresh
    assert busy.cached_blocks() <= 2


def test_draws_differ_across_seeds_and_models() -> None:
    s = scenario()
    keys = [(i, 1) for i in range(2000)]
    w1, w2 = s.realize(1, 10.0), s.realize(2, 10.0)
    lat = lambda w, mid: np.array([x[1] for x in calls(w, mid, keys)])  # noqa: E731
    assert not np.allclose(lat(w1, "a"), lat(w2, "a"))
    assert not np.allclose(lat(w1, "a"), lat(w1, "b"))
    # and the attempts of one task differ from each other
    m = w1.index("a")
    answers = [w1.attempt(m, 7, k, "json", 0, 0) for k in range(1, 40)]
    latencies = [lat for kind, lat in answers if kind != "server_error"]
    assert len(set(latencies)) == len(latencies) > 20


def test_same_seed_gives_identical_worlds() -> None:
    s = load_seed_scenario()
    w1 = s.realize(123, 30 * 86400.0)
    w2 = s.realize(123, 30 * 86400.0)
    assert w1.outage_intervals() == w2.outage_intervals()
    assert len(w1.outage_intervals()) > 0
    for m in range(len(w1.model_ids)):
        assert [w1.completion_probability(m, t) for t in TYPES] == [
            w2.completion_probability(m, t) for t in TYPES
        ]
        for i in (0, 1, 4095, 4096, 99_999):
            for k in (1, 2, 300):  # 300: beyond the cache-key range, same draws
                assert w1.attempt(m, i, k, "sql", 1000, 200) == w2.attempt(
                    m, i, k, "sql", 1000, 200
                )
    w3 = s.realize(124, 30 * 86400.0)
    assert w3.outage_intervals() != w1.outage_intervals()


def test_attempt_rejects_bad_indices() -> None:
    w = scenario().realize(0, 10.0)
    with pytest.raises(ValueError, match="1-based"):
        w.attempt(0, 0, 0, "sql", 0, 0)
    with pytest.raises(ValueError, match="task_index"):
        w.attempt(0, -1, 1, "sql", 0, 0)


# ------------------------------------------------------------------ attempt outcomes
def test_outcome_shares_and_latency_match_the_spec() -> None:
    s = scenario()
    w = s.realize(9, 10.0, ["a"])
    n = 60_000
    out = [w.attempt(0, i, 1, "regex", 1000, 100) for i in range(n)]
    kinds = [k for k, _ in out]
    srv, p, mal = 0.05, 0.6, 0.1

    def close(count: int, prob: float) -> None:
        se = math.sqrt(n * prob * (1 - prob))
        assert abs(count - n * prob) < 4.5 * se, (count, n * prob)

    close(kinds.count("server_error"), srv)
    close(kinds.count("ok"), (1 - srv) * p)
    close(kinds.count("malformed"), (1 - srv) * mal)
    close(kinds.count("wrong"), (1 - srv) * (1 - p - mal))
    assert {lat for k, lat in out if k == "server_error"} == {0.3}
    answered = np.array([lat for k, lat in out if k != "server_error"])
    spec = s.models["a"].latency
    expected = spec.mean() + 1000 * 0.5 / 1000 + 100 * 20.0 / 1000
    assert answered.mean() == pytest.approx(expected, abs=4.5 * answered.std() / math.sqrt(n))
    # latency quantiles follow the lognormal (shifted by the size terms)
    shifted = np.sort(answered - 0.5 - 2.0)
    reference = stats.lognorm(s=spec.sigma_, scale=math.exp(spec.mu_))
    assert stats.kstest(shifted, reference.cdf).pvalue > 1e-4
    # per-type probability is used: sql has p = 0.3
    sql = [w.attempt(0, i, 1, "sql", 0, 0)[0] for i in range(n)]
    close(sql.count("ok"), (1 - srv) * 0.3)
    assert w.attempt(0, 1, 1, "unknown", 0, 0)[0] in {"ok", "wrong", "malformed", "server_error"}


def test_lyria_clip_always_answers_502_and_accessors() -> None:
    s = load_seed_scenario()
    w = s.realize(3, 3600.0, ["lyria-3-clip", "gpt-5.4", "ring-2.6"])
    assert {w.attempt(0, i, 1, "json", 10, 10) for i in range(5000)} == {("server_error", 0.517)}
    assert w.cost(1, 1500, 200) == 0.01
    assert (w.capacity(2), w.rate_limit_rpm(2), w.retry_after_s(2)) == (5, 20, 10)
    assert w.fail_fast_latency_s(1) == 0.517
    assert w.provider(1) == "openai" and w.model_ids[1] == "gpt-5.4"
    assert w.outage_mode(1) == "fail_fast"
    assert w.mean_latency_s(1, 0, 0) == pytest.approx(2.5)
    e = scenario().realize(0, 1.0, ["e"])
    assert e.cost(0, 1_000_000, 500_000) == pytest.approx(2.0 + 4.0)


# ---------------------------------------------------------------- Beta uncertainty
def test_beta_uncertainty_has_the_right_mean_and_spread() -> None:
    k = 60.0
    s = scenario(completion={"default": 0.75, "per_type": {"sql": 0.3}, "beta_concentration": k})
    n = 1500
    draws = np.array(
        [[s.realize(seed, 1.0, ["a"]).completion_probability(0, t) for t in ("json", "sql")]
         for seed in range(n)]
    )  # fmt: skip
    for col, p in ((0, 0.75), (1, 0.3)):
        var = p * (1 - p) / (k + 1)
        assert abs(draws[:, col].mean() - p) < 4.5 * math.sqrt(var / n)
        assert draws[:, col].var() == pytest.approx(var, rel=0.2)
    # per-type and default draws are independent streams
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.12
    # types without a per_type entry share the default's single draw
    w = s.realize(7, 1.0, ["a"])
    assert len({w.completion_probability(0, t) for t in ("regex", "json", "bug_patch")}) == 1
    # the draw is used by attempt(): the ok share follows this seed's probability
    p_seed = w.completion_probability(0, "json")
    oks = sum(w.attempt(0, i, 1, "json", 0, 0)[0] == "ok" for i in range(40_000))
    assert abs(oks - 40_000 * 0.95 * p_seed) < 4.5 * math.sqrt(40_000 * 0.95 * p_seed)
    # no concentration: the nominal value exactly; 0 stays 0 even with one
    assert scenario().realize(5, 1.0).completion_probability(0, "json") == 0.6
    z = scenario(completion={"default": 0.0, "beta_concentration": 60})
    assert z.realize(5, 1.0).completion_probability(0, "json") == 0.0


# -------------------------------------------------------------------------- outages
def _down_fraction(intervals: list[tuple[str, float, float]], horizon: float) -> float:
    return sum(min(e, horizon) - s for _, s, e in intervals) / horizon


def test_long_run_availability_matches_mtbf_over_mtbf_plus_mttr() -> None:
    s = scenario()
    spec = s.providers["p"].outage
    up, down = spec.time_between, spec.duration
    mu_u, mu_d = up.mean(), down.mean()
    a = mu_d / (mu_u + mu_d)  # long-run unavailability = MTTR / (MTBF + MTTR)
    # Ratio estimator over n cycles: sd of D - a (U + D) / (E[C] sqrt(n)).
    var_u = mu_u**2
    var_d = (math.exp(down.sigma_**2) - 1) * math.exp(2 * down.mu_ + down.sigma_**2)
    horizon = 2.0e7
    n_cycles = horizon / (mu_u + mu_d)
    se = math.sqrt(((1 - a) ** 2 * var_d + a**2 * var_u) / n_cycles) / (mu_u + mu_d)
    w = s.realize(2024, horizon, ["a"])
    intervals = w.outage_intervals(0)
    assert abs(len(intervals) - n_cycles) < 5 * math.sqrt(n_cycles)
    assert abs(_down_fraction(intervals, horizon) - a) < 4.5 * se, (a, se)


def test_timelines_start_in_equilibrium() -> None:
    s = scenario()
    spec = s.providers["p"].outage
    a = spec.duration.mean() / (spec.time_between.mean() + spec.duration.mean())
    n = 3000
    down = [s.realize(seed, 1.0, ["a"]).outage(0, 0.0) is not None for seed in range(n)]
    assert abs(sum(down) - n * a) < 4.5 * math.sqrt(n * a * (1 - a))


def test_shared_outages_and_lookup() -> None:
    s = scenario()
    w = s.realize(77, 200_000.0)
    ia, ib, ic, idd, ie = (w.index(m) for m in "abcde")
    same = [(st, en) for _, st, en in w.outage_intervals(ia)]
    assert same == [(st, en) for _, st, en in w.outage_intervals(ib)]  # one provider
    assert same != [(st, en) for _, st, en in w.outage_intervals(ic)]  # another provider
    assert w.outage_intervals(ie) == [] and w.outage(ie, 5.0) is None and w.outage_mode(ie) is None
    assert w.outage_mode(idd) == "hang"
    # outage(t) agrees with a linear scan of the intervals, at random instants
    ts = np.random.default_rng(1).uniform(0, 200_000.0, 4000)
    for m in (ia, idd):
        iv = w.outage_intervals(m)
        mode = w.outage_mode(m)
        for t in ts:
            inside = any(st <= t < en for _, st, en in iv)
            assert w.outage(m, t) == (mode if inside else None)
            end = w.outage_end(m, t)
            assert (end is not None) == inside
    starts, ends = w.outage_timeline(ia).as_arrays()
    assert (
        (np.diff(starts) > 0).all() and (ends >= starts).all() and (starts[1:] >= ends[:-1]).all()
    )
    assert w.outage_timeline(ia) is w.outage_timeline(ib)
    for st, en in same[:20]:
        assert w.outage(ia, st) == "fail_fast" and w.outage(ia, en) is None
        assert w.outage(ia, math.nextafter(en, 0)) == "fail_fast"


def test_timelines_do_not_depend_on_the_horizon() -> None:
    s = scenario()
    short = s.realize(5, 1_000.0, ["a", "d"])
    long = s.realize(5, 1_000_000.0, ["a", "d"])
    # Lazy extension past the short horizon gives exactly the long world's answers.
    ts = np.sort(np.random.default_rng(2).uniform(0, 1_000_000.0, 3000))
    for m in (0, 1):
        assert [short.outage(m, t) for t in ts] == [long.outage(m, t) for t in ts]
    assert short.outage_intervals(0) == [x for x in long.outage_intervals(0) if x[1] < 1_000.0]
    assert len(long.outage_intervals(0)) > 500


def test_seed_scenario_outages_over_a_year_are_plausible() -> None:
    s = load_seed_scenario()
    horizon = 365 * 86400.0
    fractions = []
    for seed in range(20):
        w = s.realize(seed, horizon, ["gpt-5.4", "gpt-5.4-pro", "claude-sonnet-4"])
        assert w.outage_intervals(0) and [x[1:] for x in w.outage_intervals(0)] == [
            x[1:] for x in w.outage_intervals(1)
        ]
        fractions.append(_down_fraction(w.outage_intervals(0), horizon))
    # OpenAI: mean outage 8,031 s per 476,220 s cycle -> 1.69 % down on average
    assert np.mean(fractions) == pytest.approx(8030.85 / 476220.47, rel=0.35)


# ----------------------------------------------------------------------- speed/size
def test_attempt_is_fast_and_the_cache_is_bounded() -> None:
    s = load_seed_scenario()
    w = s.realize(1, 3600.0, max_cached_blocks=8)
    att = w.attempt
    n = 3 * BLOCK_SIZE
    for i in range(n):  # warm up: generate the blocks
        att(i % 4, i % BLOCK_SIZE, 1, "sql", 1500, 200)
    t0 = time.perf_counter()
    for i in range(n):
        att(i % 4, i % BLOCK_SIZE, 1, "sql", 1500, 200)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 20e-6  # measured ~0.6 us; a loose bound that survives busy CI
    for i in range(0, 200_000, 997):
        att(i % 13, i, 1 + i % 3, "json", 1, 1)
    assert w.cached_blocks() <= 8
