"""A month of traffic tuned in one study: multi-fidelity against full fidelity.

1. The trace: ``--days`` (30) of diurnal synthetic traffic (``sim.synthesize``,
   ``arrival="diurnal"``) at the shipped Azure code trace's mean rate
   (``traces/azure_code_2023.parquet``: tasks / span, about 2.57 tasks/s, so about
   6.7M tasks in 30 days) times ``--scale``. The seed config's daily cap ($500)
   was set for far less traffic and would reject most of a month (the summary
   would be fast and cheap for the wrong reason), so it is scaled to the trace:
   1.25 x the base config's cost per task (a replay of the first 20,000 tasks,
   cap lifted) x the trace's tasks per day.
2. The month study: ``--trials`` (100) trials, ``--jobs`` (2) workers, the default
   study (net_value, TPE, 3 training seeds, top 5 re-run on 10 selection seeds and
   the winner on 10 reporting seeds, racing on) with the fidelity schedule
   ``--fidelity`` (0.01,0.03,0.1; synchronous successive halving, reduction factor 3;
   the fastest of the schedules measured on the 1M slice, see docs/guide.md). Wall
   time and peak RSS (this process and its forked workers). ``--replications``,
   ``--holdout-replications`` and ``--top-k`` change the protocol (for every study
   here); ``--month-only`` stops after the month study.
3. The first ``--slice`` (1,000,000) tasks: the same study at full fidelity (every
   trial on the whole slice; the default median pruning on replications) and
   multi-fidelity, the same trial budget and workers. ``mf_speedup_1m`` is the
   ratio of the trial phases' wall times (``seconds_study``: what the schedule
   changes; both holdouts replay the full slice alike), ``mf_speedup_1m_total``
   that of the whole studies. The two winners are compared on the reporting seeds
   they were reported on (the same seeds and traffic: common random numbers):
   ``mf_vs_full_netvalue_diff`` is the mean of (multi-fidelity winner - full
   winner), ``mf_vs_full_ci_low``/``_high`` its paired 95% CI; the target is a CI
   that includes 0 or lies above it. ``--fidelity`` may be repeated: every schedule
   is then compared with the one full-fidelity study (one line each, then the last
   line's headline keys for the first schedule and ``schedules`` for the others),
   which saves re-running the slow full study per schedule.

Last line::

    {"month_study_s": ..., "month_tasks": ..., "peak_rss_mib": ..., "mf_speedup_1m": ...,
     "mf_vs_full_netvalue_diff": ..., "mf_vs_full_ci_low": ..., ...}

Before the month study, a lower bound on its time (``month_floor_bound_s``): the
fewest full-trace replays the study can make (:func:`min_full_replays`: the halving
schedule's trials on the training seeds, plus the holdout's least with racing), each
priced at the bare-SimPy floor (``bench/sim_throughput.py``: one process and one
timeout per task, measured here on the month's first 200,000 arrivals), spread
perfectly over the workers: what the study would take if routing cost nothing.
``--bound-only`` prints it and stops.

Targets: month study <= 15 min on a 2-core machine; mf_speedup_1m >= 5 with
mf_vs_full_ci_high >= 0. A smoke run::

    python bench/study_month.py --days 1 --scale 0.05 --trials 8 --slice 5000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from optimize import StudySettings, parse_fidelity, run_study  # noqa: E402
from optimize.halving import batch_size, kept  # noqa: E402
from optimize.study import RACE_MIN_SEEDS  # noqa: E402
from router import load_seed_config  # noqa: E402
from sim import (  # noqa: E402
    ReplayColumns,
    load_seed_scenario,
    paired_difference,
    read_trace,
    replay,
    replay_columns,
    synthesize,
)

DAY_S = 86_400.0
sys.path.insert(0, str(ROOT / "bench"))
from sim_throughput import BASELINE_MEAN_SERVICE_S, floor_run, head_of  # noqa: E402


def azure_rate() -> float:
    """Tasks per second of the shipped Azure code trace (tasks / time span)."""
    df = read_trace(ROOT / "traces" / "azure_code_2023.parquet")
    a = df.get_column("arrival_s")
    return len(df) / float(a.max() - a.min())


def scaled_config(cols: ReplayColumns, days: float):  # noqa: ANN201 - RouterConfig
    """The seed config with its daily cap scaled to the trace (module docstring)."""
    base = load_seed_config()
    lifted = base.model_copy(
        update={"budget": base.budget.model_copy(update={"daily_cap_usd": None})}
    )
    probe = head_of(cols, 20_000)
    s = replay(
        traces=[("probe", probe)],
        config=lifted,
        scenario=load_seed_scenario(),
        seed=0,
        figures=False,
    ).per_seed[0]
    per_day = len(cols.task_ids) / days
    cap = 1.25 * float(s["cost_per_task"]) * per_day
    return base.model_copy(update={"budget": base.budget.model_copy(update={"daily_cap_usd": cap})})


def min_full_replays(
    trials: int,
    schedule: tuple[float, ...],
    reduction_factor: int,
    replications: int,
    holdout: int,
    top_k: int,
) -> float:
    """The fewest replays of the whole trace a study can make, a replay of a fraction
    f counted as f: every trial of every rung of synchronous successive halving
    (batches of ``batch_size`` trials, ``kept`` of each rung going on; the full trace
    last) on ``replications`` training seeds, then the holdout with racing at its
    cheapest: the base config and the leader on all ``holdout`` selection seeds, the
    other ``top_k - 1`` candidates stopped after RACE_MIN_SEEDS, the winner and the
    base config on the ``holdout`` reporting seeds (all of them distinct configs: a
    pair (config, seed) is replayed once, so a winner that is the base config costs
    less)."""
    fractions = (*schedule, 1.0)
    size = batch_size(schedule, reduction_factor) if schedule else trials
    work, left = 0.0, trials
    while left > 0:
        n = min(size, left)
        left -= n
        for k, f in enumerate(fractions):
            work += n * f
            if k < len(fractions) - 1:
                n = kept(n, reduction_factor)
    work *= replications
    raced = (top_k - 1) * min(RACE_MIN_SEEDS, holdout)
    return work + 2 * holdout + raced + 2 * holdout


def floor_us_per_task(arrival_s: list[float], seed: int) -> float:
    """Bare SimPy's cost per task (best of 3) on these arrivals, in microseconds."""
    best = min(floor_run(arrival_s, BASELINE_MEAN_SERVICE_S, seed) for _ in range(3))
    return 1e6 * best / len(arrival_s)


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def study(name: str, cols: ReplayColumns, base, args: argparse.Namespace, fidelity):  # noqa: ANN001, ANN201
    with tempfile.TemporaryDirectory() as d:
        settings = StudySettings(
            study=name,
            storage=str(Path(d) / f"{name}.journal"),
            base=base,
            trials=args.trials,
            jobs=args.jobs,
            seed=args.seed,
            replications=args.replications,
            holdout_replications=args.holdout_replications,
            top_k=args.top_k,
            fidelity=fidelity,
        )
        t0 = time.perf_counter()
        report = run_study([(name, cols)], load_seed_scenario(), settings)
        elapsed = time.perf_counter() - t0
    s = report.summary
    print(
        f"{name}: {len(cols.task_ids):,} tasks, {s['trials']} trials in {elapsed:.1f} s "
        f"(study {s['seconds_study']:.1f} s, holdout {s['seconds_holdout']:.1f} s, "
        f"{s['holdout_runs']} holdout replays, {s['stopped_candidates']} raced out); "
        f"{s['complete']} complete, {s['pruned']} pruned; fidelity {s['fidelity']}; "
        f"winner trial {s['best_trial']} net_value {s['holdout_value']:.5f} "
        f"(base {s['base_value']:.5f})",
        flush=True,
    )
    return elapsed, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--scale", type=float, default=1.0, help="times the Azure trace's rate")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--slice", type=int, default=1_000_000, help="tasks of the comparison")
    ap.add_argument(
        "--fidelity",
        action="append",
        help="a fidelity schedule (default 0.01,0.03,0.1); repeat it to compare several "
        "on the slice against one full-fidelity study (the first is the month's)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--replications",
        type=int,
        default=StudySettings.replications,
        help="training seeds per trial (the study's default)",
    )
    ap.add_argument("--holdout-replications", type=int, default=10)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument(
        "--skip-month", action="store_true", help="only the slice comparison (month_* null)"
    )
    ap.add_argument(
        "--month-only", action="store_true", help="only the month study (the slice's keys null)"
    )
    ap.add_argument(
        "--bound-only", action="store_true", help="print the month study's lower bound and stop"
    )
    args = ap.parse_args()
    for name in ("trials", "jobs", "replications", "holdout_replications", "top_k"):
        if getattr(args, name) < 1:  # a one-line refusal (exit 2), not a traceback mid-run
            ap.error(f"--{name.replace('_', '-')}: expected an integer >= 1")
    warnings.filterwarnings("ignore")
    schedules = [parse_fidelity(f) for f in (args.fidelity or ["0.01,0.03,0.1"])]
    fidelity = schedules[0]
    rate = azure_rate() * args.scale
    t0 = time.perf_counter()
    df = synthesize(duration_s=args.days * DAY_S, arrival="diurnal", rate_per_s=rate, seed=11)
    cols = replay_columns(df, compact=True)  # arrays: ~50 B a task, not ~300 as lists
    del df
    n = len(cols.task_ids)
    print(
        f"trace: {n:,} tasks over {args.days:g} days at {rate:.3f}/s "
        f"(made in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    base = scaled_config(cols, args.days)
    print(f"daily cap scaled to ${base.budget.daily_cap_usd:,.2f}", flush=True)
    replays = min_full_replays(
        args.trials,
        fidelity,
        3,
        args.replications,
        args.holdout_replications,
        args.top_k,
    )
    floor_us = floor_us_per_task([float(a) for a in cols.arrival_s[:200_000]], args.seed)
    bound_s = replays * n * floor_us / 1e6 / args.jobs
    print(
        f"bound: at least {replays:.1f} replays of the whole trace (trials and holdout), "
        f"bare SimPy {floor_us:.2f} us a task, {args.jobs} workers: >= {bound_s:,.0f} s "
        f"with routing free (target 900 s)",
        flush=True,
    )
    if args.bound_only:
        print(json.dumps({"month_floor_bound_s": round(bound_s, 1), "month_tasks": n}))
        return

    month_s: float | None = None
    if not args.skip_month:
        month_s, _ = study("month", cols, base, args, fidelity)
    rss = peak_rss_mib()
    if args.month_only:
        print(
            json.dumps(
                {
                    "month_study_s": None if month_s is None else round(month_s, 1),
                    "month_floor_bound_s": round(bound_s, 1),
                    "month_tasks": n,
                    "peak_rss_mib": round(rss, 1),
                    "mf_speedup_1m": None,
                    "mf_vs_full_netvalue_diff": None,
                    "mf_vs_full_ci_low": None,
                    "trials": args.trials,
                    "jobs": args.jobs,
                    "replications": args.replications,
                    "holdout_replications": args.holdout_replications,
                    "top_k": args.top_k,
                    "fidelity": list(fidelity),
                }
            )
        )
        return

    sl = head_of(cols, min(args.slice, n))
    del cols
    days_sl = (sl.arrival_s[-1] - sl.arrival_s[0]) / DAY_S if len(sl.task_ids) > 1 else 1.0
    base_sl = scaled_config(sl, max(days_sl, 1e-9))
    full_s, full = study("slice_full", sl, base_sl, args, ())
    compared = []
    for schedule in schedules:
        mf_s, mf = study("slice_mf", sl, base_sl, args, schedule)
        # Same reporting seeds, same slice: the winners' values pair seed by seed.
        d = paired_difference(full.holdout["values"], mf.holdout["values"])
        row = {
            "fidelity": list(schedule),
            "mf_speedup_1m": round(full.summary["seconds_study"] / mf.summary["seconds_study"], 2),
            "mf_speedup_1m_total": round(full_s / mf_s, 2),
            "mf_vs_full_netvalue_diff": d["diff"],
            "mf_vs_full_ci_low": d["diff_ci_low"],
            "mf_vs_full_ci_high": d["diff_ci_high"],
        }
        print(json.dumps(row), flush=True)
        compared.append(row)
    first = compared[0]
    out = {
        "month_study_s": None if month_s is None else round(month_s, 1),
        "month_floor_bound_s": round(bound_s, 1),
        "month_tasks": n,
        "peak_rss_mib": round(rss, 1),
        **{k: v for k, v in first.items() if k != "fidelity"},
        "slice_tasks": len(sl.task_ids),
        "trials": args.trials,
        "jobs": args.jobs,
        "fidelity": first["fidelity"],
        "schedules": compared[1:],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
