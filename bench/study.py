"""Wall time of a 100-trial study with 1 and with 2 worker processes.

The trace is the first 20,000 tasks of ``traces/synthetic_2d.parquet``; the
study is the default one (net_value, TPE, 3 CRN replications per trial, holdout
of the top 5 on 10 held-out seeds), on a fresh journal file each time, but
without pruning: which trials get pruned depends on the order trials finish in,
so with pruning the two runs would not do the same work. Both runs happen in
this process, one after the other. The speed-up can exceed 2: each worker's
sampler draws its own configs, and configs differ in how much simulating they
cost. Last line::

    {"trials_per_min_1": ..., "trials_per_min_2": ..., "speedup": ...,
     "seconds_1": ..., "seconds_2": ...}

    python bench/study.py [--trials 100] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from optimize import StudySettings, run_study  # noqa: E402
from router import load_seed_config  # noqa: E402
from sim import ReplayColumns, load_seed_scenario, load_traces  # noqa: E402


def trace(n: int) -> list[tuple[str, ReplayColumns]]:
    ((_, c),) = load_traces([ROOT / "traces" / "synthetic_2d.parquet"])
    cols = ReplayColumns(
        c.task_ids[:n],
        c.arrival_s[:n],
        c.task_types[:n],
        c.prompt_tokens[:n],
        c.completion_tokens[:n],
    )
    return [(f"synthetic_2d[:{n}]", cols)]


def timed(jobs: int, trials: int, traces: list[tuple[str, ReplayColumns]]) -> float:
    with tempfile.TemporaryDirectory() as d:
        settings = StudySettings(
            study="bench",
            storage=str(Path(d) / "bench.journal"),
            base=load_seed_config(),
            trials=trials,
            jobs=jobs,
            prune=False,
        )
        t0 = time.perf_counter()
        report = run_study(traces, load_seed_scenario(), settings)
        elapsed = time.perf_counter() - t0
        assert report.summary["trials"] == trials, report.summary["trials"]
        print(
            f"jobs={jobs}: {trials} trials in {elapsed:.1f} s "
            f"({report.summary['complete']} complete, {report.summary['pruned']} pruned), "
            f"holdout improvement {report.summary['improvement_vs_base']:+.5f}",
            flush=True,
        )
        return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=20_000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    traces = trace(args.tasks)
    t1 = timed(1, args.trials, traces)
    t2 = timed(2, args.trials, traces)
    print(
        json.dumps(
            {
                "trials_per_min_1": round(args.trials / t1 * 60, 2),
                "trials_per_min_2": round(args.trials / t2 * 60, 2),
                "speedup": round(t1 / t2, 3),
                "seconds_1": round(t1, 1),
                "seconds_2": round(t2, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
