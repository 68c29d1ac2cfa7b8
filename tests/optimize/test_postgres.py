"""Workers sharing one study through a real PostgreSQL server (issue 4, item 7).

Needs ``COSTROUTE_PG_URL`` (``postgresql://user:password@127.0.0.1:PORT/db``):
``.ci/run`` starts a throwaway server and sets it; locally, run the tests under
``.ci/postgres.sh .venv/bin/python -m pytest tests/optimize/test_postgres.py``.

What the code guarantees (optimize/study.py, ``_worker``): a worker starts a
trial only while the study holds fewer than N finished (COMPLETE or PRUNED)
trials, and each worker has at most one trial in flight. Forked workers of one
``optimize run --jobs J`` also share a slot counter of N - finished, so one
invocation ends with exactly N. Workers of separate invocations (separate
machines) share only the storage: when the last trial is started at most
N - 1 trials are finished and at most W - 1 others are running, so W workers
in all end with N .. N + W - 1 finished trials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from optimize import open_storage
from sim import synthesize, write_trace

PG_URL = os.environ.get("COSTROUTE_PG_URL", "")

pytestmark = pytest.mark.skipif(
    not PG_URL,
    reason="COSTROUTE_PG_URL is unset: no PostgreSQL server to test against "
    "(.ci/run starts one; locally: .ci/postgres.sh .venv/bin/python -m pytest ...)",
)

TRIALS = 12
RUN_ARGS = ("--replications", "2", "--holdout-replications", "2", "--top-k", "1", "--json")


# Written as the README writes it: open_storage picks the installed driver (psycopg2).
URL = PG_URL


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pg") / "small.parquet"
    write_trace(synthesize(n_tasks=300, rate_per_s=2.0, seed=11), path)
    return path


@pytest.fixture
def study_name() -> Iterator[str]:
    import optuna

    name = f"pg-{uuid.uuid4().hex[:12]}"
    yield name
    try:  # the database may outlive the test run (a developer's own server)
        optuna.delete_study(study_name=name, storage=open_storage(URL))
    except KeyError:
        pass


def start(trace: Path, study: str, trials: int, jobs: int, out: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "optimize.cli", "run", str(trace), "--study", study]
    cmd += ["--storage", URL, "--trials", str(trials), "--jobs", str(jobs), "--out", str(out)]
    return subprocess.Popen(
        [*cmd, *RUN_ARGS],
        cwd=out.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, f"exit {proc.returncode}: {stderr.strip()[-2000:]}"
    return json.loads(stdout)


def trials_of(study: str) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=open_storage(URL)).get_trials(deepcopy=False)


def check_numbers_and_states(trials: list[Any]) -> int:
    """Every trial number once, none running or failed; returns the finished count.

    Trials still WAITING are enqueued neighbours of the base config that the
    requested number of trials did not reach: they are not trials that ran.
    """
    import optuna

    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), numbers
    TS = optuna.trial.TrialState
    states = [t.state.name for t in trials]
    assert all(t.state in (TS.COMPLETE, TS.PRUNED, TS.WAITING) for t in trials), states
    return sum(t.state in (TS.COMPLETE, TS.PRUNED) for t in trials)


def workers(trials: list[Any]) -> set[str]:
    return {str(t.user_attrs["worker"]) for t in trials if "worker" in t.user_attrs}


def test_one_run_with_two_jobs_ends_with_exactly_the_requested_trials(
    trace: Path, study_name: str, tmp_path: Path
) -> None:
    summary = finish(start(trace, study_name, TRIALS, 2, tmp_path / "out"))
    trials = trials_of(study_name)
    assert check_numbers_and_states(trials) == TRIALS
    assert summary["trials"] == TRIALS
    password = urlsplit(URL).password
    assert password and password not in summary["storage"] and "***" in summary["storage"]
    assert len(workers(trials)) == 2  # both forked workers ran trials


def test_two_separate_processes_share_one_study(
    trace: Path, study_name: str, tmp_path: Path
) -> None:
    # Two machines start on a new study at the same moment: one creates it (its
    # definition, the base config and its neighbours enqueued), the other waits for
    # the definition, then both take trials.
    procs = [start(trace, study_name, TRIALS, 1, tmp_path / f"machine{i}") for i in (1, 2)]
    summaries = [finish(p) for p in procs]

    trials = trials_of(study_name)
    finished = check_numbers_and_states(trials)
    assert TRIALS <= finished <= TRIALS + 1  # two workers: N .. N + W - 1
    assert all(TRIALS <= s["trials"] <= finished for s in summaries)
    ran = {w.rsplit(":", 1)[1] for w in workers(trials)}
    assert {str(p.pid) for p in procs} <= ran  # both processes ran trials


def test_plain_postgresql_url_opens() -> None:
    """``postgresql://user:password@host/db``, as the docs write it, with the test extra."""
    from optimize.storage import open_storage

    open_storage(PG_URL).get_all_studies()
