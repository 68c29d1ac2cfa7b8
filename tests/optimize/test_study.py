"""The study runner: trial counts, resume, determinism, holdout, export to the live router."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from optimize import (
    Objective,
    SpaceSpec,
    StudySettings,
    open_storage,
    run_study,
    space_of,
    to_litellm,
    write_export,
)
from router import InputError, RouterConfig, config_from_dict, load_config
from router.live import Router
from sim import ReplayColumns, Scenario

SMALL = SpaceSpec(routes=["regex_generation", "json_parse"], max_candidates=4)


def settings(tmp_path: Path, base: RouterConfig, **kw: object) -> StudySettings:
    defaults: dict = dict(
        study="t",
        storage=str(tmp_path / "t.journal"),
        base=base,
        spec=SMALL,
        trials=8,
        replications=2,
        holdout_replications=3,
        top_k=2,
    )
    defaults.update(kw)
    return StudySettings(**defaults)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(states=states)


def test_study_runs_resumes_and_keeps_every_trial(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    s = settings(tmp_path, seed_config)
    first = run_study(small_cols, scenario, s)
    assert first.summary["trials"] == 8
    before = {t.number: (t.state, t.value, t.params) for t in finished(first.study)}
    assert sorted(before) == list(range(8))
    # Trial 0 is the base config itself, enqueued.
    assert first.space.build(first.study.trials[0].params) == seed_config

    s.trials = 12
    second = run_study(small_cols, scenario, s)
    after = {t.number: (t.state, t.value, t.params) for t in finished(second.study)}
    assert sorted(after) == list(range(12))
    assert {n: after[n] for n in before} == before

    summary = second.summary
    for key in (
        "study",
        "storage",
        "best_trial",
        "objective",
        "holdout_value",
        "holdout_ci_low",
        "holdout_ci_high",
        "improvement_vs_base",
        "improvement_ci_low",
        "improvement_ci_high",
    ):
        assert key in summary
    assert summary["holdout_ci_low"] <= summary["holdout_value"] <= summary["holdout_ci_high"]
    lo, hi = summary["improvement_ci_low"], summary["improvement_ci_high"]
    assert lo <= summary["improvement_vs_base"] <= hi
    ho = second.study.user_attrs["holdout"]
    assert ho["holdout_seeds"] == [10_000, 10_001, 10_002]
    assert ho["best_trial"] == summary["best_trial"]


def test_same_seed_same_study(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    # Trials 0..8 are the enqueued base config and its 8 neighbours; 9..11 are sampled.
    n = 12
    runs = []
    for name in ("a", "b"):
        r = run_study(small_cols, scenario, settings(tmp_path, seed_config, study=name, trials=n))
        runs.append([(t.params, t.values, t.state) for t in r.study.trials])
        assert len(r.space.neighbours()) == 8
    assert runs[0] == runs[1]
    r = run_study(
        small_cols, scenario, settings(tmp_path, seed_config, study="c", trials=n, seed=1)
    )
    sampled = [t.params for t in r.study.trials][9:]
    assert [t.params for t in r.study.trials][:9] == [p for p, _, _ in runs[0]][:9]
    assert sampled != [p for p, _, _ in runs[0]][9:]


def test_resume_with_another_objective_is_refused(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    run_study(small_cols, scenario, settings(tmp_path, seed_config, trials=2))
    with pytest.raises(InputError, match="already exists with a different objective"):
        run_study(
            small_cols,
            scenario,
            settings(tmp_path, seed_config, trials=3, objective=Objective("seed_score")),
        )


def test_multi_objective_study_and_constraints(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    obj = Objective("multi", constraints=_constraints(min_completion_rate=0.5))
    r = run_study(small_cols, scenario, settings(tmp_path, seed_config, objective=obj))
    complete = [t for t in r.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8  # no pruning for multi-objective studies
    for t in complete:
        m = t.user_attrs["metrics"]
        assert t.values == [m["completion_rate"], m["cost_per_success"], m["latency_p95_s"]]
        assert t.constraints == {"min_completion_rate": pytest.approx(0.5 - m["completion_rate"])}
    assert r.study.best_trials  # a Pareto front of feasible trials
    assert r.summary["best_trial"] in {t.number for t in r.study.best_trials}


def _constraints(**kw: float):  # noqa: ANN202 - small local helper
    from optimize import Constraints

    return Constraints(**kw)


def test_exported_config_is_loaded_unchanged_by_the_live_router(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    from optimize.export import merge_endpoints
    from router.providers.endpoint import Endpoint

    # Every model reachable (a local OpenAI-compatible URL), as the live router needs.
    with_endpoints = merge_endpoints(
        seed_config,
        {
            m.id: Endpoint(base_url="http://127.0.0.1:9/v1", model=m.id, api_key_env="KEY")
            for m in seed_config.models
        },
    )
    r = run_study(small_cols, scenario, settings(tmp_path, with_endpoints, trials=5))
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "t.journal")))
    space, base, obj = space_of(study)  # from the storage alone
    assert base == with_endpoints and obj == Objective()
    for n in range(5):
        cfg = space.build(study.trials[n].params)
        # The base config's endpoints travel with every trial's config.
        assert [m.endpoint for m in cfg.models] == [m.endpoint for m in with_endpoints.models]
        for suffix in (".yaml", ".json", ".toml"):
            path = write_export(cfg, tmp_path / f"trial{n}{suffix}")
            assert load_config(path) == cfg
        router = Router.from_config(tmp_path / f"trial{n}.yaml")
        assert router.config == cfg
    best = r.summary["best_trial"]
    assert (
        load_config(tmp_path / f"trial{best}.yaml").routes
        == space.build(study.trials[best].params).routes
    )


def test_litellm_export_maps_chains_to_fallback_groups() -> None:
    cfg = config_from_dict(
        {
            "models": [
                {
                    "id": "a",
                    "provider": "openai",
                    "cost_per_task": 0.01,
                    "endpoint": {
                        "base_url": "http://127.0.0.1:9/v1",
                        "model": "gpt-x",
                        "api_key_env": "A_KEY",
                    },
                },
                {
                    "id": "b",
                    "provider": "anthropic",
                    "cost_per_task": 0.02,
                    "input_per_mtok": 3.0,
                    "output_per_mtok": 15.0,
                },
            ],
            "routes": {
                "sql_query": {
                    "chain": ["a", "b"],
                    "max_cost_per_task": 0.05,
                    "max_latency_ms": 8000,
                    "attempt_timeout_ms": 4000,
                    "attempts_per_model": 3,
                    "backoff": {"base_s": 0.5},
                },
                "default": {"chain": ["b"], "max_cost_per_task": 0.05, "max_latency_ms": 9000},
            },
            "default_route": "default",
            "breaker": {"consecutive_failures": 4, "open_base_s": 45},
            "budget": {"daily_cap_usd": 20},
        }
    )
    out = to_litellm(cfg)
    assert out == {
        "model_list": [
            {
                "model_name": "sql_query",
                "litellm_params": {
                    "model": "openai/gpt-x",
                    "api_base": "http://127.0.0.1:9/v1",
                    "api_key": "os.environ/A_KEY",
                    "timeout": 4.0,
                },
                "model_info": {"id": "sql_query:a", "base_model": "a"},
            },
            {
                "model_name": "sql_query/fallback-1",
                "litellm_params": {
                    "model": "anthropic/b",
                    "api_key": "os.environ/ANTHROPIC_API_KEY",
                    "timeout": 4.0,
                    "input_cost_per_token": 3e-06,
                    "output_cost_per_token": 1.5e-05,
                },
                "model_info": {"id": "sql_query/fallback-1:b", "base_model": "b"},
            },
            {
                "model_name": "default",
                "litellm_params": {
                    "model": "anthropic/b",
                    "api_key": "os.environ/ANTHROPIC_API_KEY",
                    "input_cost_per_token": 3e-06,
                    "output_cost_per_token": 1.5e-05,
                },
                "model_info": {"id": "default:b", "base_model": "b"},
            },
        ],
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "fallbacks": [{"sql_query": ["sql_query/fallback-1"]}],
            "num_retries": 2,
            "timeout": 9.0,
            "allowed_fails": 4,
            "cooldown_time": 45.0,
            "retry_after": 0.25,
        },
        "litellm_settings": {"max_budget": 20.0, "budget_duration": "1d"},
    }


def test_litellm_export_is_accepted_by_litellm(
    tmp_path: Path, seed_config: RouterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network: LiteLLM would otherwise fetch its model cost map at import.
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "true")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm", reason="LiteLLM is an optional extra")
    path = write_export(seed_config, tmp_path / "litellm.yaml", "litellm")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    router = litellm.Router(model_list=data["model_list"], **data["router_settings"])
    names = sorted({m["model_name"] for m in router.model_list})
    assert names == sorted(m["model_name"] for m in data["model_list"])
    fallbacks = data["router_settings"]["fallbacks"]
    assert {"regex_generation": ["regex_generation/fallback-1", "regex_generation/fallback-2"]} in (
        fallbacks
    )


def test_holdout_traces_choose_the_winner(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    from sim import replay_columns, synthesize

    other = [("other", replay_columns(synthesize(n_tasks=300, rate_per_s=1.0, seed=99)))]
    r = run_study(
        small_cols, scenario, settings(tmp_path, seed_config, trials=4), holdout_traces=other
    )
    ho = r.study.user_attrs["holdout"]
    assert ho["holdout_traces"] == "other:300"
    assert ho["metrics"]["tasks"] == 300


@pytest.mark.parametrize("sampler", ["nsga2", "random", "gp"])
def test_samplers_are_selectable(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
    sampler: str,
) -> None:
    import importlib.util

    s = settings(tmp_path, seed_config, trials=3, sampler=sampler, objective=Objective("multi"))
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        with pytest.raises(InputError, match=r"--sampler gp: .* needs PyTorch"):
            run_study(small_cols, scenario, s)
        return
    from optimize.study import make_sampler

    expected = {"nsga2": "NSGAIISampler", "random": "RandomSampler", "gp": "GPSampler"}
    assert type(make_sampler(sampler, 0)).__name__ == expected[sampler]
    r = run_study(small_cols, scenario, s)
    assert r.summary["trials"] == 3


def test_sqlite_storage_resumes_like_the_journal(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    first = run_study(small_cols, scenario, settings(tmp_path, seed_config, storage=url, trials=3))
    assert first.summary["storage"] == url
    second = run_study(small_cols, scenario, settings(tmp_path, seed_config, storage=url, trials=5))
    assert second.summary["trials"] == 5
    kept = {t.number: t.params for t in finished(first.study)}
    assert {t.number: t.params for t in finished(second.study) if t.number in kept} == kept


def _two_config_spec() -> SpaceSpec:
    """A space with exactly two configs: json_parse's ordering is the only free parameter."""
    return SpaceSpec(
        routes=["json_parse"],
        max_candidates=2,
        freeze={
            "json_parse.key.*": 0.5,
            "json_parse.length": 2,
            "json_parse.max_cost_per_task": 0.01,
            "json_parse.max_latency_ms": 5000,
            "json_parse.attempt_timeout_ms": 3000,
            "json_parse.attempts_per_model": 2,
            "json_parse.backoff_base_s": 0.25,
            "breaker.consecutive_failures": 5,
            "breaker.failure_rate": 0.5,
            "breaker.open_base_s": 30,
        },
    )


def test_a_repeated_config_is_answered_from_its_twin_not_simulated(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from optimize import Evaluator
    from optimize.study import config_key

    calls: list[int] = []
    real = Evaluator.summary

    def counting(self: Evaluator, config: RouterConfig, seed: int) -> dict:
        calls.append(seed)
        return real(self, config, seed)

    monkeypatch.setattr(Evaluator, "summary", counting)
    s = settings(tmp_path, seed_config, spec=_two_config_spec(), trials=3, prune=False)
    r = run_study(small_cols, scenario, s)
    trials = r.study.trials
    # Trial 0 (base) and 1 (its one neighbour: the other ordering) are the only two
    # configs, so every sampled trial repeats one of them. Three repeats give their
    # slot back (as many as --trials); the fourth counts, and the run ends.
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [("duplicate_of" in t.user_attrs) for t in trials] == [False, False] + [True] * 4
    assert r.summary["trials"] == 2 and r.summary["duplicates"] == 4
    keys = {t.number: config_key(r.space.build(t.params)) for t in trials}
    assert keys[0] != keys[1]
    for t in trials[2:]:
        twin = trials[t.user_attrs["duplicate_of"]]
        assert twin.number in (0, 1)
        assert keys[t.number] == keys[twin.number] == t.user_attrs["config_key"]
        assert t.value == twin.value
        assert t.user_attrs["metrics"] == twin.user_attrs["metrics"]
        assert t.user_attrs["seed_values"] == twin.user_attrs["seed_values"]
    # Simulated: 2 trials x 2 seeds; then the holdout: base + 2 distinct candidates x 3 seeds.
    assert calls == [0, 1, 0, 1] + [10_000, 10_001, 10_002] * 3


def test_a_repeat_copies_the_constraints_and_multi_objective_values(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    obj = Objective("multi", constraints=_constraints(min_completion_rate=0.99))
    s = settings(tmp_path, seed_config, spec=_two_config_spec(), trials=3, objective=obj)
    r = run_study(small_cols, scenario, s)
    repeats = [t for t in r.study.trials if "duplicate_of" in t.user_attrs]
    assert len(repeats) == 4
    for t in repeats:
        twin = r.study.trials[t.user_attrs["duplicate_of"]]
        assert t.values == twin.values and len(t.values) == 3
        assert t.constraints == twin.constraints
        assert set(t.constraints) == {"min_completion_rate"}


def test_progress_reports_each_trial_and_the_best_so_far(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    from optimize.study import Progress

    seen: list[Progress] = []
    r = run_study(
        small_cols, scenario, settings(tmp_path, seed_config, trials=6), progress=seen.append
    )
    assert [p.done for p in seen] == [1, 2, 3, 4, 5, 6]
    assert {p.total for p in seen} == {6} and {p.metric for p in seen} == {"net_value"}
    complete = [t for t in r.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert (seen[-1].best_value, seen[-1].best_trial, seen[-1].feasible) == (
        best.value,
        best.number,
        True,
    )
    assert seen[0].best_trial == 0  # the base config is trial 0, complete first
    s = r.summary
    assert s["seconds"] >= s["seconds_study"] + s["seconds_holdout"] > 0
    assert s["holdout_seeds"] == 3


def test_holdout_reports_paired_differences_per_metric(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    from optimize import Evaluator
    from sim import paired_difference

    r = run_study(small_cols, scenario, settings(tmp_path, seed_config, trials=4))
    ho = r.holdout
    ev = Evaluator(small_cols, scenario)
    tuned = r.space.build(r.study.trials[ho["best_trial"]].params)
    base = [ev.summary(seed_config, s) for s in ho["holdout_seeds"]]
    win = [ev.summary(tuned, s) for s in ho["holdout_seeds"]]
    assert list(ho["paired"]) == [
        "completion_rate",
        "cost_per_task",
        "latency_mean_s",
        "latency_p95_s",
        "breaker_trips",
    ]
    for key, d in ho["paired"].items():
        assert d == paired_difference([b[key] for b in base], [w[key] for w in win])
    assert r.summary["paired"] == ho["paired"]


def test_importances_are_stable_sorted_and_drawn(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    from optimize.plots import importances, write_figures

    r = run_study(small_cols, scenario, settings(tmp_path, seed_config, trials=14))
    first = importances(r.study)
    assert first and len(first) <= 12
    assert importances(r.study) == first  # no random draws: the same on every call
    assert list(first) == [k for k, _ in sorted(first.items(), key=lambda kv: (-kv[1], kv[0]))]
    assert set(first) <= set(r.study.trials[-1].params)
    paths = write_figures(r.study, Objective(), r.holdout, tmp_path / "fig")
    assert [p.name for p in paths] == [
        "history.png",
        "pareto.png",
        "importances.png",
        "tuned_vs_base.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_tuned_vs_base_rows_are_paired_differences_with_a_verdict() -> None:
    from optimize.plots import _paired_rows, _verdict

    holdout = {
        "base_values": [0.030, 0.031, 0.032],
        "values": [0.035, 0.037, 0.036],
        "paired": {
            "completion_rate": {
                "a": 0.92,
                "b": 0.94,
                "diff": 0.02,
                "diff_ci_low": 0.01,
                "diff_ci_high": 0.03,
            },
            "cost_per_task": {
                "a": 0.0074,
                "b": 0.0080,
                "diff": 0.0006,
                "diff_ci_low": 0.0001,
                "diff_ci_high": 0.0011,
            },
            "latency_p95_s": {
                "a": 4.5,
                "b": 4.4,
                "diff": -0.1,
                "diff_ci_low": -0.3,
                "diff_ci_high": 0.1,
            },
        },
    }
    rows = _paired_rows(Objective(), holdout)
    assert [(r["label"], r["unit"], r["scale"], r["up"]) for r in rows] == [
        ("net value", "¢/task", 100.0, True),
        ("completion rate", "pp", 100.0, True),
        ("cost per task", "¢", 100.0, False),
        ("p95 latency", "s", 1.0, False),
    ]
    assert rows[0]["diff"] == pytest.approx(0.005)
    # Higher completion: better; higher cost: worse; a CI across 0: no clear change.
    assert [_verdict(r) for r in rows] == ["better", "better", "worse", "no clear change"]
