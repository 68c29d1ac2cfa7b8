"""Exports: rounded settings, endpoints kept and merged, readable parameter names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optimize import write_export
from optimize.export import (
    load_endpoints,
    merge_endpoints,
    round_config,
    round_setting,
)
from optimize.space import param_label
from router import InputError, RouterConfig, config_from_dict, load_config
from router.providers.endpoint import Endpoint


def ugly(seed_config: RouterConfig) -> RouterConfig:
    data = seed_config.model_dump(mode="json")
    route = data["routes"]["bug_patch"]
    route["max_cost_per_task"] = 0.0123456789
    route["max_latency_ms"] = 7582.233422003074
    route["attempt_timeout_ms"] = 42.123456
    route["backoff"]["base_s"] = 0.123456
    data["breaker"]["failure_rate"] = 0.61234567
    data["breaker"]["open_base_s"] = 27.777777
    data["budget"]["daily_cap_usd"] = 12.3456789
    data["budget"]["per_model_usd"] = {"gpt-5.4": 1.23456789}
    data["models"][0]["cost_per_task"] = 0.0123456789
    return config_from_dict(data)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_latency_ms", 7582.233422003074, 7582.0),
        ("attempt_timeout_ms", 999.5, 1000.0),
        ("attempt_timeout_ms", 42.123456, 42.1),
        ("max_cost_per_task", 0.0123456789, 0.01235),
        ("daily_cap_usd", 12.3456789, 12.35),
        ("failure_rate", 0.61234567, 0.612),
        ("open_base_s", 27.777777, 27.8),
        ("base_s", 0.123456, 0.123),
        ("jitter", 0.0, 0.0),
    ],
)
def test_round_setting_by_unit(key: str, value: float, expected: float) -> None:
    assert round_setting(key, value) == expected
    assert round_setting(key, expected) == expected  # idempotent


def test_export_rounds_tuned_settings_and_leaves_model_data(
    tmp_path: Path, seed_config: RouterConfig
) -> None:
    cfg = ugly(seed_config)
    path = write_export(cfg, tmp_path / "tuned.yaml")
    text = path.read_text(encoding="utf-8")
    assert "7582.233422003074" not in text and "0.61234567" not in text
    loaded = load_config(path)
    assert loaded == round_config(cfg)
    route = loaded.routes["bug_patch"]
    assert (route.max_cost_per_task, route.max_latency_ms, route.attempt_timeout_ms) == (
        0.01235,
        7582.0,
        42.1,
    )
    assert route.backoff.base_s == 0.123
    assert (loaded.breaker.failure_rate, loaded.breaker.open_base_s) == (0.612, 27.8)
    assert loaded.budget.daily_cap_usd == 12.35
    assert loaded.budget.per_model_usd == {"gpt-5.4": 1.235}
    # Prices are the user's data, not tuned settings: untouched.
    assert loaded.models[0].cost_per_task == 0.0123456789
    # The other routes were round already and come back unchanged.
    assert {r: v for r, v in loaded.routes.items() if r != "bug_patch"} == {
        r: v for r, v in seed_config.routes.items() if r != "bug_patch"
    }
    litellm = yaml.safe_load(write_export(cfg, tmp_path / "l.yaml", "litellm").read_text())
    timeouts = {e["litellm_params"].get("timeout") for e in litellm["model_list"]}
    assert 0.0421 in timeouts  # 42.1 ms, not 42.123456 ms


ENDPOINTS_YAML = """\
gpt-5.4:
  base_url: https://api.openai.com/v1/
  model: gpt-5.4-2026-01
  api_key_env: OPENAI_API_KEY
claude-sonnet-4:
  kind: anthropic
  base_url: https://api.anthropic.com
  model: claude-sonnet-4-20250514
  api_key_env: ANTHROPIC_API_KEY
"""


def test_endpoints_file_is_merged_and_other_endpoints_kept(
    tmp_path: Path, seed_config: RouterConfig
) -> None:
    keep = Endpoint(base_url="http://127.0.0.1:8000/v1", model="local-grok")
    base = merge_endpoints(seed_config, {"grok-4.20": keep})
    (tmp_path / "eps.yaml").write_text(ENDPOINTS_YAML)
    eps = load_endpoints(tmp_path / "eps.yaml")
    assert list(eps) == ["gpt-5.4", "claude-sonnet-4"]
    assert eps["gpt-5.4"].base_url == "https://api.openai.com/v1"  # trailing slash dropped
    merged = merge_endpoints(base, eps)
    by_id = {m.id: m for m in merged.models}
    assert by_id["grok-4.20"].endpoint == keep
    assert by_id["gpt-5.4"].endpoint == eps["gpt-5.4"]
    assert by_id["claude-sonnet-4"].endpoint == eps["claude-sonnet-4"]
    assert by_id["claude-sonnet-4"].endpoint.kind == "anthropic"
    assert all(
        by_id[m.id].endpoint is None
        for m in seed_config.models
        if m.id not in ("grok-4.20", "gpt-5.4", "claude-sonnet-4")
    )
    # Nothing else changes, and the export carries the endpoints.
    assert merged.routes == seed_config.routes and merged.breaker == seed_config.breaker
    loaded = load_config(write_export(merged, tmp_path / "tuned.yaml"))
    assert loaded == merged
    # Replacing an endpoint: the file wins over the base config's.
    replaced = merge_endpoints(merged, {"grok-4.20": eps["gpt-5.4"]})
    assert {m.id: m for m in replaced.models}["grok-4.20"].endpoint == eps["gpt-5.4"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping of model id -> endpoint"),
        ("", "expected a mapping of model id -> endpoint"),
        ("a: [\n", "line 2: not valid YAML"),
        ("gpt-5.4: {model: m}\n", "gpt-5.4.base_url: Field required"),
        ("gpt-5.4: {base_url: ftp://x, model: m}\n", "gpt-5.4: Value error, base_url: expected"),
        (
            "gpt-5.4: {base_url: 'http://x', model: m, api_key_env: sk-proj-SECRET}\n",
            "gpt-5.4.api_key_env: Value error, api_key_env must be the NAME",
        ),
    ],
)
def test_bad_endpoints_file_is_one_line_naming_the_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "eps.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_endpoints(path)
    assert str(info.value).startswith(f"--endpoints: {path}:")
    assert message in str(info.value)
    assert "SECRET" not in str(info.value)
    assert "\n" not in str(info.value)


def test_endpoint_for_an_unknown_model_is_refused(seed_config: RouterConfig) -> None:
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(InputError, match=r"^--endpoints: unknown model 'gpt-9' \(the config has "):
        merge_endpoints(seed_config, {"gpt-9": ep})


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("bug_patch.key.gpt-5.4", "bug_patch: position of gpt-5.4"),
        ("sql_query.length", "sql_query: chain length"),
        ("sql_query.max_cost_per_task", "sql_query: cost limit per task ($)"),
        ("json_parse.max_latency_ms", "json_parse: latency limit (ms)"),
        ("json_parse.attempt_timeout_ms", "json_parse: attempt timeout (ms)"),
        ("default.attempts_per_model", "default: attempts per model"),
        ("default.backoff_base_s", "default: backoff base (s)"),
        ("default.ordering", "default: ordering (chain or score)"),
        ("breaker.consecutive_failures", "breaker: consecutive failures to open"),
        ("breaker.failure_rate", "breaker: failure rate to open"),
        ("breaker.open_base_s", "breaker: open time (s)"),
        ("something.else", "something.else"),
    ],
)
def test_param_labels_are_readable(name: str, label: str) -> None:
    assert param_label(name) == label
