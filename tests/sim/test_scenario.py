"""Scenario loading, the shipped seed scenario, each rejection, and the distributions."""

from __future__ import annotations

import copy
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from scipy import stats

from router.task import TASK_TYPES
from sim.errors import ScenarioError
from sim.world.distributions import (
    DIST_TAGS,
    Empirical,
    Exponential,
    Fixed,
    Gamma,
    Lognormal,
    Weibull,
)
from sim.world.scenario import (
    Scenario,
    load_scenario,
    load_seed_scenario,
    parse_scenario,
    scenario_json_schema,
)

SEED_IDS = [
    "grok-4.20", "grok-4.1-fast", "ring-2.6", "deepseek-v4-flash", "gpt-5.4-pro",
    "gpt-5.5-pro", "deepseek-v4-pro", "lyria-3-pro", "lyria-3-clip", "claude-sonnet-4",
    "mistral-large-3", "gpt-5.4", "qwen-3.6-plus",
]  # fmt: skip
SEED_PROVIDERS = [
    "xai", "xai", "openrouter", "deepseek", "openai", "openai", "deepseek", "google",
    "google", "anthropic", "mistral", "openai", "alibaba",
]  # fmt: skip


def seed_text() -> str:
    return (resources.files("sim") / "data" / "seed_scenario.yaml").read_text(encoding="utf-8")


def minimal() -> dict[str, Any]:
    """A small valid scenario to break one field at a time."""
    return {
        "name": "mini",
        "providers": {
            "p": {
                "outage": {
                    "time_between": {"dist": "exponential", "mean_s": 1000},
                    "duration": {"median_s": 60, "p90_s": 600},
                }
            }
        },
        "models": {
            "m1": {
                "provider": "p",
                "completion": {"default": 0.7, "per_type": {"sql": 0.5}},
                "latency": {"median_s": 1.0, "p95_s": 2.0},
                "outage": {"shared": True},
                "malformed_rate": 0.1,
                "cost_per_task": 0.01,
            }
        },
    }


def write(tmp_path: Path, data: Any, name: str = "my.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return p


# ------------------------------------------------------------------ seed scenario
def test_seed_scenario_has_the_article_models() -> None:
    s = load_seed_scenario()
    assert s.name == "seed"
    assert list(s.models) == SEED_IDS
    assert [m.provider for m in s.models.values()] == SEED_PROVIDERS
    expected = {  # article: completion rate, cost per task
        "grok-4.20": (0.75, 0.0003), "grok-4.1-fast": (0.749, 0.0009), "ring-2.6": (0.65, 0.0),
        "deepseek-v4-flash": (0.60, 0.0001), "gpt-5.4-pro": (0.516, 0.06),
        "gpt-5.5-pro": (0.433, 0.065), "deepseek-v4-pro": (0.383, 0.001),
        "lyria-3-pro": (0.083, 0.0), "lyria-3-clip": (0.0, 0.0),
        "claude-sonnet-4": (0.85, 0.03), "mistral-large-3": (0.796, 0.02),
        "gpt-5.4": (0.766, 0.01), "qwen-3.6-plus": (0.766, 0.008),
    }  # fmt: skip
    for mid, (p, c) in expected.items():
        assert s.models[mid].completion.default == p
        assert s.models[mid].cost_per_task == c
        if not s.models[mid].token_priced:
            assert s.models[mid].cost(1000, 1000) == c
    # Claude Sonnet 4 is priced by its tokens (Anthropic's public $3 / $15 per MTok) and
    # has its public 200K window; no other model has a public figure for either.
    sonnet = s.models["claude-sonnet-4"]
    assert sonnet.cost(1000, 1000) == pytest.approx(0.018)
    assert sonnet.context_window == 200_000
    assert [m for m, spec in s.models.items() if spec.token_priced] == ["claude-sonnet-4"]
    assert [m for m, spec in s.models.items() if spec.context_window] == ["claude-sonnet-4"]
    # The seed difficulty: per-task-bench figures (sigma 1.2-1.7, ~10 % unsolvable) and
    # a documented retry-correlation assumption; every completion is <= 1 - unsolvable.
    assert (s.difficulty.sigma, s.difficulty.unsolvable) == (1.4, 0.10)
    assert s.difficulty.retry_correlation == 0.5
    assert max(m.completion.default for m in s.models.values()) <= 1 - s.difficulty.unsolvable
    means = {  # article config template (ms), and 225 s / 10 tasks for grok-4.1-fast
        "grok-4.20": 1.45, "deepseek-v4-flash": 2.1, "ring-2.6": 3.0, "mistral-large-3": 1.8,
        "claude-sonnet-4": 2.2, "gpt-5.4": 2.5, "qwen-3.6-plus": 2.8, "grok-4.1-fast": 22.5,
    }  # fmt: skip
    for mid, mean in means.items():
        assert s.models[mid].latency.mean() == pytest.approx(mean, rel=1e-12)
    assert s.models["lyria-3-clip"].server_error_rate == 1.0  # "answers with 502s"


def test_seed_scenario_every_number_has_a_source_comment() -> None:
    number = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(?![\w.])")
    for n, line in enumerate(seed_text().splitlines(), 1):
        body = line.split("#", 1)[0]
        if ":" in body and number.search(body.split(":", 1)[1]):
            assert "#" in line, f"line {n} has a number without a source comment: {line!r}"


def test_seed_outages_fit_the_status_page_figures() -> None:
    s = load_seed_scenario()
    openai = s.providers["openai"].outage
    assert openai is not None and openai.duration is not None
    assert openai.duration.ppf(np.array([0.5, 0.9])) == pytest.approx([72 * 60, 5 * 3600])
    cycle = openai.time_between.mean() + openai.duration.mean()
    assert 7 * 86400 / cycle == pytest.approx(1.27, rel=1e-4)  # incidents a week
    anthropic = s.providers["anthropic"].outage
    assert anthropic.duration.ppf(np.array([0.5, 0.9])) == pytest.approx([41 * 60, 4 * 3600])
    cycle = anthropic.time_between.mean() + anthropic.duration.mean()
    assert 7 * 86400 / cycle == pytest.approx(1.36, rel=1e-4)
    assert all(m.outage is not None and m.outage.shared for m in s.models.values())


def test_json_schema_accepts_the_seed_file_and_names_the_fields() -> None:
    schema = scenario_json_schema()
    jsonschema.validate(yaml.safe_load(seed_text()), schema)
    assert set(schema["properties"]) == {
        "name",
        "description",
        "difficulty",
        "providers",
        "models",
    }
    json.dumps(schema)  # serialisable
    bad = yaml.safe_load(seed_text())
    bad["models"]["grok-4.20"]["completion"]["default"] = 1.4
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_load_scenario_yaml_and_json_agree(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, minimal()))
    b = load_scenario(write(tmp_path, json.dumps(minimal()), "my.json"))
    assert a == b
    m = a.models["m1"]
    assert m.latency.dist == "lognormal"  # the default dist of a latency
    assert m.outage is not None and m.outage.shared
    assert a.providers["p"].outage.mode == "fail_fast"  # the default mode
    assert m.completion.probability("sql") == 0.5 and m.completion.probability("regex") == 0.7


def test_without_uncertainty_and_prices() -> None:
    s = load_seed_scenario()
    assert all(m.completion.beta_concentration == 60 for m in s.models.values())
    assert all(
        m.completion.beta_concentration is None for m in s.without_uncertainty().models.values()
    )
    data = minimal()
    m = data["models"]["m1"]
    m.update(cost_per_task=0.001, input_per_mtok=3.0, output_per_mtok=15.0)
    spec = parse_scenario(data).models["m1"]
    # Both token prices set: the tokens are the price (cost_per_task is the fallback),
    # the rule of the router's ModelProfile.estimate_cost, so the two agree.
    assert spec.token_priced
    assert spec.cost(2000, 500) == pytest.approx(2000 * 3e-6 + 500 * 15e-6)
    from router.config import ModelProfile

    profile = ModelProfile(
        id="m1", provider="p", cost_per_task=0.001, input_per_mtok=3.0, output_per_mtok=15.0
    )
    assert spec.cost(2000, 500) == profile.estimate_cost(2000, 500)
    m.update(input_per_mtok=None, output_per_mtok=None)
    assert parse_scenario(data).models["m1"].cost(2000, 500) == 0.001


# --------------------------------------------------------------------- rejections
def _set(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split("/")
    for k in keys[:-1]:
        d = d[k]
    if value is _DELETE:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value


_DELETE = object()

REJECTIONS = [
    # (path to set, value, substring the one-line message must contain)
    ("models/m1/completion/default", 1.4,
     "my.yaml: models.m1.completion.default: expected a probability in [0, 1], got 1.4"),
    ("models/m1/completion/per_type/json", -0.1,
     "models.m1.completion.per_type.json: expected a probability in [0, 1], got -0.1"),
    ("models/m1/completion/default", "high",
     "models.m1.completion.default: input should be a valid number"),
    ("models/m1/latency", {"median_s": -1.0, "p95_s": 2.0},
     "models.m1.latency.median_s: expected a positive number, got -1.0"),
    ("models/m1/latency", {"dist": "fixed", "value_s": -0.5},
     "models.m1.latency.value_s: expected a number >= 0, got -0.5"),
    ("models/m1/latency", {"dist": "lognormel", "median_s": 1.0, "sigma": 0.3},
     "models.m1.latency.dist: unknown distribution 'lognormel'"),
    ("providers/p/outage/duration", {"dist": "pareto", "alpha": 2},
     "providers.p.outage.duration.dist: unknown distribution 'pareto'"),
    ("models/m1/latncy", {"median_s": 1.0, "sigma": 0.2},
     "models.m1.latncy: unknown field (did you mean 'latency'?)"),
    ("models/m1/latency", {"median_s": 1.0, "sigma": 0.2, "p99": 3},
     "models.m1.latency.p99: unknown field (did you mean 'p99_s'?)"),
    ("models/m1/latency", {"median_s": 2.0, "p95_s": 1.0},
     "models.m1.latency: lognormal: p95_s must exceed the median"),
    ("models/m1/latency", {"median_s": 2.0}, "models.m1.latency: lognormal needs exactly one"),
    ("models/m1/completion/per_type", {"reqex": 0.5},
     "models.m1.completion.per_type.reqex: unknown task type 'reqex'"),
    ("models/m1/malformed_rate", 0.5, "models.m1.malformed_rate: completion.default 0.7"),
    ("models/m1/provider", "q", "models.m1.outage.shared: provider 'q' has no outage"),
    ("models/m1/provider", _DELETE, "models.m1.provider: required field is missing"),
    ("models/m1/cost_per_task", _DELETE, "models.m1.cost_per_task: a price is required"),
    ("models/m1/capacity", 0, "models.m1.capacity: input should be greater than 0, got 0"),
    ("models/m1/outage", {"time_between": {"mean_s": 10}},
     "models.m1.outage.duration: required field is missing"),
    ("models/m1/outage", {"shared": True, "mode": "hang"},
     "models.m1.outage.mode: not allowed with shared: true"),
    ("models/m1/outage", {"time_between": {"mean_s": 10}, "duration": {"dist": "fixed",
                                                                        "value_s": 0}},
     "models.m1.outage.duration: expected a distribution with a positive mean, got 0.0"),
    ("providers/p/outage/mode", "explode", "providers.p.outage.mode: input should be"),
    ("providers/p/outage/shared", True, "providers.p.outage.shared: a provider's outage"),
    ("models/m1/latency", {"dist": "empirical", "samples_s": []},
     "models.m1.latency: empirical needs at least one sample"),
    ("models/m1/latency", {"dist": "gamma", "shape": 2.0},
     "models.m1.latency: gamma needs exactly one of scale_s, mean_s"),
    ("models/m1/latency", 3, "models.m1.latency: expected a distribution mapping, got 3"),
    ("models", {}, "models: dictionary should have at least 1 item"),
    # token prices come in pairs (the router ignores a lone one)
    ("models/m1/input_per_mtok", 3.0,
     "models.m1.output_per_mtok: required with input_per_mtok (token prices come in pairs"),
    ("models/m1/context_window", 0, "models.m1.context_window: input should be greater than 0"),
    # difficulty
    ("difficulty", {"sigma": -1.0}, "difficulty.sigma: expected a number >= 0, got -1.0"),
    ("difficulty", {"unsolvable": 1.0},
     "difficulty.unsolvable: expected a share in [0, 1), got 1.0"),
    ("difficulty", {"retry_correlation": 1.0},
     "difficulty.retry_correlation: expected a share in [0, 1), got 1.0"),
    ("difficulty", {"sigmas": 1.0}, "difficulty.sigmas: unknown field"),
    ("difficulty", {"per_type": {"sqll": {"sigma": 1.0}}},
     "difficulty.per_type.sqll: unknown task type 'sqll'"),
    ("difficulty", {"per_type": {"sql": {"unsolvable": 1.0}}},
     "difficulty.per_type.sql.unsolvable: expected a share in [0, 1), got 1.0"),
    # p must fit in the solvable share: one line naming the model and the field
    ("difficulty", {"unsolvable": 0.4},
     "models.m1.completion.default: 0.7 exceeds 1 - difficulty.unsolvable = 0.6"),
    ("difficulty", {"per_type": {"sql": {"unsolvable": 0.6}}},
     "models.m1.completion.per_type.sql: 0.5 exceeds 1 - difficulty.per_type.sql.unsolvable = 0.4"),
    ("difficulty", {"per_type": {"json": {"unsolvable": 0.35}}},
     "models.m1.completion.default: 0.7 exceeds 1 - difficulty.per_type.json.unsolvable = 0.65"),
    # the token form of a latency
    ("models/m1/latency", {"ttft": {"median_s": 0.5, "sigma": 0.2}, "per_output_token_s": -0.1},
     "per_output_token_s: expected seconds per token >= 0 or a distribution mapping, got -0.1"),
    ("models/m1/latency", {"ttft": {"median_s": 0.5, "sigma": 0.2}, "per_token_s": 0.1},
     "per_token_s: unknown field"),
    ("models/m1/latency", {"ttft": {"median_s": -0.5, "sigma": 0.2}},
     "median_s: expected a positive number, got -0.5"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "expected"), REJECTIONS)
def test_each_rejection_names_the_field(
    tmp_path: Path, path: str, value: Any, expected: str
) -> None:
    data = copy.deepcopy(minimal())
    _set(data, path, value)
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, data))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("my.yaml: ")
    assert expected in msg, msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: {m1: [1, 2\n", "my.yaml: invalid YAML at line 2, column 1"),
        ("models:\n  m1: {a: 1}\n  m1: {a: 2}\n", "my.yaml: invalid YAML at line 3, column 3: "
         "duplicate key 'm1'"),
        ("- 1\n- 2\n", "my.yaml: expected a mapping at the top level, got list"),
        ("", "my.yaml: expected a mapping at the top level, got NoneType"),
    ],
)  # fmt: skip
def test_bad_yaml_is_one_line_with_a_location(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(expected), str(info.value)


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match=r"my\.json: invalid JSON at line 1"):
        load_scenario(write(tmp_path, "{", "my.json"))


def test_several_errors_report_the_first_and_locate_the_rest(tmp_path: Path) -> None:
    data = minimal()
    data["models"]["m1"]["completion"]["default"] = 2
    data["models"]["m1"]["server_error_rate"] = -1
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, data))
    assert str(info.value) == (
        "my.yaml: models.m1.completion.default: expected a probability in [0, 1], got 2.0 "
        "[+1 more: models.m1.server_error_rate]"
    )


def test_scenario_errors_are_input_errors() -> None:
    from router.errors import InputError

    assert issubclass(ScenarioError, InputError) and issubclass(ScenarioError, ValueError)


def test_realize_rejects_unknown_or_duplicate_models_and_bad_seeds() -> None:
    s = parse_scenario(minimal())
    with pytest.raises(ScenarioError, match="scenario 'mini' has no model 'zz'; it has: m1"):
        s.realize(0, 10.0, ["m1", "zz"])
    with pytest.raises(ScenarioError, match="duplicate model id 'm1'"):
        s.realize(0, 10.0, ["m1", "m1"])
    with pytest.raises(ScenarioError, match="seed: expected an integer >= 0, got -1"):
        s.realize(-1, 10.0)
    with pytest.raises(ScenarioError, match="horizon_s"):
        s.realize(0, math.inf)


def test_scenario_is_immutable() -> None:
    s = load_seed_scenario()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        s.name = "other"  # type: ignore[misc]
    assert isinstance(s, Scenario)


# ------------------------------------------------------------------ distributions
U = np.concatenate([np.linspace(0.0, 0.999, 1001), [1e-12, 0.5, 0.9999999]])


@pytest.mark.parametrize(
    ("dist", "frozen"),
    [
        (Lognormal(median_s=2.0, p95_s=5.0),
         stats.lognorm(s=np.log(2.5) / stats.norm.ppf(0.95), scale=2.0)),
        (Lognormal(mu=0.3, sigma=0.8), stats.lognorm(s=0.8, scale=np.exp(0.3))),
        (Lognormal(mean_s=1.45, sigma=0.0911),
         stats.lognorm(s=0.0911, scale=1.45 * np.exp(-0.5 * 0.0911**2))),
        (Lognormal(median_s=4320, p90_s=18000),
         stats.lognorm(s=np.log(18000 / 4320) / stats.norm.ppf(0.9), scale=4320)),
        (Lognormal(median_s=3, p99_s=30),
         stats.lognorm(s=np.log(10) / stats.norm.ppf(0.99), scale=3)),
        (Gamma(shape=2.5, scale_s=0.7), stats.gamma(a=2.5, scale=0.7)),
        (Gamma(shape=0.6, mean_s=3.0), stats.gamma(a=0.6, scale=5.0)),
        (Weibull(shape=1.7, scale_s=4.0), stats.weibull_min(c=1.7, scale=4.0)),
        (Weibull(shape=0.5, scale_s=1.0), stats.weibull_min(c=0.5, scale=1.0)),
        (Exponential(mean_s=468190.0), stats.expon(scale=468190.0)),
    ],
)  # fmt: skip
def test_ppf_and_mean_match_scipy(dist: Any, frozen: Any) -> None:
    inner = U[U < 1.0]
    np.testing.assert_allclose(dist.ppf(inner), frozen.ppf(inner), rtol=1e-9, atol=1e-12)
    assert dist.mean() == pytest.approx(frozen.mean(), rel=1e-9)
    assert dist.ppf(U.reshape(-1, 1)).shape == (len(U), 1)  # shape preserved


def test_empirical_and_fixed_ppf() -> None:
    rng = np.random.default_rng(3)
    samples = rng.gamma(2.0, 1.5, 257)
    e = Empirical(samples_s=samples.tolist())
    np.testing.assert_allclose(e.ppf(U), np.quantile(samples, U), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        e.ppf(U), stats.mstats.mquantiles(samples, U, alphap=1, betap=1), rtol=1e-9
    )
    grid = np.linspace(0, 1, 2_000_001)
    assert e.mean() == pytest.approx(np.trapezoid(e.ppf(grid), grid), rel=1e-9)
    assert Empirical(samples_s=[4.0]).ppf(U).tolist() == [4.0] * len(U)
    f = Fixed(value_s=0.25)
    assert f.ppf(U).tolist() == [0.25] * len(U) and f.mean() == 0.25


@pytest.mark.parametrize(
    "dist",
    [
        Lognormal(median_s=1.0, sigma=0.7),
        Gamma(shape=0.8, scale_s=2.0),
        Weibull(shape=1.5, scale_s=3.0),
        Exponential(mean_s=2.0),
        Empirical(samples_s=[0.5, 1.0, 1.2, 4.0, 9.0]),
        Fixed(value_s=2.0),
    ],
)
def test_equilibrium_residual_has_the_renewal_mean(dist: Any) -> None:
    # The forward recurrence time at a random instant has mean E[X^2] / (2 E[X]).
    grid = (np.arange(400_000) + 0.5) / 400_000
    x = dist.ppf(grid)
    expected = float(np.mean(x**2) / (2 * np.mean(x)))
    draws = dist.sample_residual(np.random.default_rng(11), 60_000)
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - expected) < 4.5 * se + 1e-3 * expected
    assert (draws >= 0).all()


def test_dist_tags_are_the_classes() -> None:
    assert DIST_TAGS == (
        "lognormal",
        "gamma",
        "weibull",
        "exponential",
        "empirical",
        "fixed",
        "lognormal_mixture",
    )
    assert TASK_TYPES == ("regex", "sql", "json", "bug_patch", "error_handling")
