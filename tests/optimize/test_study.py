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
    render,
    run_study,
    space_of,
    to_litellm,
    write_export,
)
from optimize.export import litellm_losses
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
    assert ho["selection_seeds"] == [10_000, 10_001, 10_002]
    assert ho["reporting_seeds"] == [20_000, 20_001, 20_002]
    assert ho["best_trial"] == summary["best_trial"]
    assert summary["significant"] == (summary["improvement_ci_low"] > 0)


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
                    "context_window": 200000,
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
                    "retry_on": ["rate_limited"],
                    "fallback_on_refusal": True,
                },
                "default": {
                    "chain": ["b"],
                    "max_cost_per_task": 0.05,
                    "max_latency_ms": 9000,
                    "ordering": "score",
                    "min_observed_completion": 0.7,
                },
            },
            "default_route": "default",
            "breaker": {"consecutive_failures": 4, "open_base_s": 45},
            "budget": {
                "daily_cap_usd": 20,
                "per_model_usd": {"a": 2.5},
                "per_provider_usd": {"anthropic": 30},
            },
        }
    )
    out = to_litellm(cfg)
    retry = {
        "TimeoutErrorRetries": 2,
        "RateLimitErrorRetries": 2,
        "InternalServerErrorRetries": 2,
        "ServiceUnavailableErrorRetries": 2,
        "BadRequestErrorRetries": 0,
        "AuthenticationErrorRetries": 0,
        "ContentPolicyViolationErrorRetries": 0,
    }
    assert out == {
        "model_list": [
            {
                "model_name": "sql_query",
                "litellm_params": {
                    "model": "openai/gpt-x",
                    "api_base": "http://127.0.0.1:9/v1",
                    "api_key": "os.environ/A_KEY",
                    "timeout": 4.0,
                    "max_budget": 2.5,
                    "budget_duration": "1d",
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
                "model_info": {
                    "id": "sql_query/fallback-1:b",
                    "base_model": "b",
                    "max_input_tokens": 200000,
                },
            },
            {
                "model_name": "default",
                "litellm_params": {
                    "model": "anthropic/b",
                    "api_key": "os.environ/ANTHROPIC_API_KEY",
                    "timeout": 9.0,
                    "input_cost_per_token": 3e-06,
                    "output_cost_per_token": 1.5e-05,
                },
                "model_info": {"id": "default:b", "base_model": "b", "max_input_tokens": 200000},
            },
        ],
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "fallbacks": [{"sql_query": ["sql_query/fallback-1"]}],
            "context_window_fallbacks": [{"sql_query": ["sql_query/fallback-1"]}],
            "num_retries": 2,
            "model_group_retry_policy": {
                # sql_query retries only rate limits; default keeps the default retry_on.
                "sql_query": {
                    **retry,
                    "TimeoutErrorRetries": 0,
                    "InternalServerErrorRetries": 0,
                    "ServiceUnavailableErrorRetries": 0,
                },
                "sql_query/fallback-1": {
                    **retry,
                    "TimeoutErrorRetries": 0,
                    "InternalServerErrorRetries": 0,
                    "ServiceUnavailableErrorRetries": 0,
                },
                "default": {k: min(v, 1) for k, v in retry.items()},
            },
            "timeout": 9.0,
            "allowed_fails": 4,
            "cooldown_time": 45.0,
            "retry_after": 0.25,
            "content_policy_fallbacks": [{"sql_query": ["sql_query/fallback-1"]}],
            "enable_pre_call_checks": True,
            "provider_budget_config": {"anthropic": {"budget_limit": 30.0, "time_period": "1d"}},
        },
        "litellm_settings": {"max_budget": 20.0, "budget_duration": "1d"},
    }
    losses = litellm_losses(cfg)
    text = "\n".join(losses)
    for what in (
        "max_cost_per_task (per-task cost caps: sql_query 0.05, default 0.05)",
        "max_latency_ms",
        "validation",
        "routes.*.ordering: score (default)",
        "routes.*.min_observed_completion (default 0.7)",
        "breaker.count",
        "budget.alert_fractions",
    ):
        assert what in text, what
    assert all("\n" not in line for line in losses)
    # The LiteLLM file starts with them as comments (and stays valid YAML).
    rendered = render(cfg, "litellm")
    assert rendered.startswith("# LiteLLM proxy config exported by costroute")
    assert "#   - routes.*.max_latency_ms" in rendered
    assert yaml.safe_load(rendered) == to_litellm(cfg)


def test_litellm_export_is_accepted_by_litellm(
    tmp_path: Path, seed_config: RouterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network: LiteLLM would otherwise fetch its model cost map at import.
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "true")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm", reason="LiteLLM is an optional extra")
    import asyncio

    data = seed_config.model_dump(mode="json")
    # Per-deployment and per-provider budgets start LiteLLM's budget limiter, which needs
    # a running event loop (as in the proxy).
    data["budget"]["per_model_usd"] = {"grok-4.20": 5.0}
    data["budget"]["per_provider_usd"] = {"anthropic": 20.0}
    path = write_export(config_from_dict(data), tmp_path / "litellm.yaml", "litellm")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))

    async def build() -> object:
        return litellm.Router(model_list=data["model_list"], **data["router_settings"])

    router = asyncio.run(build())
    names = sorted({m["model_name"] for m in router.model_list})
    assert names == sorted(m["model_name"] for m in data["model_list"])
    fallbacks = data["router_settings"]["fallbacks"]
    assert {"regex_generation": ["regex_generation/fallback-1", "regex_generation/fallback-2"]} in (
        fallbacks
    )
    grok = router.get_deployment(model_id="regex_generation:grok-4.20")
    assert (grok.litellm_params.max_budget, grok.litellm_params.budget_duration) == (5.0, "1d")


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
    # Simulated: 2 trials x 2 training seeds; then base + 2 distinct candidates x 3 selection
    # seeds; then base + the winner x 3 reporting seeds.
    assert calls == [0, 1, 0, 1] + [10_000, 10_001, 10_002] * 3 + [20_000, 20_001, 20_002] * 2


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
    assert (s["selection_seeds"], s["reporting_seeds"]) == (3, 3)


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
    # Reported on the reporting seeds, not on the selection seeds the winner was chosen on.
    assert not set(ho["reporting_seeds"]) & set(ho["selection_seeds"])
    base = [ev.summary(seed_config, s) for s in ho["reporting_seeds"]]
    win = [ev.summary(tuned, s) for s in ho["reporting_seeds"]]
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
    obj = Objective()
    assert ho["values"] == [obj.value(w) for w in win]
    assert ho["base_values"] == [obj.value(b) for b in base]
    d = paired_difference(ho["base_values"], ho["values"])
    assert (ho["improvement_ci_low"], ho["improvement_ci_high"]) == (
        d["diff_ci_low"],
        d["diff_ci_high"],
    )


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


def test_seed_streams_are_named_and_disjoint() -> None:
    """Training, selection, reporting and sim compare's default never share a seed, for
    any base seed, as long as each stream holds at most STREAM_WIDTH seeds."""
    from optimize.study import SEED_STREAMS, STREAM_WIDTH, seed_stream
    from sim.cli import COMPARE_SEED_OFFSET, SEED_STREAM_WIDTH

    assert list(SEED_STREAMS) == ["training", "selection", "reporting", "compare"]
    assert SEED_STREAMS["compare"] == COMPARE_SEED_OFFSET and STREAM_WIDTH == SEED_STREAM_WIDTH
    for seed in (0, 1, 7, 9_999, 123_456):
        streams = {name: set(seed_stream(name, seed, STREAM_WIDTH)) for name in SEED_STREAMS}
        names = list(streams)
        for i, a in enumerate(names):
            assert min(streams[a]) == seed + SEED_STREAMS[a]
            for b in names[i + 1 :]:
                assert not streams[a] & streams[b], (seed, a, b)
    assert seed_stream("reporting", 5, 3) == [20_005, 20_006, 20_007]
    with pytest.raises(InputError, match="do not fit in a stream"):
        seed_stream("training", 0, STREAM_WIDTH + 1)
    with pytest.raises(InputError, match="at most 10000"):
        StudySettings(study="s", storage="x", base=None, replications=10_001).check()  # type: ignore[arg-type]


def test_a_study_trains_selects_and_reports_on_its_own_streams(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from optimize import Evaluator
    from optimize.study import seed_stream

    seen: list[int] = []
    real = Evaluator.summary

    def record(self: Evaluator, config: RouterConfig, seed: int) -> dict:
        seen.append(seed)
        return real(self, config, seed)

    monkeypatch.setattr(Evaluator, "summary", record)
    r = run_study(small_cols, scenario, settings(tmp_path, seed_config, trials=3, seed=4))
    training = set(seed_stream("training", 4, 2))
    selection = set(seed_stream("selection", 4, 3))
    reporting = set(seed_stream("reporting", 4, 3))
    assert set(seen) == training | selection | reporting
    ho = r.holdout
    assert set(ho["selection_seeds"]) == selection and set(ho["reporting_seeds"]) == reporting
    # The reported numbers are the reporting seeds' only: the base and the winner there,
    # each (config, seed) pair simulated once (once in all when the winner is the base).
    last_other = max(i for i, x in enumerate(seen) if x not in reporting)
    same = r.space.build(r.study.trials[ho["best_trial"]].params) == seed_config
    assert seen[last_other + 1 :] == sorted(reporting) * (1 if same else 2)
