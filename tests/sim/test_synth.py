"""Synthetic traces: schema, determinism, and the statistics of each arrival process.

Statistical tolerances are computed from the sample size (z = 4.5 standard errors:
a correct generator fails with probability below 1e-5 per check, and the seeds
are fixed anyway).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl
import pytest

from router.errors import InputError
from router.task import TASK_TYPES
from sim.traces.synth import (
    AZURE_CODE_COMPLETION_TOKENS,
    AZURE_CODE_PROMPT_TOKENS,
    DEFAULT_MIX,
    TokenDist,
    draw_task_types,
    rng_streams,
    synthesize,
    validate_mix,
)
from sim.traces.tasks import REQUIRED_COLUMNS, read_trace, validate_trace, write_trace

Z = 4.5
DAY = 86_400.0
REPO = Path(__file__).resolve().parents[2]


def load_regenerate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "traces" / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def window_counts(arrivals: np.ndarray, width: float, duration: float) -> np.ndarray:
    return np.bincount((arrivals // width).astype(np.int64), minlength=int(duration // width))


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("arrival", ["poisson", "bursty", "diurnal"])
def test_output_is_a_valid_trace(arrival: str) -> None:
    df = synthesize(n_tasks=500, arrival=arrival, seed=1)  # type: ignore[arg-type]
    assert df.schema == pl.Schema(REQUIRED_COLUMNS)
    assert df.height == 500
    assert validate_trace(df).equals(df)
    assert df["arrival_s"].is_sorted()
    assert df["task_id"].to_list()[:2] == ["synth-000001", "synth-000002"]
    assert df["task_id"][-1] == "synth-000500"
    assert set(df["task_type"]) <= set(TASK_TYPES)
    assert df["prompt_tokens"].min() >= 1
    assert df["prompt_tokens"].max() <= 7437
    assert df["completion_tokens"].min() >= 1


def test_duration_bounds_the_arrivals_and_both_limits_combine() -> None:
    df = synthesize(duration_s=3_600.0, seed=2)
    assert df["arrival_s"].max() < 3_600.0
    first = synthesize(duration_s=3_600.0, n_tasks=100, seed=2)
    assert first.height == 100
    assert first.equals(df.head(100))  # every stream is drawn in order: a prefix
    tight = synthesize(duration_s=10.0, n_tasks=10_000, seed=2)
    assert tight.height < 10_000
    assert tight["arrival_s"].max() < 10.0


def test_a_short_duration_can_give_an_empty_typed_frame() -> None:
    df = synthesize(duration_s=1e-6, rate_per_s=1e-3, seed=0)
    assert df.height == 0
    assert df.schema == pl.Schema(REQUIRED_COLUMNS)


def test_id_prefix() -> None:
    assert synthesize(n_tasks=1, seed=0, id_prefix="x-")["task_id"].to_list() == ["x-000001"]


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("arrival", ["poisson", "bursty", "diurnal"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, arrival: str) -> None:
    kwargs = {"duration_s": 20_000.0, "arrival": arrival}
    a = write_trace(synthesize(seed=7, **kwargs), tmp_path / "a.parquet")  # type: ignore[arg-type]
    b = write_trace(synthesize(seed=7, **kwargs), tmp_path / "b.parquet")  # type: ignore[arg-type]
    c = write_trace(synthesize(seed=8, **kwargs), tmp_path / "c.parquet")  # type: ignore[arg-type]
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert not read_trace(a)["arrival_s"].equals(read_trace(c)["arrival_s"])


def test_streams_are_independent_common_random_numbers() -> None:
    base = synthesize(n_tasks=2_000, arrival="bursty", seed=3)
    other_mix = synthesize(n_tasks=2_000, arrival="bursty", seed=3, mix={"sql": 1.0})
    assert other_mix["arrival_s"].equals(base["arrival_s"])
    assert other_mix["prompt_tokens"].equals(base["prompt_tokens"])
    assert set(other_mix["task_type"]) == {"sql"}
    longer = synthesize(n_tasks=3_000, arrival="bursty", seed=3)
    assert longer.head(2_000)["task_type"].equals(base["task_type"])


def test_a_generator_seed_is_accepted_and_consumed() -> None:
    rng = np.random.default_rng(5)
    first = synthesize(n_tasks=50, seed=rng)
    second = synthesize(n_tasks=50, seed=rng)
    assert not first["arrival_s"].equals(second["arrival_s"])
    again = synthesize(n_tasks=50, seed=np.random.default_rng(5))
    assert again.equals(first)


def test_rng_streams() -> None:
    a = [g.random() for g in rng_streams(11, 3)]
    b = [g.random() for g in rng_streams(11, 3)]
    assert a == b
    assert len(set(a)) == 3


# --------------------------------------------------------------------------- arrival statistics


def test_poisson_count_over_a_duration_matches_the_rate() -> None:
    rate, duration = 0.25, 200_000.0
    n = synthesize(duration_s=duration, rate_per_s=rate, seed=10).height
    expected = rate * duration
    assert abs(n - expected) < Z * math.sqrt(expected)


def test_poisson_time_to_n_arrivals_matches_the_rate() -> None:
    rate, n = 3.0, 40_000
    last = synthesize(n_tasks=n, rate_per_s=rate, seed=11)["arrival_s"][-1]
    # The n-th arrival time is Gamma(n, rate): mean n / rate, sd sqrt(n) / rate.
    assert abs(last - n / rate) < Z * math.sqrt(n) / rate


def test_poisson_gaps_are_exponential() -> None:
    rate, n = 0.5, 20_000
    gaps = np.diff(synthesize(n_tasks=n, rate_per_s=rate, seed=12)["arrival_s"].to_numpy())
    # The coefficient of variation of exponential gaps is 1; its standard error is
    # about 1 / sqrt(n) for large n.
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1.0) < Z / math.sqrt(gaps.size)


def test_index_of_dispersion_poisson_about_one_bursty_above() -> None:
    duration, width = 2 * DAY, 60.0
    poisson = synthesize(duration_s=duration, arrival="poisson", seed=13)["arrival_s"].to_numpy()
    bursty = synthesize(duration_s=duration, arrival="bursty", seed=13)["arrival_s"].to_numpy()
    counts_p = window_counts(poisson, width, duration)
    counts_b = window_counts(bursty, width, duration)
    k = counts_p.size
    # For Poisson counts, var/mean has standard error about sqrt(2 / (k - 1)).
    tolerance = Z * math.sqrt(2.0 / (k - 1))
    idc_p = counts_p.var(ddof=1) / counts_p.mean()
    idc_b = counts_b.var(ddof=1) / counts_b.mean()
    assert abs(idc_p - 1.0) < tolerance
    assert idc_b > 1.0 + tolerance
    # The bursty process keeps its long-run mean rate (its counts are overdispersed,
    # so the tolerance uses its own variance).
    assert abs(bursty.size - 0.25 * duration) < Z * math.sqrt(idc_b * 0.25 * duration)


def test_bursty_is_poisson_when_the_burst_ratio_is_one() -> None:
    duration = 2 * DAY
    arrivals = synthesize(duration_s=duration, arrival="bursty", burst_ratio=1.0, seed=14)
    counts = window_counts(arrivals["arrival_s"].to_numpy(), 60.0, duration)
    assert abs(counts.var(ddof=1) / counts.mean() - 1.0) < Z * math.sqrt(2.0 / (counts.size - 1))


def test_diurnal_has_more_arrivals_near_the_peak_than_the_trough() -> None:
    rate, days, half = 0.25, 2, 3 * 3_600.0
    df = synthesize(duration_s=days * DAY, arrival="diurnal", rate_per_s=rate, seed=15)
    hour_of_day = (df["arrival_s"].to_numpy() % DAY) / 3_600.0

    def within_3h_of(hour: float) -> int:
        distance = np.abs(hour_of_day - hour)
        return int(np.sum(np.minimum(distance, 24.0 - distance) < 3.0))  # around the clock

    near_peak, near_trough = within_3h_of(14.0), within_3h_of(2.0)
    assert near_peak > near_trough
    # Expected counts: rate * integral over +-3 h of 1 +- a cos(2 pi u / day).
    a = (3.0 - 1.0) / (3.0 + 1.0)
    swing = a * DAY / math.pi * math.sin(2 * math.pi * half / DAY)
    expected_peak = days * rate * (2 * half + swing)
    expected_trough = days * rate * (2 * half - swing)
    assert abs(near_peak - expected_peak) < Z * math.sqrt(expected_peak)
    assert abs(near_trough - expected_trough) < Z * math.sqrt(expected_trough)
    expected_total = days * DAY * rate
    assert abs(df.height - expected_total) < Z * math.sqrt(expected_total)


# --------------------------------------------------------------------------- types and sizes


def test_default_mix_proportions() -> None:
    n = 50_000
    df = synthesize(n_tasks=n, seed=16)
    counts = dict(df["task_type"].value_counts().iter_rows())
    assert set(counts) == set(DEFAULT_MIX)
    for task_type, p in DEFAULT_MIX.items():
        assert abs(counts[task_type] - n * p) < Z * math.sqrt(n * p * (1 - p)), task_type


def test_custom_mix_weights_are_relative_and_zero_never_drawn() -> None:
    df = synthesize(n_tasks=5_000, seed=17, mix={"regex": 3, "sql": 1, "json": 0})
    counts = dict(df["task_type"].value_counts().iter_rows())
    assert set(counts) == {"regex", "sql"}
    assert abs(counts["regex"] - 3_750) < Z * math.sqrt(5_000 * 0.75 * 0.25)


def test_token_sizes_follow_the_azure_fit() -> None:
    n = 40_000
    df = synthesize(n_tasks=n, seed=18)
    for column, dist, data_median in (
        ("prompt_tokens", AZURE_CODE_PROMPT_TOKENS, 1_469),
        ("completion_tokens", AZURE_CODE_COMPLETION_TOKENS, 13),
    ):
        assert math.exp(dist.mu) == pytest.approx(data_median, rel=1e-3)
        # The sample median of a lognormal has log-scale sd sqrt(pi / 2) sigma / sqrt(n);
        # +-1 for the rounding to whole tokens.
        tolerance = Z * math.sqrt(math.pi / 2) * dist.sigma / math.sqrt(n)
        median = float(np.median(df[column].to_numpy()))
        assert abs(math.log(median) - dist.mu) < tolerance + 1.0 / median, column


def test_token_dist_draw_and_validation() -> None:
    draws = TokenDist(mu=3.0, sigma=0.0, low=0, high=None).draw(np.random.default_rng(0), 4)
    assert draws.tolist() == [20, 20, 20, 20]  # round(e**3)
    clipped = TokenDist(mu=10.0, sigma=1.0, low=1, high=50).draw(np.random.default_rng(0), 100)
    assert clipped.max() == 50
    assert clipped.dtype == np.int64
    for kwargs, text in (
        ({"mu": float("nan"), "sigma": 1.0}, "TokenDist.mu"),
        ({"mu": 1.0, "sigma": -1.0}, "TokenDist.sigma"),
        ({"mu": 1.0, "sigma": 1.0, "low": -1}, "TokenDist.low"),
        ({"mu": 1.0, "sigma": 1.0, "low": 5, "high": 4}, "TokenDist.high"),
    ):
        with pytest.raises(InputError, match=text):
            TokenDist(**kwargs)  # type: ignore[arg-type]


def test_draw_task_types_and_validate_mix() -> None:
    types, probs = validate_mix({"a": 1, "b": 3})
    assert types == ["a", "b"]
    assert probs.tolist() == [0.25, 0.75]
    drawn = draw_task_types(np.random.default_rng(0), 10, {"only": 2.0})
    assert drawn == ["only"] * 10


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "n_tasks/duration_s: expected at least one of them, got neither"),
        ({"n_tasks": 0}, "n_tasks: expected an integer >= 1, got 0"),
        ({"n_tasks": 2.5}, "n_tasks: expected an integer >= 1, got 2.5"),
        ({"n_tasks": True}, "n_tasks: expected an integer >= 1, got True"),
        ({"duration_s": -5.0}, "duration_s: expected a finite number > 0, got -5.0"),
        ({"duration_s": math.inf}, "duration_s: expected a finite number > 0, got inf"),
        ({"n_tasks": 5, "rate_per_s": -1.0}, "rate_per_s: expected a finite number > 0, got -1.0"),
        ({"n_tasks": 5, "rate_per_s": 0}, "rate_per_s: expected a finite number > 0, got 0"),
        (
            {"n_tasks": 5, "rate_per_s": math.nan},
            "rate_per_s: expected a finite number > 0, got nan",
        ),
        (
            {"n_tasks": 5, "arrival": "weird"},
            "arrival: expected one of poisson, bursty, diurnal, got 'weird'",
        ),
        ({"n_tasks": 5, "mix": {}}, "mix: expected at least one task type, got an empty mix"),
        ({"n_tasks": 5, "mix": {"sql": -1}}, "mix['sql']: expected a finite weight >= 0, got -1"),
        ({"n_tasks": 5, "mix": {"sql": "x"}}, "mix['sql']: expected a finite weight >= 0, got 'x'"),
        (
            {"n_tasks": 5, "mix": {"sql": 0, "json": 0.0}},
            "mix: expected weights summing to a positive number, got 0.0",
        ),
        ({"n_tasks": 5, "mix": {"": 1}}, "mix: expected non-empty task type names, got ''"),
        (
            {"n_tasks": 5, "mix": ["sql"]},
            "mix: expected a mapping of task type to weight, got ['sql']",
        ),
        ({"n_tasks": 5, "burst_ratio": 0.5}, "burst_ratio: expected a finite number >= 1, got 0.5"),
        ({"n_tasks": 5, "mean_calm_s": 0}, "mean_calm_s: expected a finite number > 0, got 0"),
        ({"n_tasks": 5, "mean_burst_s": -1}, "mean_burst_s: expected a finite number > 0, got -1"),
        (
            {"n_tasks": 5, "peak_to_trough": 0.9},
            "peak_to_trough: expected a finite number >= 1, got 0.9",
        ),
        ({"n_tasks": 5, "peak_hour": 24}, "peak_hour: expected a number in [0, 24), got 24"),
        ({"n_tasks": 5, "peak_hour": -1}, "peak_hour: expected a finite number >= 0, got -1"),
        (
            {"n_tasks": 5, "prompt_tokens": (7.0, 1.0)},
            "prompt_tokens: expected a TokenDist, got (7.0, 1.0)",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(InputError) as excinfo:
        synthesize(seed=0, **kwargs)  # type: ignore[arg-type]
    assert str(excinfo.value) == expected


@pytest.mark.parametrize("seed", [-1, "0", 1.5, None])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(InputError, match=r"^seed: expected an integer >= 0 or a numpy Generator"):
        synthesize(n_tasks=5, seed=seed)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shipped trace


def test_shipped_synthetic_trace_is_what_the_code_generates() -> None:
    regenerate = load_regenerate()
    shipped = read_trace(REPO / "traces" / "synthetic_2d.parquet")
    assert shipped.equals(regenerate.build_synthetic())
    assert regenerate.SYNTHETIC_PARAMS["duration_s"] == 2 * DAY
    assert shipped["arrival_s"].max() < 2 * DAY
    expected = 0.25 * 2 * DAY
    assert abs(shipped.height - expected) < Z * math.sqrt(expected)
