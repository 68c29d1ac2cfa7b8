"""Synchronous successive halving (optimize.halving): batches, promotions, both cores."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from optimize import SpaceSpec, StudySettings, run_study
from optimize.fidelity import expected_cost
from optimize.halving import batch_size, kept
from router import RouterConfig
from sim import ReplayColumns, Scenario, replay_columns, synthesize

SMALL = SpaceSpec(routes=["regex_generation", "json_parse"], max_candidates=4)
S = optuna.trial.TrialState


@pytest.fixture(scope="module")
def cols() -> list[tuple[str, ReplayColumns]]:
    return [("h", replay_columns(synthesize(n_tasks=900, rate_per_s=2.0, seed=8)))]


def _settings(d: Path, base: RouterConfig, **kw: object) -> StudySettings:
    args: dict = dict(
        study="h",
        storage=str(d / "h.journal"),
        base=base,
        spec=SMALL,
        trials=12,
        replications=2,
        holdout_replications=3,
        top_k=2,
        fidelity=(0.1, 0.3),
    )
    args.update(kw)
    return StudySettings(**args)


@pytest.fixture(scope="module")
def halved(
    tmp_path_factory: pytest.TempPathFactory,
    seed_config: RouterConfig,
    scenario: Scenario,
    cols: list[tuple[str, ReplayColumns]],
) -> tuple[StudySettings, object]:
    s = _settings(tmp_path_factory.mktemp("h1"), seed_config)
    return s, run_study(cols, scenario, s)


def test_the_schedule_fixes_how_many_trials_reach_each_rung() -> None:
    assert batch_size((0.03, 0.1, 0.3), 3) == 27
    assert [kept(n, 3) for n in (27, 9, 3, 1, 19, 7, 2)] == [9, 3, 1, 1, 7, 3, 1]
    assert expected_cost((0.03, 0.1, 0.3), 3) == pytest.approx(0.03 + 0.1 / 3 + 0.3 / 9 + 1 / 27)


def test_each_batch_keeps_its_best_third_at_every_rung(
    halved: tuple[StudySettings, object],
) -> None:
    settings, report = halved
    trials = [t for t in report.study.trials if "duplicate_of" not in t.user_attrs]
    # 12 trials in batches of 3**2 = 9 and 3: 9 -> 3 -> 1 and 3 -> 1 -> 1.
    assert report.summary["fidelity"]["pruner"] == "halving"
    assert report.summary["fidelity"]["trials_per_rung"] == [12, 4, 2]
    batches: dict[int, list] = {}
    for t in trials:
        batches.setdefault(t.user_attrs["halving_batch"], []).append(t)
    assert sorted(len(b) for b in batches.values()) == [3, 9]
    for members in batches.values():
        at = members
        for rung in range(2):
            # Those that went on are exactly the best ceil(n/3) by this rung's value.
            ranked = sorted(at, key=lambda t: (-t.user_attrs["fidelity_values"][rung], t.number))
            on = {t.number for t in at if len(t.user_attrs["fidelity_values"]) > rung + 1}
            on |= {t.number for t in at if t.state == S.COMPLETE and rung == 1}
            assert on == {t.number for t in ranked[: kept(len(at), 3)]}, (rung, ranked)
            assert all(
                t.intermediate_values[3**rung] == t.user_attrs["fidelity_values"][rung] for t in at
            )
            at = [t for t in at if t.number in on]
        # One trial per batch is replayed on the full trace and told COMPLETE.
        assert len(at) == 1 and at[0].state == S.COMPLETE and at[0].user_attrs["fidelity"] == 1.0
    pruned = [t for t in trials if t.state == S.PRUNED]
    assert len(pruned) == 10 and all(t.user_attrs["fidelity"] < 1.0 for t in pruned)


def test_two_workers_give_the_same_study(
    tmp_path: Path,
    halved: tuple[StudySettings, object],
    seed_config: RouterConfig,
    scenario: Scenario,
    cols: list[tuple[str, ReplayColumns]],
) -> None:
    _, report = halved
    two = run_study(cols, scenario, _settings(tmp_path, seed_config, jobs=2))

    def shape(study: optuna.Study) -> list[tuple]:
        return [
            (
                t.number,
                t.state,
                t.value,
                t.params,
                t.intermediate_values,
                t.user_attrs.get("halving_batch"),
            )
            for t in study.trials
        ]

    assert shape(two.study) == shape(report.study)
    assert two.holdout["values"] == report.holdout["values"]


def test_a_resumed_halving_study_goes_on_with_new_batches(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    cols: list[tuple[str, ReplayColumns]],
) -> None:
    first = run_study(cols, scenario, _settings(tmp_path, seed_config, trials=9))
    assert first.summary["fidelity"]["trials_per_rung"] == [9, 3, 1]
    more = run_study(cols, scenario, _settings(tmp_path, seed_config, trials=12))
    assert more.summary["fidelity"]["trials_per_rung"] == [12, 4, 2]
    batches = [
        t.user_attrs["halving_batch"]
        for t in more.study.trials
        if "duplicate_of" not in t.user_attrs
    ]
    assert batches == [0] * 9 + [1] * 3


def test_the_month_benchs_lower_bound_counts_the_replays_a_study_makes(
    halved: tuple[StudySettings, object],
) -> None:
    # bench/study_month.py prices the month study from min_full_replays: it must count
    # what a study replays, not less (an optimistic bound) nor more.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from study_month import min_full_replays

    settings, report = halved
    per_rung = report.summary["fidelity"]["trials_per_rung"]
    assert per_rung == [12, 4, 2]
    trials = sum(n * f for n, f in zip(per_rung, (*settings.fidelity, 1.0), strict=True))
    bound = min_full_replays(12, settings.fidelity, 3, 2, 3, 2)
    # The trials' share is exactly what the study replayed (a sample of fraction f
    # counted as f), on its 2 training seeds ...
    holdout = bound - settings.replications * trials
    assert settings.replications * trials == pytest.approx(2 * (12 * 0.1 + 4 * 0.3 + 2 * 1.0))
    # ... and the holdout's is the base config and both candidates on the 3 selection
    # seeds, the winner and the base config on the 3 reporting seeds. A study replays no
    # more; fewer where configs coincide (a pair (config, seed) is replayed once; this
    # study's holdout replayed 9).
    assert holdout == pytest.approx(3 + 2 * 3 + 3 + 3)
    assert report.summary["holdout_runs"] <= holdout
