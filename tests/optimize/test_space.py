"""The search space: random-key chains, base parameters, freezing, narrowing, the grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimize import ChoiceParam, FloatParam, IntParam, SearchSpace, SpaceSpec, load_space_spec
from router import InputError, RouterConfig
from sim import Scenario


def test_random_keys_sort_into_a_chain_cut_to_length(
    seed_config: RouterConfig, scenario: Scenario
) -> None:
    spec = SpaceSpec(
        routes=["regex_generation"],
        candidates={"regex_generation": ["grok-4.20", "deepseek-v4-flash", "ring-2.6", "gpt-5.4"]},
    )
    space = SearchSpace(seed_config, scenario, spec)
    keys = {
        "regex_generation.key.grok-4.20": 0.9,
        "regex_generation.key.deepseek-v4-flash": 0.1,
        "regex_generation.key.ring-2.6": 0.5,
        "regex_generation.key.gpt-5.4": 0.3,
    }
    assert space.chain("regex_generation", {**keys, "regex_generation.length": 3}) == [
        "deepseek-v4-flash",
        "gpt-5.4",
        "ring-2.6",
    ]
    assert space.chain("regex_generation", {**keys, "regex_generation.length": 1}) == [
        "deepseek-v4-flash"
    ]
    # Equal keys keep the candidates' listed order (a stable, deterministic tie-break).
    tied = {k: 0.5 for k in keys}
    assert space.chain("regex_generation", {**tied, "regex_generation.length": 4}) == [
        "grok-4.20",
        "deepseek-v4-flash",
        "ring-2.6",
        "gpt-5.4",
    ]
    # One float per candidate plus a length: not a categorical over permutations.
    assert isinstance(space.params["regex_generation.key.gpt-5.4"], FloatParam)
    assert space.params["regex_generation.length"] == IntParam(1, 4)


def test_base_params_rebuild_the_base_config(seed_config: RouterConfig, scenario: Scenario) -> None:
    space = SearchSpace(seed_config, scenario)
    assert set(space.routes) == set(seed_config.routes)
    rebuilt = space.build(space.base_params())
    assert rebuilt.model_dump() == seed_config.model_dump()
    # Every route's candidates start with its base chain, in order.
    for name, route in seed_config.routes.items():
        assert space.candidates[name][: len(route.chain)] == route.chain
        assert len(space.candidates[name]) == max(5, len(route.chain))


def test_candidates_exclude_preview_models_in_production(
    seed_config: RouterConfig, scenario: Scenario
) -> None:
    space = SearchSpace(seed_config, scenario, SpaceSpec(max_candidates=20))
    previews = {m.id for m in seed_config.models if m.status != "stable"}
    assert previews == {"lyria-3-pro", "lyria-3-clip"}
    for cands in space.candidates.values():
        assert not previews & set(cands)


def test_build_applies_every_parameter(seed_config: RouterConfig, scenario: Scenario) -> None:
    spec = SpaceSpec(routes=["sql_query"], candidates={"sql_query": ["mistral-large-3", "gpt-5.4"]})
    space = SearchSpace(seed_config, scenario, spec)
    cfg = space.build(
        {
            "sql_query.key.mistral-large-3": 0.7,
            "sql_query.key.gpt-5.4": 0.2,
            "sql_query.length": 2,
            "sql_query.max_cost_per_task": 0.01,
            "sql_query.max_latency_ms": 4000.0,
            "sql_query.attempt_timeout_ms": 1500.0,
            "sql_query.attempts_per_model": 3,
            "sql_query.backoff_base_s": 0.1,
            "sql_query.ordering": "score",
            "breaker.consecutive_failures": 7,
            "breaker.failure_rate": 0.8,
            "breaker.open_base_s": 12.0,
        }
    )
    r = cfg.routes["sql_query"]
    assert r.chain == ["gpt-5.4", "mistral-large-3"]
    assert (r.max_cost_per_task, r.max_latency_ms, r.attempt_timeout_ms) == (0.01, 4000.0, 1500.0)
    assert (r.attempts_per_model, r.backoff.base_s, r.ordering) == (3, 0.1, "score")
    assert (cfg.breaker.consecutive_failures, cfg.breaker.failure_rate) == (7, 0.8)
    assert cfg.breaker.open_base_s == 12.0
    # Routes outside the space keep the base config's settings.
    assert cfg.routes["regex_generation"] == seed_config.routes["regex_generation"]


def test_study_file_freezes_and_narrows(
    tmp_path: Path, seed_config: RouterConfig, scenario: Scenario
) -> None:
    f = tmp_path / "study.yaml"
    f.write_text(
        "objective: seed_score\n"
        "constraints: {min_completion_rate: 0.9}\n"
        "space:\n"
        "  routes: [regex_generation, json_parse]\n"
        "  freeze:\n"
        "    '*.ordering': chain\n"
        "    breaker.failure_rate: 0.6\n"
        "  ranges:\n"
        "    '*.attempts_per_model': [1, 2]\n"
        "    regex_generation.max_cost_per_task: [0.001, 0.004]\n",
        encoding="utf-8",
    )
    spec, rest = load_space_spec(f)
    assert rest == {"objective": "seed_score", "constraints": {"min_completion_rate": 0.9}}
    space = SearchSpace(seed_config, scenario, spec)
    assert "regex_generation.ordering" not in space.params
    assert space.frozen["json_parse.ordering"] == "chain"
    assert space.frozen["breaker.failure_rate"] == 0.6
    assert space.params["json_parse.attempts_per_model"] == IntParam(1, 2)
    assert space.params["regex_generation.max_cost_per_task"] == FloatParam(0.001, 0.004, True)
    assert space.params["breaker.open_base_s"] == FloatParam(5.0, 300.0, True)
    cfg = space.build({})
    assert cfg.breaker.failure_rate == 0.6
    assert not any(n.startswith("sql_query.") for n in space.params)


@pytest.mark.parametrize(
    ("space_yaml", "message"),
    [
        ("space: {routes: [nope]}", "space.routes: unknown route 'nope'"),
        ("space: {freeze: {'x.*': 1}}", "space.freeze.x.*: matches no parameter"),
        ("space: {ranges: {breaker.failure_rate: [0.9, 0.1]}}", "low 0.9 is above high 0.1"),
        ("space: {ranges: {'*.ordering': [random]}}", "'random' is not one of chain, score"),
        ("space: {freeze: {breaker.open_base_s: -3}}", "expected a positive number, got -3"),
        ("space: {candidates: {sql_query: [gpt-9]}}", "unknown model 'gpt-9'"),
        ("space: {max_candidates: 0}", "space.max_candidates: expected an integer >= 1, got 0"),
        ("space: {colour: red}", "space.colour: unknown key"),
        ("space: [1, 2]", "space: expected a mapping, got list"),
    ],
)
def test_bad_study_files_give_one_line_errors(
    tmp_path: Path, seed_config: RouterConfig, scenario: Scenario, space_yaml: str, message: str
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(space_yaml + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        spec, _ = load_space_spec(f)
        SearchSpace(seed_config, scenario, spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_grid_enumerates_every_distinct_config(
    seed_config: RouterConfig, scenario: Scenario
) -> None:
    spec = SpaceSpec(
        routes=["regex_generation"],
        candidates={"regex_generation": ["grok-4.20", "deepseek-v4-flash", "ring-2.6"]},
        freeze={
            "regex_generation.max_cost_per_task": 0.005,
            "regex_generation.max_latency_ms": 5000,
            "regex_generation.attempt_timeout_ms": 3000,
            "regex_generation.backoff_base_s": 0.25,
            "breaker.consecutive_failures": 5,
            "breaker.failure_rate": 0.5,
            "breaker.open_base_s": 30,
        },
        ranges={"regex_generation.attempts_per_model": [1, 2]},
    )
    space = SearchSpace(seed_config, scenario, spec)
    assert isinstance(space.params["regex_generation.ordering"], ChoiceParam)
    configs = [space.build(p) for p in space.grid()]
    # chains: 3 + 3*2 + 3*2*1 = 15; x attempts {1, 2} x ordering {chain, score} = 60
    assert space.grid_size() == 60
    assert len(configs) == 60
    keys = {
        (
            tuple(c.routes["regex_generation"].chain),
            c.routes["regex_generation"].attempts_per_model,
            c.routes["regex_generation"].ordering,
        )
        for c in configs
    }
    assert len(keys) == 60


def test_grid_refuses_a_continuous_parameter(seed_config: RouterConfig, scenario: Scenario) -> None:
    space = SearchSpace(seed_config, scenario, SpaceSpec(routes=["sql_query"]))
    with pytest.raises(InputError, match="is continuous; freeze it"):
        next(space.grid())
