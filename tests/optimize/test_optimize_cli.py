"""The ``optimize`` command: run --json, show, export, bad input, and SIGKILL then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from optimize import open_storage
from router import load_config
from router.live import Router

FAST = ["--replications", "1", "--holdout-replications", "2", "--top-k", "1"]


def optimize(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimize.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_json_show_and_export(tmp_path: Path, small_trace_file: Path) -> None:
    res = optimize("run", str(small_trace_file), "--trials", "6", "--json", *FAST, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["study"] == "routing"
    assert summary["storage"] == "studies/routing.journal"
    assert summary["objective"] == "net_value"
    assert summary["trials"] == 6
    for key in (
        "best_trial",
        "holdout_value",
        "holdout_ci_low",
        "holdout_ci_high",
        "improvement_vs_base",
        "improvement_ci_low",
        "improvement_ci_high",
    ):
        assert isinstance(summary[key], int | float)
    out = tmp_path / "studies" / "routing"
    for name in ("history.png", "pareto.png", "importances.png", "tuned_vs_base.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text()) == summary
    tuned = load_config(out / "tuned.yaml")

    res = optimize("show", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["trials"] == 6
    assert shown["holdout"]["best_trial"] == summary["best_trial"]
    assert shown["pareto_front"]

    res = optimize("export", "--out", "best.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert load_config(tmp_path / "best.yaml") == tuned
    assert Router.from_config(tmp_path / "best.yaml").config == tuned
    res = optimize("export", "--trial", "0", "--format", "litellm", "--out", "l.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "router_settings:" in (tmp_path / "l.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.parquet"], "error: missing.parquet: no such file or directory"),
        (["run", "{trace}", "--trials", "0"], "error: --trials: expected an integer >= 1, got 0"),
        (["run", "{trace}", "--trials", "x"], "error: Invalid value for '--trials'"),
        (["run", "{trace}", "--preset", "cheap"], "error: preset: unknown preset 'cheap'"),
        (["run", "{trace}", "--sampler", "sa"], "error: --sampler: unknown sampler 'sa'"),
        (
            ["run", "{trace}", "--max-cost-per-task", "-1"],
            "error: constraints.max_cost_per_task: expected a number >= 0, got -1.0",
        ),
        (["run", "{trace}", "--study", "a b"], "error: --study: expected a name of letters"),
        (["show", "--study", "nope"], "error: --storage: studies/nope.journal: no such study"),
        (["export", "--out", "x.yaml", "--format", "csv"], "error: --format: unknown format 'csv'"),
        (["run", "{trace}", "--out", "{file}/sub"], "error: --out: {file}/sub: cannot create"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, small_trace_file: Path, args: list[str], message: str
) -> None:
    (tmp_path / "plain").write_text("not a directory\n")
    args = [a.replace("{trace}", str(small_trace_file)).replace("{file}", "plain") for a in args]
    message = message.replace("{file}", "plain")
    res = optimize(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(message), res.stderr
    assert res.stderr.count("\n") == 1
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.yaml").exists()
    assert not (tmp_path / "studies").exists()  # nothing run, nothing written


def test_export_to_a_directory_is_refused(tmp_path: Path, small_trace_file: Path) -> None:
    res = optimize("run", str(small_trace_file), "--trials", "2", "--json", *FAST, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (tmp_path / "adir").mkdir()
    res = optimize("export", "--out", "adir", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == "error: --out: adir: is a directory; expected a file path\n"
    assert list((tmp_path / "adir").iterdir()) == []


def test_sigkill_mid_study_loses_no_completed_trial(tmp_path: Path, small_trace_file: Path) -> None:
    journal = tmp_path / "studies" / "routing.journal"
    args = ["run", str(small_trace_file), "--trials", "40", "--no-prune", *FAST]
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimize.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    complete = optuna.trial.TrialState.COMPLETE
    before: dict[int, tuple[float, dict]] = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not journal.exists():
                continue
            study = optuna.load_study(study_name="routing", storage=open_storage(str(journal)))
            done = [t for t in study.trials if t.state == complete]
            if len(done) >= 4:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # Read the journal after the kill: what was complete then must survive the resume.
    study = optuna.load_study(study_name="routing", storage=open_storage(str(journal)))
    before = {t.number: (t.value, t.params) for t in study.trials if t.state == complete}
    assert 4 <= len(before) < 40

    res = optimize(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name="routing", storage=open_storage(str(journal)))
    after = {t.number: (t.value, t.params) for t in study.trials if t.state == complete}
    assert {n: after[n] for n in before} == before
    assert len(after) == 40
    states = {t.state for t in study.trials}
    # A trial cut by the kill is marked FAIL on resume, never left RUNNING.
    assert optuna.trial.TrialState.RUNNING not in states
