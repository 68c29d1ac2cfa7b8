"""Shared inputs for the optimizer tests: a small synthetic trace, the seed config."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from router import RouterConfig, load_seed_config
from sim import ReplayColumns, Scenario, load_seed_scenario, replay_columns, synthesize, write_trace


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    # Optuna flags multivariate TPE as experimental on every trial; the noise hides failures.
    warnings.filterwarnings("ignore", module="optuna")


@pytest.fixture(scope="session")
def seed_config() -> RouterConfig:
    return load_seed_config()


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    return load_seed_scenario()


@pytest.fixture(scope="session")
def small_cols() -> list[tuple[str, ReplayColumns]]:
    df = synthesize(n_tasks=600, rate_per_s=2.0, seed=5)
    return [("small", replay_columns(df))]


@pytest.fixture(scope="session")
def small_trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "small.parquet"
    write_trace(synthesize(n_tasks=400, rate_per_s=2.0, seed=6), path)
    return path
