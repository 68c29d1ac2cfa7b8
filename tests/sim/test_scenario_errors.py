"""Bad scenarios and configs through the CLI: one line that names the fix, exit 2.

A typo is reported first with a did-you-mean (it also makes the intended field
"missing", which is not the thing to fix); the other errors are listed by where they
are; YAML syntax errors name the line and column.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import ScenarioError
from sim.world.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

SEED = (resources.files("sim") / "data" / "seed_scenario.yaml").read_text(encoding="utf-8")
CONFIG = (ROOT / "router" / "data" / "seed_config.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t") / "t.csv"
    path.write_text("task_id,arrival_s,task_type,prompt_tokens,completion_tokens\na,0,json,10,5\n")
    return path


def _replay(trace: Path, *extra: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["replay", str(trace), *extra])
    return res.exit_code, res.stdout, res.stderr


def _edited_seed(**edits: str) -> str:
    """The seed scenario's text with ``old=new`` substitutions, each applied once."""
    text = SEED
    for old, new in edits.values():  # type: ignore[misc]
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


SCENARIO_CASES = [
    # a typo in a field: named first (pydantic lists the "missing provider" first),
    # with the others located
    (
        {
            "a": ("grok-4.20:\n    provider: xai", "grok-4.20:\n    providr: xai"),
            "b": ("grok-4.1-fast:\n    provider: xai  # article\n", "grok-4.1-fast:\n"
                  "    provider: xai  # article\n    context_window: 0\n"),
        },
        "bad.yaml: models.grok-4.20.providr: unknown field (did you mean 'provider'?) "
        "[+2 more: models.grok-4.20.provider, models.grok-4.1-fast.context_window]",
    ),
    # inside a latency distribution (the union's tag is not part of the path)
    (
        {"a": ("      mean_s: 1.45  #", "      mean_sec: 1.45  #")},
        "bad.yaml: models.grok-4.20.latency.mean_sec: unknown field (did you mean 'mean_s'?)",
    ),
    # no close name: the known ones are listed
    (
        {"a": ("grok-4.20:\n    provider: xai", "grok-4.20:\n    zzz: 1\n    provider: xai")},
        "bad.yaml: models.grok-4.20.zzz: unknown field (expected one of: provider, completion, "
        "latency, context_window, outage, capacity, rate_limit_rpm, retry_after_s, "
        "fail_fast_latency_s, malformed_rate, server_error_rate, cost_per_task, "
        "input_per_mtok, output_per_mtok)",
    ),
    # YAML syntax: line and column
    (
        {"a": ("grok-4.20:\n    provider: xai", "grok-4.20:\n    provider: [xai")},
        "bad.yaml: invalid YAML at line 139, column 5: expected ',' or ']', but got '<scalar>'",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("edits", "expected"), SCENARIO_CASES)
def test_bad_scenario_is_one_line_exit_2(
    tmp_path: Path, trace: Path, edits: dict[str, tuple[str, str]], expected: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(_edited_seed(**edits))  # type: ignore[arg-type]
    code, out, err = _replay(trace, "--scenario", str(bad))
    assert (code, out) == (2, "")
    assert err == f"error: {expected}\n"


def test_more_than_three_other_errors_are_elided() -> None:
    data = yaml.safe_load(SEED)
    bad = copy.deepcopy(data)
    for mid in list(bad["models"])[:5]:
        bad["models"][mid]["capacity"] = 0
    with pytest.raises(ScenarioError) as info:
        parse_scenario(bad, "s.yaml")
    assert str(info.value) == (
        "s.yaml: models.grok-4.20.capacity: input should be greater than 0, got 0 "
        "[+4 more: models.grok-4.1-fast.capacity, models.ring-2.6.capacity, "
        "models.deepseek-v4-flash.capacity, ...]"
    )


def test_token_latency_typo_names_the_ttft_fields(tmp_path: Path) -> None:
    data = yaml.safe_load(SEED)
    data["models"]["grok-4.20"]["latency"] = {"ttft": {"median_s": 0.5, "sigma": 0.2, "p95s": 1}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(
        "s.yaml: models.grok-4.20.latency.ttft.p95s: unknown field (did you mean 'p95_s'?)"
    )


def test_bad_config_yaml_names_line_and_column(tmp_path: Path, trace: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text(CONFIG.replace("  - id: grok-4.1-fast\n", "  - id: [grok-4.1-fast\n", 1))
    code, out, err = _replay(trace, "--config", str(bad))
    assert (code, out) == (2, "")
    assert err == (
        f"error: {bad}: not valid YAML at line 25, column 13: expected ',' or ']', but got ':'\n"
    )


def test_config_typo_is_named_first(tmp_path: Path, trace: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text(CONFIG.replace("    provider: xai                 # template\n",
                                  "    providr: xai\n", 1))  # fmt: skip
    code, out, err = _replay(trace, "--config", str(bad))
    assert (code, out) == (2, "")
    assert err == (
        f"error: {bad}: models[0].providr: unknown field (did you mean 'provider'?) "
        "[+1 more: models[0].provider]\n"
    )
