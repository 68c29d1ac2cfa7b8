"""``--jobs N``: replications in forked processes give the same bytes as one process.

Run on slices of the shipped traces (the first 1,000 tasks of each file, so a run takes
a second or two). The task records are also checked against digests made by the engine
before it stopped running a SimPy process per task (commit 14a8263): the same seed
must keep giving the same tasks, whatever the engine's internals.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from router import RouterConfig, config_from_dict, seed_config_path
from sim.engine.replays import compare, dump_summary, load_traces, replay
from sim.engine.results import SCALAR_KEYS, combine
from sim.traces.tasks import read_trace, replay_columns, write_trace

ROOT = Path(__file__).resolve().parents[2]
SIM = [sys.executable, "-m", "sim.cli"]

# Made with the engine of commit 14a8263 (a SimPy process per task): the content of
# tasks.parquet (column names and values) and the summary without its "diagnosis"
# lines (that engine broke ties between replications' diagnoses by string hash order,
# which varied from process to process) for `replay(SLICES, seed=7, replications=2)`.
GOLDEN_TASKS = "1ea65eaf953bbf28ff29438d271597c5467d1235c5f14a447f12f22b967f1da4"
GOLDEN_SUMMARY = "f2eaa3027e67917dd562bf75ccdfdadf2fa13235627ba56ef39e1d04c9a6bb24"


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("shipped")
    out = []
    for name, stem in (("azure_code_2023", "azure_head"), ("synthetic_2d", "synthetic_head")):
        path = d / f"{stem}.parquet"
        write_trace(read_trace(ROOT / "traces" / f"{name}.parquet").head(1000), path)
        out.append(path)
    return out


def _content_digest(path: Path) -> str:
    table = pq.read_table(path)
    h = hashlib.sha256()
    for name in table.column_names:
        h.update(name.encode())
        h.update(repr(table.column(name).to_pylist()).encode())
    return h.hexdigest()


def _summary_digest(text: str) -> str:
    kept = "\n".join(line for line in text.splitlines() if '"diagnosis"' not in line)
    return hashlib.sha256(kept.encode()).hexdigest()


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIM, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def test_jobs_2_writes_the_bytes_of_jobs_1(slices: list[Path], tmp_path: Path) -> None:
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        # What `sim replay --out` runs, without the figures (matplotlib would take most
        # of this test's time; the figures do not depend on --jobs).
        replay(slices, seed=7, replications=2, out=out, figures=False, jobs=jobs)
        outs[jobs] = out
    one, two = outs[1], outs[2]
    assert (one / "tasks.parquet").read_bytes() == (two / "tasks.parquet").read_bytes()
    assert (one / "summary.json").read_bytes() == (two / "summary.json").read_bytes()
    # The same tasks as the engine that ran a SimPy process per task.
    assert _content_digest(one / "tasks.parquet") == GOLDEN_TASKS
    assert _summary_digest((one / "summary.json").read_text(encoding="utf-8")) == GOLDEN_SUMMARY
    # Rows come in replication order, and the replications differ (their own seeds).
    table = pq.read_table(one / "tasks.parquet").to_pydict()
    reps = table["replication"]
    assert reps == sorted(reps) and set(reps) == {0, 1}
    assert table["seed"][0] == 7 and table["seed"][-1] == 8
    half = len(reps) // 2
    assert table["latency_s"][:half] != table["latency_s"][half:]
    # The command line: --jobs 2 prints the summary of --jobs 1, byte for byte.
    for jobs in (1, 2):
        done = _sim(
            "replay", *map(str, slices), "--seed", "7", "--replications", "2",
            "--jobs", str(jobs), "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == (one / "summary.json").read_text(encoding="utf-8")


def test_one_stream_replicas_and_compare_do_not_depend_on_jobs(
    slices: list[Path], tmp_path: Path
) -> None:
    heads = [read_trace(path).head(500) for path in slices]
    traces = [(name, replay_columns(df)) for name, df in zip("ab", heads, strict=True)]
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"stream{jobs}"
        report = replay(
            traces=traces, seed=3, replications=2, out=out, figures=False,
            one_stream=True, replicas=2, spread="random", jobs=jobs,
        )  # fmt: skip
        runs[jobs] = (dump_summary(report.summary), (out / "tasks.parquet").read_bytes())
    assert runs[1] == runs[2]
    summary = json.loads(runs[1][0])
    assert summary["mode"] == "one_stream" and summary["spread"] == "random"
    assert summary["replications"] == 2
    config_a, config_b = _two_configs()
    a = compare(config_a, config_b, traces, seed=5, replications=2, jobs=1)
    b = compare(config_a, config_b, traces, seed=5, replications=2, jobs=2)
    assert a == b
    assert a["cost_usd"]["diff"] != 0.0  # the two configs do differ


def _two_configs() -> tuple[RouterConfig, RouterConfig]:
    """The seed config, and the same with every chain reversed."""
    data = yaml.safe_load(seed_config_path().read_text(encoding="utf-8"))
    base = config_from_dict(data, "seed")
    for route in data["routes"].values():
        route["chain"] = list(reversed(route["chain"]))
    return base, config_from_dict(data, "reversed chains")


def test_tied_diagnoses_go_to_the_first_replication() -> None:
    def run(diagnosis: str) -> dict:
        return {**dict.fromkeys(SCALAR_KEYS, 1.0), "per_model": {}, "diagnosis": diagnosis}

    first, second = "29% of failures: a", "32% of failures: b"
    assert combine([run(first), run(second)])["diagnosis"] == first
    assert combine([run(second), run(first)])["diagnosis"] == second
    assert combine([run(second), run(first), run(first)])["diagnosis"] == first


def test_jobs_below_one_is_refused(slices: list[Path]) -> None:
    with pytest.raises(ValueError, match="jobs: expected an integer >= 1, got 0"):
        replay(traces=load_traces(slices[:1]), jobs=0)
    done = _sim("replay", str(slices[0]), "--jobs", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
