"""The lognormal mixture latency family: its inverse CDF, its place in a scenario, the
world's draws, and ``sim calibrate`` writing one for multi-modal latencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from scipy import stats

from sim.errors import ScenarioError
from sim.world.calibration import _dist_lines, _latency_mapping, fit_latency
from sim.world.distributions import LognormalMixture
from sim.world.scenario import TokenLatency, parse_scenario

#: Two well separated modes (a fast path and a queued one), 60/40.
MIX = {"weights": [0.6, 0.4], "mu": [0.0, 1.5], "sigma": [0.2, 0.3]}


def _scenario(latency: dict) -> object:
    """One model with ``latency`` and nothing else that could end an attempt early."""
    return parse_scenario(
        {
            "name": "mixture",
            "models": {
                "m": {
                    "provider": "p",
                    "completion": {"default": 0.5},
                    "latency": latency,
                    "server_error_rate": 0.0,
                    "malformed_rate": 0.0,
                    "cost_per_task": 0.001,
                }
            },
        },
        "mixture.yaml",
    )


def test_ppf_inverts_the_cdf_and_the_moments_are_exact() -> None:
    m = LognormalMixture(**MIX)
    u = np.linspace(0.0, 1.0, 2001, endpoint=False)
    x = m.ppf(u)
    assert x[0] == 0.0 and (np.diff(x) > 0).all()
    assert np.abs(m.cdf(x[1:]) - u[1:]).max() < 1e-12
    # A value depends on its own uniform only, not on the batch it came in.
    alone = np.array([m.ppf(np.array([v]))[0] for v in u[::50]])
    assert alone.tobytes() == x[::50].tobytes()
    # Mean: sum of w exp(mu + s^2 / 2) = 0.6 e^0.02 + 0.4 e^1.545.
    assert m.mean() == pytest.approx(0.6 * math.exp(0.02) + 0.4 * math.exp(1.545), rel=1e-12)
    grid = m.ppf((np.arange(40_000) + 0.5) / 40_000)
    assert grid.mean() == pytest.approx(m.mean(), rel=2e-3)
    # The residual life of a renewal process: mean E[X^2] / (2 E[X]).
    second = 0.6 * math.exp(0.08) + 0.4 * math.exp(3.0 + 0.18)
    draws = m.sample_residual(np.random.default_rng(11), 60_000)
    se = draws.std() / math.sqrt(draws.size)
    assert abs(draws.mean() - second / (2 * m.mean())) < 4.5 * se


def test_world_draws_follow_the_mixture_from_the_scenario_yaml() -> None:
    """20,000 draws of the world through the YAML loader match the mixture's CDF by KS
    (D ~ 0.006 expected; drawing from one component, or ignoring the weights, gives
    D > 0.1), in both latency forms, and the token terms add on top of the same draw."""
    text = (
        "{dist: lognormal_mixture, weights: [0.6, 0.4], mu: [0, 1.5], sigma: [0.2, 0.3], "
        "per_1k_completion_tokens_s: 5}"
    )
    flat = _scenario(yaml.safe_load(text))
    tokens = _scenario({"ttft": {"dist": "lognormal_mixture", **MIX}, "per_output_token_s": 0.005})
    assert isinstance(tokens.models["m"].latency, TokenLatency)
    m = LognormalMixture(**MIX)
    n = 20_000
    for scenario in (flat, tokens):
        world = scenario.realize(3, 100.0)
        base = np.array([world.attempt(0, i, 1, "json", 0, 0)[1] for i in range(n)])
        sized = np.array([world.attempt(0, i, 1, "json", 0, 1000)[1] for i in range(n)])
        assert stats.kstest(base, m.cdf).pvalue > 0.01
        assert np.allclose(sized - base, 5.0, rtol=0, atol=1e-9)
        wrong = LognormalMixture(weights=[0.5, 0.5], mu=MIX["mu"], sigma=MIX["sigma"])
        assert stats.kstest(base, wrong.cdf).pvalue < 1e-6  # the test can tell
    # Common random numbers: the same seed gives the same draws, byte for byte.
    one, two = flat.realize(3, 100.0), flat.realize(3, 100.0)
    first = np.array([one.attempt(0, i, 1, "json", 0, 0)[1] for i in range(50)])
    again = np.array([two.attempt(0, i, 1, "json", 0, 0)[1] for i in range(50)])
    assert again.tobytes() == first.tobytes()


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        ({"weights": [0.6, 0.5], "mu": [0, 1], "sigma": [1, 1]}, "weights must sum to 1"),
        ({"weights": [0.6, 0.4], "mu": [0], "sigma": [1, 1]}, "of one length from 1 to 5"),
        ({"weights": [0.6, 0.4], "mu": [0, 1], "sigma": [1, -1]}, "expected a positive number"),
    ],
)
def test_a_bad_mixture_is_one_line_naming_the_field(mixture: dict, message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        _scenario({"dist": "lognormal_mixture", **mixture})
    text = str(exc.value)
    assert "\n" not in text and "mixture.yaml" in text and "models.m.latency" in text
    assert message in text


def test_calibration_writes_a_two_component_mixture_it_fits() -> None:
    """Latencies from a 2-component lognormal mixture plus a per-token term: the fit
    chooses the mixture out of sample, writes it as ``lognormal_mixture`` with the
    true components (3,000 values pin each weight to about +-0.01, each mu to +-0.01),
    and the YAML line loads back to the same distribution."""
    rng = np.random.default_rng(4)
    n = 3000
    comp = rng.random(n) < 0.6
    base = np.where(comp, rng.lognormal(0.0, 0.2, n), rng.lognormal(1.5, 0.3, n))
    ct = np.rint(rng.lognormal(math.log(250), 0.7, n))
    fit = fit_latency(base + 0.01 * ct, np.zeros(n), ct, seed=1)
    assert fit.family == "lognormal_mix2", fit.scores
    assert fit.per_output is not None and fit.per_output.value == pytest.approx(0.01, rel=0.05)
    mapping = _latency_mapping(fit)
    assert mapping["dist"] == "lognormal_mixture"
    assert mapping["weights"] == pytest.approx([0.6, 0.4], abs=0.03)
    assert mapping["mu"] == pytest.approx([0.0, 1.5], abs=0.05)
    assert mapping["sigma"] == pytest.approx([0.2, 0.3], abs=0.03)
    (line,) = _dist_lines("ttft", mapping, "n=3,000", 6)
    written = yaml.safe_load(line.strip())["ttft"]
    loaded = LognormalMixture.model_validate(written)
    u = np.linspace(0.01, 0.99, 99)
    assert np.allclose(loaded.ppf(u), fit.ppf(u), rtol=1e-3)
