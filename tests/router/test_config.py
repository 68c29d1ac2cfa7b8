"""Config loading, saving, schema and each rejection (the message names the field)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from router import (
    ConfigError,
    config_from_dict,
    json_schema,
    load_config,
    load_seed_config,
    save_config,
)
from router.catalog import seed_config_path


def seed_dict() -> dict:
    return yaml.safe_load(seed_config_path().read_text())


def test_seed_config_has_the_article_figures() -> None:
    c = load_seed_config()
    assert len(c.models) == 13
    grok = c.model("grok-4.20")
    assert (grok.completion_rate, grok.cost_per_task, grok.avg_latency_ms) == (0.75, 0.0003, 1450)
    assert c.model("grok-4.1-fast").avg_latency_ms == 22500  # 225 s for 10 tasks
    assert c.model("ring-2.6").cost_per_task == 0.0
    # No figure in the article: left empty, never invented.
    for mid in ("gpt-5.4-pro", "gpt-5.5-pro", "deepseek-v4-pro", "lyria-3-pro", "lyria-3-clip"):
        assert c.model(mid).avg_latency_ms is None
    assert c.model("lyria-3-clip").status == "preview"
    assert c.routes["regex_generation"].chain == ["grok-4.20", "deepseek-v4-flash", "ring-2.6"]
    assert c.routes["sql_query"].max_cost_per_task == 0.05
    assert c.routes["bug_patch"].max_latency_ms == 10000
    assert set(c.routes) == {
        "regex_generation",
        "sql_query",
        "bug_patch",
        "json_parse",
        "error_handling",
        "default",
    }


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".toml"])
def test_round_trip_every_format(tmp_path, suffix: str) -> None:
    c = load_seed_config()
    path = save_config(c, tmp_path / f"c{suffix}")
    assert load_config(path) == c


def test_json_schema_describes_routes() -> None:
    s = json_schema()
    assert "routes" in s["properties"] and "Route" in s["$defs"]
    json.dumps(s)


def _reject(mutate) -> str:
    d = seed_dict()
    mutate(d)
    with pytest.raises(ConfigError) as exc:
        config_from_dict(d, "c.yaml")
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_model_in_chain_names_the_path() -> None:
    msg = _reject(lambda d: d["routes"]["sql_query"]["chain"].append("gpt-9"))
    assert msg.startswith("c.yaml: routes.sql_query.chain[2]: unknown model 'gpt-9'")


def test_empty_chain() -> None:
    msg = _reject(lambda d: d["routes"]["bug_patch"].update(chain=[]))
    assert msg.startswith("c.yaml: routes.bug_patch.chain: List should have at least 1 item")


def test_model_twice_in_chain() -> None:
    msg = _reject(lambda d: d["routes"]["bug_patch"].update(chain=["gpt-5.4", "gpt-5.4"]))
    assert "routes.bug_patch: chain[1]: model 'gpt-5.4' appears twice" in msg


@pytest.mark.parametrize("value", [0, -0.01])
def test_non_positive_cost_limit(value: float) -> None:
    msg = _reject(lambda d: d["routes"]["sql_query"].update(max_cost_per_task=value))
    assert msg == (
        "c.yaml: routes.sql_query.max_cost_per_task: "
        f"Input should be greater than 0 (got {value!r})"
    )


def test_negative_latency_limit() -> None:
    msg = _reject(lambda d: d["routes"]["regex_generation"].update(max_latency_ms=-5))
    assert "routes.regex_generation.max_latency_ms: Input should be greater than 0 (got -5)" in msg


def test_probability_outside_unit_interval() -> None:
    msg = _reject(lambda d: d["models"][0].update(completion_rate=1.4))
    assert msg == (
        "c.yaml: models[0].completion_rate: Input should be less than or equal to 1 (got 1.4)"
    )


def test_negative_cost_and_wrong_type() -> None:
    msg = _reject(lambda d: d["models"][1].update(cost_per_task=-1))
    assert "models[1].cost_per_task: Input should be greater than or equal to 0 (got -1)" in msg
    assert "models[2].avg_latency_ms: Input should be a valid number" in _reject(
        lambda d: d["models"][2].update(avg_latency_ms="fast")
    )


def test_unknown_field_and_status() -> None:
    assert "models[0].colour: unknown field (expected one of: id, provider," in _reject(
        lambda d: d["models"][0].update(colour="red")
    )
    assert "models[0].status: Input should be 'stable', 'preview' or 'deprecated'" in _reject(
        lambda d: d["models"][0].update(status="beta")
    )


def test_breaker_and_budget_rejections() -> None:
    assert "breaker.failure_rate: Input should be less than or equal to 1 (got 1.5)" in _reject(
        lambda d: d["breaker"].update(failure_rate=1.5)
    )
    assert "breaker: min_requests: 30 exceeds window 20" in _reject(
        lambda d: d["breaker"].update(min_requests=30)
    )
    assert "budget.per_model_usd.nope: unknown model 'nope'" in _reject(
        lambda d: d["budget"].update(per_model_usd={"nope": 1.0})
    )
    assert "budget.daily_cap_usd: Input should be greater than 0 (got 0)" in _reject(
        lambda d: d["budget"].update(daily_cap_usd=0)
    )


def test_default_route_must_exist() -> None:
    assert "default_route: 'nope' is not a route" in _reject(
        lambda d: d.update(default_route="nope")
    )


def test_duplicate_model_id() -> None:
    def dup(d: dict) -> None:
        d["models"].append(copy.deepcopy(d["models"][0]))

    assert "models[13].id: model 'grok-4.20' is defined twice" in _reject(dup)


def test_bad_files(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")
    other = tmp_path / "c.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match=r"unknown config format '.ini'"):
        load_config(other)


def test_route_resolution_by_alias_and_default() -> None:
    c = load_seed_config()
    assert c.route_for("regex")[0] == "regex_generation"
    assert c.route_for("sql")[0] == "sql_query"
    assert c.route_for("bug_patch")[0] == "bug_patch"
    assert c.route_for("poetry")[0] == "default"


def test_a_typo_is_named_first_with_the_field_it_meant() -> None:
    def typo(d: dict) -> None:
        d["routes"]["default"]["chian"] = d["routes"]["default"].pop("chain")

    assert _reject(typo) == (
        "c.yaml: routes.default.chian: unknown field (did you mean 'chain'?) "
        "[+1 more: routes.default.chain]"
    )


def test_more_problems_say_where_they_are() -> None:
    def three(d: dict) -> None:
        d["models"][3]["id"] = 5
        d["breaker"]["windw"] = 30
        d["routes"]["bug_patch"]["max_latency_ms"] = -1

    assert _reject(three) == (
        "c.yaml: breaker.windw: unknown field (did you mean 'window'?) "
        "[+2 more: models[3].id, routes.bug_patch.max_latency_ms]"
    )

    def five(d: dict) -> None:
        for i in range(5):
            d["models"][i]["completion_rate"] = 2

    assert _reject(five) == (
        "c.yaml: models[0].completion_rate: Input should be less than or equal to 1 (got 2) "
        "[+4 more: models[1].completion_rate, models[2].completion_rate, "
        "models[3].completion_rate, ...]"
    )


def test_unknown_field_inside_an_endpoint_and_hidden_inputs() -> None:
    def endpoint(d: dict) -> None:
        d["models"][0]["endpoint"] = {"base_url": "http://x/v1", "model": "m", "api_kye_env": "K"}

    assert _reject(endpoint) == (
        "c.yaml: models[0].endpoint.api_kye_env: unknown field (did you mean 'api_key_env'?)"
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "b.yaml",
            "models:\n  - id: a\n    provider: [x\nroutes: {}\n",
            "b.yaml: not valid YAML at line 4, column 7: expected ',' or ']', but got ':'",
        ),
        (
            "d.yaml",
            "default_route: a\nroutes: {}\nroutes: {}\n",
            "d.yaml: not valid YAML at line 3, column 1: duplicate key 'routes'",
        ),
        (
            "b.json",
            '{"models": [],\n "routes": {},}',
            "b.json: not valid JSON at line 2, column 15: "
            "Expecting property name enclosed in double quotes",
        ),
        ("b.toml", "a = \n", "b.toml: not valid TOML: Invalid value (at line 1, column 5)"),
    ],
)
def test_syntax_errors_name_line_and_column(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path.parent}/{message}"
