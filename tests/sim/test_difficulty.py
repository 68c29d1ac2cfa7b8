"""Correlated task difficulty in the world: marginals kept, failures shared, draws keyed.

The model (see :mod:`sim.world.scenario`): task ``i`` has ``d_i = sigma z_i`` and is
unsolvable iff ``v_i < u``; model ``m`` with ability ``a = sqrt(1 + sigma^2)
Phi^-1(p / (1 - u))`` completes attempt ``k`` iff ``sqrt(rho) eta(i, m) + sqrt(1 - rho)
eps(i, m, k) < a - d_i``. Each test checks one consequence against its closed form,
with intervals of 4.5 standard errors (deterministic seeds; a correct world passes for
almost any seed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from sim.world.providers import BLOCK_SIZE, World
from sim.world.scenario import DifficultySpec, Scenario, load_seed_scenario, parse_scenario

N = stats.norm


def _scenario(difficulty: dict[str, Any], probs: dict[str, float], **extra: Any) -> Scenario:
    """Models with fixed 1 s latency, no outage, free; ``extra`` applies to every model."""
    return parse_scenario(
        {
            "difficulty": difficulty,
            "models": {
                m: {
                    "provider": "p",
                    "completion": {"default": p},
                    "latency": {"dist": "fixed", "value_s": 1.0},
                    "cost_per_task": 0.0,
                    **extra,
                }
                for m, p in probs.items()
            },
        }
    )


def _oks(w: World, model: str, n: int, attempt: int = 1, task_type: str = "json") -> np.ndarray:
    m = w.index(model)
    return np.array([w.attempt(m, i, attempt, task_type, 0, 0)[0] == "ok" for i in range(n)])


def _within(count: float, n: int, prob: float) -> None:
    se = math.sqrt(n * prob * (1.0 - prob))
    assert abs(count - n * prob) <= 4.5 * se, (count / n, prob)


def _ability(p: float, sigma: float, u: float) -> float:
    return math.sqrt(1.0 + sigma * sigma) * float(N.ppf(p / (1.0 - u)))


def _both(pa: float, pb: float, sigma: float, u: float, rho_shared: float = 0.0) -> float:
    """P(two attempts both succeed): ``(1 - u) E[Phi(.)Phi(.)]`` over what they share.

    Distinct models share d only (``rho_shared = 0``); two attempts of one model also
    share ``sqrt(rho) eta``, i.e. ``W = d + sqrt(rho) eta ~ N(0, sigma^2 + rho)`` and each
    succeeds with ``Phi((a - W) / sqrt(1 - rho))``.
    """
    a, b = _ability(pa, sigma, u), _ability(pb, sigma, u)
    scale = math.sqrt(sigma * sigma + rho_shared)
    inv = 1.0 / math.sqrt(1.0 - rho_shared)

    def f(w: float) -> float:
        return float(N.pdf(w, scale=scale) * N.cdf((a - w) * inv) * N.cdf((b - w) * inv))

    return (1.0 - u) * integrate.quad(f, -12 * scale, 12 * scale, limit=200)[0]


# ---------------------------------------------------------------------- marginals
@pytest.mark.parametrize(
    "difficulty",
    [
        {"sigma": 1.4, "unsolvable": 0.1, "retry_correlation": 0.5},
        {"sigma": 0.0, "unsolvable": 0.2},
        {"sigma": 2.5, "retry_correlation": 0.9},
    ],
)
def test_each_model_keeps_its_completion_and_malformed_rates(difficulty: dict) -> None:
    """Whatever the difficulty, a model's ok / malformed / 5xx shares are the scenario's
    (p = 0.6, m = 0.05, 5xx 0.02), on first attempts and on retries alike."""
    s = _scenario(difficulty, {"a": 0.6}, malformed_rate=0.05, server_error_rate=0.02)
    w = s.realize(11, 10.0, trace_key=99)
    n = 60_000
    for k in (1, 3):
        kinds = [w.attempt(0, i, k, "regex", 0, 0)[0] for i in range(n)]
        _within(kinds.count("server_error"), n, 0.02)
        _within(kinds.count("ok"), n, 0.98 * 0.6)
        _within(kinds.count("malformed"), n, 0.98 * 0.05)
        _within(kinds.count("wrong"), n, 0.98 * 0.35)


def test_independent_types_use_the_independent_draws_exactly() -> None:
    """A per-type override to sigma = u = rho = 0 makes that type the independent world:
    the very outcomes of a scenario without difficulty, draw for draw."""
    hard = _scenario(
        {"sigma": 1.4, "unsolvable": 0.1, "per_type": {"sql": {"sigma": 0.0, "unsolvable": 0.0}}},
        {"a": 0.6},
        malformed_rate=0.1,
    )
    plain = _scenario({}, {"a": 0.6}, malformed_rate=0.1)
    w1, w0 = hard.realize(2, 10.0), plain.realize(2, 10.0)
    n = 5000
    assert [w1.attempt(0, i, 1, "sql", 0, 0) for i in range(n)] == [
        w0.attempt(0, i, 1, "sql", 0, 0) for i in range(n)
    ]
    assert w1.ability(0, "sql") is None and w1.ability(0, "json") is not None
    assert [w1.attempt(0, i, 1, "json", 0, 0) for i in range(n)] != [
        w0.attempt(0, i, 1, "json", 0, 0) for i in range(n)
    ]


# ------------------------------------------------------------- shared difficulty
def test_failures_of_different_models_are_correlated_as_the_latent_model_says() -> None:
    """P(B ok | A failed) = (p_B - P(both)) / (1 - p_A) with P(both) by integration over
    d; far below p_B (independence would say p_B)."""
    sigma, u = 1.4, 0.1
    s = _scenario({"sigma": sigma, "unsolvable": u}, {"a": 0.6, "b": 0.75})
    w = s.realize(5, 10.0, trace_key=7)
    n = 80_000
    a, b = _oks(w, "a", n), _oks(w, "b", n)
    both = _both(0.6, 0.75, sigma, u)
    _within(int((a & b).sum()), n, both)
    cond = (0.75 - both) / (1 - 0.6)
    _within(int(b[~a].sum()), int((~a).sum()), cond)
    assert cond < 0.75 * 0.8


def test_unsolvable_tasks_defeat_every_model_and_attempt() -> None:
    """A task with v < u is failed by every model on every attempt; the share of such
    tasks is u; the other tasks are solved by a model with p = 1 - u every time."""
    u = 0.15
    s = _scenario({"sigma": 0.5, "unsolvable": u}, {"weak": 0.3, "best": 1 - u})
    w = s.realize(8, 10.0)
    n = 20_000
    flags = np.array([w.task_draws(i)[1] < u for i in range(n)])
    _within(int(flags.sum()), n, u)
    for model in ("weak", "best"):
        for k in (1, 2):
            assert not _oks(w, model, n, k)[flags].any()
    # best has a = +inf: it solves every solvable task on every attempt
    assert _oks(w, "best", n)[~flags].all()
    assert w.ability(w.index("best"), "json") == math.inf


def test_difficulty_belongs_to_the_task_not_the_model_or_the_config() -> None:
    """(z, v) of a task are the same in worlds with other models, in another order, or
    another scenario's models; they move only with the seed and the trace key."""
    s1 = _scenario({"sigma": 1.0}, {"a": 0.5, "b": 0.7})
    s2 = _scenario({"sigma": 2.0, "unsolvable": 0.2}, {"x": 0.3})
    idx = [0, 1, 4095, 4096, 50_000]
    draws = [s1.realize(3, 1.0, ["b", "a"], trace_key=5).task_draws(i) for i in idx]
    assert draws == [s2.realize(3, 1.0, trace_key=5).task_draws(i) for i in idx]
    assert draws != [s1.realize(3, 1.0, trace_key=6).task_draws(i) for i in idx]
    assert draws != [s1.realize(4, 1.0, trace_key=5).task_draws(i) for i in idx]
    # and the outcomes of model a do not depend on whether b is in the world
    alone = s1.realize(3, 1.0, ["a"], trace_key=5)
    pair = s1.realize(3, 1.0, ["b", "a"], trace_key=5, max_cached_blocks=1)
    keys = [(i, k) for i in range(0, 3 * BLOCK_SIZE, 7) for k in (1, 2)]
    assert [alone.attempt(0, i, k, "json", 0, 0) for i, k in keys] == [
        pair.attempt(1, i, k, "json", 0, 0) for i, k in keys
    ]
    z = np.array([alone.task_draws(i)[0] for i in range(20_000)])
    assert abs(z.mean()) < 4.5 / math.sqrt(z.size) and z.std() == pytest.approx(1.0, abs=0.03)


# ----------------------------------------------------------------- retries
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_a_retry_after_a_failure_succeeds_as_predicted(rho: float) -> None:
    """P(ok on attempt 2 | attempt 1 failed) of one model = (p - P(both)) / (1 - p) with
    the two attempts sharing d and sqrt(rho) eta: below p even at rho = 0 (the task is
    as hard the second time), lower still with rho > 0."""
    sigma, u, p = 1.4, 0.1, 0.6
    s = _scenario({"sigma": sigma, "unsolvable": u, "retry_correlation": rho}, {"a": p})
    w = s.realize(21, 10.0, trace_key=3)
    n = 80_000
    first, second = _oks(w, "a", n, 1), _oks(w, "a", n, 2)
    predicted = (p - _both(p, p, sigma, u, rho)) / (1 - p)
    _within(int(second[~first].sum()), int((~first).sum()), predicted)
    assert predicted < p
    if rho:
        assert predicted < (p - _both(p, p, sigma, u, 0.0)) / (1 - p) - 0.05


# ----------------------------------------------------------------- Beta and caps
def test_beta_draws_above_the_solvable_share_are_capped() -> None:
    """p ~ Beta around 0.85 with u = 0.1: a draw above 0.9 is capped at 0.9 (no model
    solves an unsolvable task), so completion_probability never exceeds 1 - u."""
    s = parse_scenario(
        {
            "difficulty": {"sigma": 1.4, "unsolvable": 0.1},
            "models": {
                "m": {
                    "provider": "p",
                    "completion": {"default": 0.85, "beta_concentration": 60},
                    "latency": {"dist": "fixed", "value_s": 1.0},
                    "cost_per_task": 0.0,
                }
            },
        }
    )
    probs = np.array(
        [s.realize(seed, 1.0).completion_probability(0, "json") for seed in range(400)]
    )
    assert probs.max() == pytest.approx(0.9)
    capped = np.mean(probs >= 0.9 - 1e-12)
    assert capped == pytest.approx(stats.beta(51, 9).sf(0.9), abs=0.06)


def test_seed_difficulty_is_documented_and_switchable() -> None:
    s = load_seed_scenario()
    assert not s.difficulty.is_independent()
    off = s.model_copy(update={"difficulty": DifficultySpec()})
    assert off.difficulty.is_independent()
    w = s.realize(0, 1.0)
    assert all(w.ability(m, "json") is not None for m in range(len(w.model_ids)))
    assert off.realize(0, 1.0).ability(0, "json") is None
