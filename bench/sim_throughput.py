"""Simulator throughput: routed tasks per second, against bare SimPy, and memory.

Measurements in one run:

1. *Routed*: a seeded synthetic trace (:func:`sim.traces.synth.synthesize`, default 100,000
   Poisson tasks at 2.5 tasks/s, about the Azure code trace's rate) replayed with
   :func:`sim.engine.replays.run_trace` through 5-model chains of the seed catalog, against the
   seed scenario (shared outage processes, capacity and rate limits, Beta-drawn
   completion). Every decision is the router's policy; the clock is SimPy's.
2. *Baseline*: a plain SimPy M/M/c model of the same number of customers (Poisson
   arrivals, a ``simpy.Resource`` with c servers, exponential service, one process per
   customer): what SimPy itself costs per customer, measured in the same process.
2b. *Floor*: the honest baseline: bare SimPy with one process and one timeout per
   task, on the same arrivals as the routed run (an arrival process, and per task a
   process that waits one exponential service time). A routed task cannot cost less
   than this while a task is a SimPy-scheduled thing; ``ratio_floor`` = routed / floor.
   Also routed with the *seed* config (daily cap lifted) at 5 tasks/s, the setting of
   issue 15's figures (``seed_ratio_floor``).
2c. *Policy alone*: the same tasks, config and clock handed to the router's policy
   with no simulator at all (pre-drawn outcomes, the routed run's share of failed
   calls), as ``bench/policy.py`` does. Every routed task pays at least this plus the
   floor, so ``ratio_ceiling`` = floor_time / (floor_time + policy_time) is the most
   ``ratio_floor`` could be if the world, the driver, SimPy's extra events and the
   results cost nothing. Routed, floor and policy alone are timed in alternating rounds,
   best of ``--repeat`` each (see ``alternated``): the machine's speed drifts within
   minutes, and a ratio of timings taken minutes apart carried it.
3. *Memory*: the peak RSS of a 1,000,000-task replay (``replay([trace], out=...)``,
   what ``sim replay`` does, Parquet output included) run in a child process, so the
   figure is its own: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits. The
   child is started before this process grows (see ``spawn_replay_child``) and also
   reports its own VmHWM as a cross-check.

4. *Big* (``--big``): constant memory and linear time in trace length. For N in
   ``--big-tasks`` (default 1M and 3M): a synthetic trace of N tasks (written by a child),
   then ``replay`` of it without and with ``--out``, each in a fresh child whose own
   peak RSS comes from ``os.wait4`` (this process stays small, so nothing is inherited);
   reports the time per task (the child's CPU seconds from ``os.wait4``: on a shared
   machine steadier than wall time, which is reported too), what ``--out`` adds, and
   the time exponent between the smallest and the largest N (log t2/t1 / log N2/N1).

5. *Paired* (``--paired [--with-out]``, alone): the time exponent between the smallest
   and the largest ``--big-tasks`` with the machine's drift cancelled: the large replay
   in one child and small replays back to back beside it on the other core (see
   ``paired_runs``). Its own JSON line: ``{"small_tasks", "big_tasks", "plain":
   {"big_s", "small_s", "exponent"}, "out": ...}``.

Prints readable lines, then LAST a JSON object::

    {"build": "compiled" or "pure (why)", "routed_tasks_per_s": ...,
     "baseline_tasks_per_s": ..., "ratio": ...,
     "floor_tasks_per_s": ..., "ratio_floor": ..., "seed_routed_tasks_per_s": ...,
     "seed_ratio_floor": ..., "policy_us_per_task": ..., "ratio_ceiling": ...,
     "peak_rss_mib_1m": ..., "big": {...} or null}

Targets: ratio_floor >= 0.4 (issue 15); ratio >= 0.5; 1M-task replay < 1 GiB; with
``--big``: peak < 1 GiB, ``--out`` adds <= 25%, exponent <= 1.02.

    python bench/sim_throughput.py [--tasks 100000] [--skip-1m] [--profile]
    python bench/sim_throughput.py --skip-1m --big [--big-tasks 1000000,3000000]
    python bench/sim_throughput.py --paired [--with-out] [--big-tasks 1000000,10000000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import simpy
import yaml
from policy import drive  # bench/policy.py, beside this file

from router import (
    ErrorKind,
    Outcome,
    RouterConfig,
    RoutingPolicy,
    Task,
    config_from_dict,
    native,
    seed_config_path,
)
from sim.engine.replays import RunOutput, replay, run_trace
from sim.traces.synth import synthesize
from sim.traces.tasks import ReplayColumns, replay_columns, write_trace
from sim.world.scenario import load_seed_scenario

#: Mean arrival rate of the synthetic traces: the Azure code trace's 8,819 requests in
#: 3,436 s are 2.57 tasks/s. At this rate the free/preview tiers' capacity and rate
#: limits bind (ring-2.6: 5 slots, 20 calls a minute) while paid APIs do not.
RATE_PER_S = 2.5

# Five stable models per route, from the seed catalog. grok-4.1-fast (22.5 s), the
# "pro" models (latency unknown to the router, 6-11 s in the scenario) and the preview
# models are left out: the policy would skip or time them out on every task, which
# would shorten the chains this benchmark is meant to walk.
CHAINS: dict[str, list[str]] = {
    "regex_generation": [
        "grok-4.20",
        "deepseek-v4-flash",
        "ring-2.6",
        "qwen-3.6-plus",
        "mistral-large-3",
    ],
    "sql_query": ["mistral-large-3", "claude-sonnet-4", "gpt-5.4", "qwen-3.6-plus", "grok-4.20"],
    "bug_patch": [
        "gpt-5.4",
        "qwen-3.6-plus",
        "claude-sonnet-4",
        "mistral-large-3",
        "deepseek-v4-flash",
    ],
    "json_parse": ["grok-4.20", "deepseek-v4-flash", "ring-2.6", "mistral-large-3", "gpt-5.4"],
    "error_handling": [
        "grok-4.20",
        "qwen-3.6-plus",
        "mistral-large-3",
        "claude-sonnet-4",
        "gpt-5.4",
    ],
    "default": ["grok-4.20", "qwen-3.6-plus", "claude-sonnet-4", "gpt-5.4", "mistral-large-3"],
}

# Baseline M/M/c: the seed scenario's paid-API capacity, loaded to rho = 0.75.
BASELINE_SERVERS = 64
BASELINE_MEAN_SERVICE_S = 2.0
BASELINE_RHO = 0.75


def bench_config() -> RouterConfig:
    """The seed config with a 5-model chain on every route.

    Limits are widened so a task can walk its whole chain (two attempts on each of five
    models): a 30 s SLA, 5 s per attempt, $0.20 per task. The daily budget cap is lifted
    so spend caps do not cut the chains short late in the trace (the checks still run).
    """
    data = yaml.safe_load(seed_config_path().read_text(encoding="utf-8"))
    for name, chain in CHAINS.items():
        data["routes"][name].update(
            chain=chain,
            max_cost_per_task=0.2,
            max_latency_ms=30_000,
            attempt_timeout_ms=5_000,
            attempts_per_model=2,
        )
    data["budget"]["daily_cap_usd"] = 1e9
    return config_from_dict(data, "bench config")


def seed_config_uncapped() -> RouterConfig:
    """The seed config as shipped, with its daily cap lifted (issue 15's setting: the
    $500/day cap would otherwise reject most of a long trace's tasks)."""
    data = yaml.safe_load(seed_config_path().read_text(encoding="utf-8"))
    data["budget"]["daily_cap_usd"] = 1e9
    return config_from_dict(data, "seed config, cap lifted")


# ---------------------------------------------------------------------------- routed
def routed(
    cols: ReplayColumns, seed: int, repeat: int, profile: bool, config: RouterConfig | None = None
) -> tuple[float, RunOutput]:
    """Best-of-``repeat`` wall time of one replay of ``cols``; its output."""
    config = config or bench_config()
    scenario = load_seed_scenario()
    tasks = len(cols)
    best = float("inf")
    out: RunOutput | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = run_trace(cols, config, scenario, seed=seed)
        best = min(best, time.perf_counter() - t0)
    assert out is not None
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        run_trace(cols, config, scenario, seed=seed)
        prof.disable()
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("tottime").print_stats(25)
        print(f"--- cProfile of one routed run ({tasks} tasks), by own time ---")
        print(text.getvalue().rstrip())
        print("--- end of profile ---")
    return best, out


# -------------------------------------------------------------------------- baseline
def mmc_baseline(customers: int, servers: int, lam: float, mu: float, seed: int) -> float:
    """Wall time of a plain SimPy M/M/c run of ``customers`` customers."""
    rng = random.Random(seed)
    env = simpy.Environment()
    desk = simpy.Resource(env, capacity=servers)

    def customer() -> Generator[simpy.Event, Any, None]:
        with desk.request() as req:
            yield req
            yield env.timeout(rng.expovariate(mu))

    def source() -> Generator[simpy.Event, Any, None]:
        for _ in range(customers):
            yield env.timeout(rng.expovariate(lam))
            env.process(customer())

    t0 = time.perf_counter()
    env.process(source())
    env.run()
    return time.perf_counter() - t0


def floor_run(arrivals: list[float], mean_service_s: float, seed: int) -> float:
    """Wall time of bare SimPy: one process and one timeout per task, same arrivals."""
    rng = random.Random(seed)
    env = simpy.Environment()
    rate = 1.0 / mean_service_s

    def task() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(rng.expovariate(rate))

    def source() -> Generator[simpy.Event, Any, None]:
        for at in arrivals:
            delay = at - env.now
            if delay > 0:
                yield env.timeout(delay)
            env.process(task())

    t0 = time.perf_counter()
    env.process(source())
    env.run()
    return time.perf_counter() - t0


def floor(arrivals: list[float], seed: int, repeat: int) -> float:
    return min(floor_run(arrivals, BASELINE_MEAN_SERVICE_S, seed) for _ in range(repeat))


def baseline(tasks: int, seed: int, repeat: int) -> float:
    mu = 1.0 / BASELINE_MEAN_SERVICE_S
    lam = BASELINE_RHO * BASELINE_SERVERS * mu
    return min(mmc_baseline(tasks, BASELINE_SERVERS, lam, mu, seed) for _ in range(repeat))


def head_of(cols: ReplayColumns, n: int) -> ReplayColumns:
    """The first ``n`` tasks of ``cols``."""
    return ReplayColumns(
        cols.task_ids[:n],
        cols.arrival_s[:n],
        cols.task_types[:n],
        cols.prompt_tokens[:n],
        cols.completion_tokens[:n],
    )


def alternated(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds of each of ``runs``, timed in alternating rounds (one
    of each per round), so that all of them meet the same drift of the machine."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best


def share_for_calls(
    cols: ReplayColumns, config: RouterConfig, calls_per_task: float, seed: int
) -> float:
    """The share of wrong answers at which :func:`policy_alone` makes
    ``calls_per_task`` calls a task on the first 5,000 tasks of ``cols`` (bisection:
    more wrong answers, more of each chain walked)."""
    head = head_of(cols, 5000)
    lo, hi = 0.0, 1.0
    for _ in range(16):
        f = (lo + hi) / 2
        if policy_alone(head, config, f, seed, 1)[1] < calls_per_task:
            lo = f
        else:
            hi = f
    return (lo + hi) / 2


def policy_alone(
    cols: ReplayColumns, config: RouterConfig, fail_share: float, seed: int, repeat: int
) -> tuple[float, float]:
    """Best-of-``repeat`` seconds the router's policy alone takes for the tasks of
    ``cols``: each task started at its arrival time, its calls answered at once from
    pre-drawn outcomes (a share ``fail_share`` of them wrong answers),
    the clock a plain float. No simulator, no world, no results beyond the policy's.
    Also returns the calls per task it made."""
    rng = random.Random(seed)
    # Most of the simulated world's failed calls are wrong answers (VALIDATION: retried
    # at once, never an outage), so the policy walks the chain as in the routed run.
    ok, fail = Outcome(ErrorKind.OK, 1.0), Outcome(ErrorKind.VALIDATION, 1.0)
    outcomes = [fail if rng.random() < fail_share else ok for _ in range(12 * len(cols))]
    tasks = [
        Task(str(i), str(tt), prompt_tokens=int(pt), completion_tokens=int(ct))
        for i, tt, pt, ct in zip(
            cols.task_ids, cols.task_types, cols.prompt_tokens, cols.completion_tokens, strict=True
        )
    ]
    arrivals = [float(a) for a in cols.arrival_s]
    best, calls = float("inf"), 0
    for _ in range(repeat):
        seconds, calls = drive(RoutingPolicy(config, seed=seed), tasks, arrivals, outcomes)
        best = min(best, seconds)
    return best, calls / len(tasks)


# ------------------------------------------------------------------------ 1M memory
# Why the child is started before this process does any work: on Linux a process's
# ru_maxrss starts from its parent's peak RSS at fork/exec time (the kernel carries the
# old address space's high-water mark over in execve), so a child spawned after the
# parent has built a 1M-task trace would report the parent's peak, not its own. Started
# first, it inherits only the peak of the imports, which it reaches itself anyway; it
# then waits on stdin until the trace file is ready.


def spawn_replay_child(seed: int) -> subprocess.Popen[str]:
    """Start the child that will replay the 1M-task trace; return once it is idle.

    It says "ready" after its imports, so its start-up does not compete with the
    throughput timings for the CPU; then it waits for its paths.
    """
    child = subprocess.Popen(
        [sys.executable, __file__, "--child-replay", "--seed", str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        _, err = child.communicate()
        raise RuntimeError(f"the replay child did not start:\n{err}")
    return child


def child_replay(seed: int) -> None:
    """The child's whole job: ``sim replay TRACE --out OUT`` as a library call.

    Reads the trace path and the output directory from stdin (one line each); exits
    quietly on end of input (the parent gave up). Prints one JSON line.
    """
    print("ready", flush=True)
    trace, out = sys.stdin.readline().strip(), sys.stdin.readline().strip()
    if not trace or not out:
        return
    t0 = time.perf_counter()
    report = replay(
        [trace], config=bench_config(), seed=seed, out=None if out == "-" else out, figures=False
    )
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tasks": int(report.summary["tasks"]),
                "seconds": round(elapsed, 2),
                "completion_rate": report.summary["completion_rate"],
                "vm_hwm_mib": _vm_hwm_mib(),
            }
        )
    )


def _vm_hwm_mib() -> float | None:
    """This process's own peak RSS (Linux VmHWM: the current address space only)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # reported in kB
    return None


def run_replay_child(
    child: subprocess.Popen[str], tasks: int, seed: int
) -> tuple[float, dict[str, Any]]:
    """Write a ``tasks``-task trace, let ``child`` replay it; its peak RSS (MiB), report."""
    with tempfile.TemporaryDirectory(prefix="sim_bench_") as tmp:
        trace = Path(tmp) / "synthetic_1m.parquet"
        write_trace(synthesize(n_tasks=tasks, rate_per_s=RATE_PER_S, seed=seed), trace)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        stdout, stderr = child.communicate(f"{trace}\n{Path(tmp) / 'out'}\n")
        if child.returncode != 0:
            raise RuntimeError(f"the 1M-task replay failed:\n{stderr}")
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if peak_kib <= before:
        raise RuntimeError("the child's peak RSS is hidden by an earlier, larger child")
    return peak_kib / 1024.0, json.loads(stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000, help="tasks per throughput run")
    # Seed 1: its world has two outage periods inside the 100k-task trace (xai, which
    # serves the first model of four routes, and mistral), so failover under an outage
    # is part of what is timed; seed 0's world happens to have none in that window.
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (best is kept)")
    ap.add_argument("--skip-1m", action="store_true", help="skip the 1M-task memory run")
    ap.add_argument("--rss-tasks", type=int, default=1_000_000, help="tasks in the memory run")
    ap.add_argument("--profile", action="store_true", help="cProfile one routed run")
    ap.add_argument("--big", action="store_true", help="memory and linearity in trace length")
    ap.add_argument("--big-tasks", default="1000000,3000000", help="comma-separated N for --big")
    ap.add_argument(
        "--paired",
        action="store_true",
        help="only the time exponent, smallest vs largest --big-tasks run side by side",
    )
    ap.add_argument("--with-out", action="store_true", help="--paired: also with --out")
    ap.add_argument("--child-replay", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-synth", type=str, default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_replay:
        child_replay(args.seed)
        return
    if args.child_synth:
        path, n = args.child_synth.rsplit(":", 1)
        write_trace(synthesize(n_tasks=int(n), rate_per_s=RATE_PER_S, seed=args.seed), path)
        return
    if args.paired:
        sizes = [int(x) for x in args.big_tasks.split(",") if x.strip()]
        if len(sizes) < 2 or sizes[0] >= sizes[-1]:
            ap.error(
                "--paired: --big-tasks needs a smaller size first, then a larger one; "
                f"got {args.big_tasks!r}"
            )
        print(json.dumps(paired_runs(args)))
        return
    child = None if args.skip_1m else spawn_replay_child(args.seed)
    try:
        report(args, child)
    finally:
        if child is not None and child.poll() is None:
            child.kill()  # only on error: the child we started, by its handle
            child.wait()


def report(args: argparse.Namespace, child: subprocess.Popen[str] | None) -> None:
    """Run the measurements and print the lines, the JSON object last."""
    cols = replay_columns(synthesize(n_tasks=args.tasks, rate_per_s=RATE_PER_S, seed=args.seed))
    # One run first (the warm-up, and the calls per task the policy alone must make),
    # then the routed run, the floor and the policy alone in alternating rounds, best
    # of --repeat each: the machine's speed drifts by several per cent within minutes,
    # and a ratio of two timings taken minutes apart carries that drift.
    _, out = routed(cols, args.seed, 1, args.profile)
    calls = sum(out.calls)
    fail_share = share_for_calls(cols, bench_config(), calls / args.tasks, args.seed)
    best = alternated(
        {
            "routed": lambda: routed(cols, args.seed, 1, False)[0],
            "floor": lambda: floor(list(cols.arrival_s), args.seed, 1),
            "policy": lambda: policy_alone(cols, bench_config(), fail_share, args.seed, 1)[0],
        },
        args.repeat,
    )
    seconds, floor_seconds, policy_seconds = best["routed"], best["floor"], best["policy"]
    policy_calls = policy_alone(cols, bench_config(), fail_share, args.seed, 1)[1]
    s = out.summary
    # Outage periods that began before the last arrival (a shared period is listed once
    # per model of its provider: count it once).
    last_arrival = out.arrays["started_s"].max()
    periods = {(start, end) for _, start, end in out.outages if start < last_arrival}
    routed_rate = args.tasks / seconds
    print(f"build:    {native.build()}")
    print(
        f"routed:   {args.tasks:,} tasks through 5-model chains in {seconds:.2f} s = "
        f"{routed_rate:,.0f} tasks/s ({calls / args.tasks:.2f} calls/task, "
        f"{1e6 * seconds / args.tasks:.1f} us/task; best of {args.repeat}, alternated with "
        f"the floor and the policy alone)"
    )
    print(
        f"          completion {s['completion_rate']:.4f}, fallback {s['fallback_rate']:.4f}, "
        f"breaker trips {s['breaker_trips']}, outage periods during the trace {len(periods)}, "
        f"failed calls {sum(out.failures):,}"
    )
    floor_rate = args.tasks / floor_seconds
    print(
        f"floor:    bare SimPy, one process + one timeout per task, same arrivals: "
        f"{floor_seconds:.2f} s = {floor_rate:,.0f} tasks/s"
    )
    ratio_floor = routed_rate / floor_rate
    print(f"ratio:    routed / floor = {ratio_floor:.3f} (target >= 0.4)")
    ceiling = floor_seconds / (floor_seconds + policy_seconds)
    print(
        f"policy:   the router's policy alone, same tasks and config, {fail_share:.1%} of "
        f"calls wrong, {policy_calls:.2f} calls/task: "
        f"{1e6 * policy_seconds / args.tasks:.1f} us/task = "
        f"{policy_seconds / floor_seconds:.2f} floors; ceiling on routed / floor with "
        f"everything else free = {ceiling:.3f}"
    )
    seed_cols = replay_columns(synthesize(n_tasks=args.tasks, rate_per_s=5.0, seed=args.seed))
    _, seed_out = routed(seed_cols, args.seed, 1, False, config=seed_config_uncapped())
    seed_calls = sum(seed_out.calls) / args.tasks
    seed_share = share_for_calls(seed_cols, seed_config_uncapped(), seed_calls, args.seed)
    seed_best = alternated(
        {
            "routed": lambda: routed(seed_cols, args.seed, 1, False, seed_config_uncapped())[0],
            "floor": lambda: floor(list(seed_cols.arrival_s), args.seed, 1),
            "policy": lambda: policy_alone(
                seed_cols, seed_config_uncapped(), seed_share, args.seed, 1
            )[0],
        },
        args.repeat,
    )
    seed_seconds, seed_floor_s, seed_policy_s = (
        seed_best["routed"],
        seed_best["floor"],
        seed_best["policy"],
    )
    seed_policy_calls = policy_alone(seed_cols, seed_config_uncapped(), seed_share, args.seed, 1)[1]
    seed_rate = args.tasks / seed_seconds
    seed_floor_rate = args.tasks / seed_floor_s
    seed_ratio = seed_rate / seed_floor_rate
    print(
        f"seed:     seed config (cap lifted), 5 tasks/s: {seed_rate:,.0f} tasks/s "
        f"({seed_calls:.2f} calls/task, completion "
        f"{seed_out.summary['completion_rate']:.4f}); floor {seed_floor_rate:,.0f} tasks/s; "
        f"ratio {seed_ratio:.3f} (target >= 0.4)"
    )
    seed_ceiling = seed_floor_s / (seed_floor_s + seed_policy_s)
    print(
        f"          its policy alone ({seed_policy_calls:.2f} calls/task): "
        f"{1e6 * seed_policy_s / args.tasks:.1f} us/task = "
        f"{seed_policy_s / seed_floor_s:.2f} floors; ceiling {seed_ceiling:.3f}"
    )
    base_seconds = baseline(args.tasks, args.seed, args.repeat)
    base_rate = args.tasks / base_seconds
    print(
        f"baseline: bare SimPy M/M/{BASELINE_SERVERS} (rho {BASELINE_RHO}), {args.tasks:,} "
        f"customers in {base_seconds:.2f} s = {base_rate:,.0f} customers/s"
    )
    ratio = routed_rate / base_rate
    print(
        f"ratio:    routed / M/M/c baseline = {ratio:.3f} (target >= 0.5); "
        f"routed target >= 50,000 tasks/s"
    )
    peak: float | None = None
    if child is not None:
        peak, info = run_replay_child(child, args.rss_tasks, args.seed)
        print(
            f"memory:   {info['tasks']:,}-task replay (Parquet output included) peaked at "
            f"{peak:,.0f} MiB RSS (target < 1024 MiB); it ran {info['seconds']} s = "
            f"{info['tasks'] / info['seconds']:,.0f} tasks/s"
        )
        hwm = info.get("vm_hwm_mib")
        if hwm is not None:
            print(f"          cross-check: the child's own VmHWM {hwm:,.0f} MiB")
    big = big_runs(args) if args.big else None
    print(
        json.dumps(
            {
                "build": native.build(),
                "routed_tasks_per_s": round(routed_rate, 1),
                "baseline_tasks_per_s": round(base_rate, 1),
                "ratio": round(ratio, 4),
                "floor_tasks_per_s": round(floor_rate, 1),
                "ratio_floor": round(ratio_floor, 4),
                "seed_routed_tasks_per_s": round(seed_rate, 1),
                "seed_ratio_floor": round(seed_ratio, 4),
                "policy_us_per_task": round(1e6 * policy_seconds / args.tasks, 2),
                "ratio_ceiling": round(ceiling, 4),
                "seed_ratio_ceiling": round(seed_ceiling, 4),
                "peak_rss_mib_1m": None if peak is None else round(peak, 1),
                "big": big,
            }
        )
    )


# ------------------------------------------------------------------------------- big
def _start_child(args: list[str], stdin: str) -> subprocess.Popen[str]:
    """Start this script as a child with ``args`` and give it ``stdin``."""
    child = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    child.stdin.write(stdin)
    child.stdin.close()
    return child


def _finish_child(child: subprocess.Popen[str], args: list[str]) -> tuple[float, float, str]:
    """Wait for ``child``: its own peak RSS (MiB), its CPU seconds (user + system: on a
    shared machine a steadier figure than wall time) and its stdout."""
    assert child.stdout is not None and child.stderr is not None
    stdout = child.stdout.read()
    stderr = child.stderr.read()
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the largest so far).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{stderr}")
    return usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime, stdout


def _child_run(args: list[str], stdin: str) -> tuple[float, float, str]:
    """Run this script as a child with ``args`` to its end (see :func:`_finish_child`)."""
    return _finish_child(_start_child(args, stdin), args)


def big_runs(args: argparse.Namespace) -> dict[str, Any]:
    """Replays of N-task traces without and with --out, each in its own child."""
    sizes = [int(x) for x in args.big_tasks.split(",") if x.strip()]
    rows: list[dict[str, Any]] = []
    # A replay child given no work: its CPU seconds are the start-up every child pays.
    startup = min(_child_run(["--child-replay"], "")[1] for _ in range(2))
    print(f"big:      child start-up {startup:.2f} s CPU (subtracted below)")
    with tempfile.TemporaryDirectory(prefix="sim_bench_big_") as tmp:
        for n in sizes:
            trace = Path(tmp) / f"synthetic_{n}.parquet"
            _child_run(["--child-synth", f"{trace}:{n}", "--seed", str(args.seed)], "")
            row: dict[str, Any] = {"tasks": n}
            for label, out in (("plain", "-"), ("out", str(Path(tmp) / f"out_{n}"))):
                peak, cpu, stdout = _child_run(
                    ["--child-replay", "--seed", str(args.seed)], f"{trace}\n{out}\n"
                )
                info = json.loads(stdout.strip().splitlines()[-1])
                row[f"{label}_wall_s"] = info["seconds"]
                # The child's CPU time less its start-up (the imports), so that the
                # exponent is the replay's own.
                row[f"{label}_s"] = round(cpu - startup, 2)
                row[f"{label}_peak_rss_mib"] = round(peak, 1)
            row["out_overhead"] = round(row["out_s"] / row["plain_s"] - 1.0, 4)
            rows.append(row)
            print(
                f"big:      {n:,} tasks: replay {row['plain_s']} s CPU "
                f"({1e6 * row['plain_s'] / n:.1f} us/task, peak {row['plain_peak_rss_mib']:,.0f} "
                f"MiB); with --out {row['out_s']} s CPU (+{100 * row['out_overhead']:.1f}%, target "
                f"<= 25%; peak {row['out_peak_rss_mib']:,.0f} MiB, target < 1024)"
            )
            Path(trace).unlink()
            shutil.rmtree(Path(tmp) / f"out_{n}", ignore_errors=True)
    result: dict[str, Any] = {"runs": rows}
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        for label in ("plain", "out"):
            exponent = math.log(b[f"{label}_s"] / a[f"{label}_s"]) / math.log(
                b["tasks"] / a["tasks"]
            )
            result[f"{label}_exponent"] = round(exponent, 4)
        print(
            f"big:      time exponent {a['tasks']:,} -> {b['tasks']:,} tasks: replay "
            f"{result['plain_exponent']:.3f}, with --out {result['out_exponent']:.3f} "
            f"(target <= 1.02)"
        )
    return result


# ------------------------------------------------------------------------- linearity
def _running(child: subprocess.Popen[str]) -> bool:
    """Whether ``child`` still runs, without reaping it (its rusage is read later)."""
    return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def paired_runs(args: argparse.Namespace) -> dict[str, Any]:
    """The time exponent with the machine's drift cancelled: the large replay runs in
    one child while, on the other core, small replays run back to back in fresh
    children for as long as it does. Both sizes then meet the same clock speed, the
    same memory bandwidth and the same neighbour over the same minutes; the small runs
    counted are those that ran wholly beside the large one. On this machine a 1M-task
    replay's CPU time moves by several per cent from one run to the next, which is the
    size of what the exponent target allows over 1M -> 10M (10**0.02 = 4.7 %)."""
    sizes = [int(x) for x in args.big_tasks.split(",") if x.strip()]
    small, big = sizes[0], sizes[-1]
    startup = min(_child_run(["--child-replay"], "")[1] for _ in range(2))
    print(f"paired:   child start-up {startup:.2f} s CPU (subtracted below)")
    result: dict[str, Any] = {"small_tasks": small, "big_tasks": big}
    labels = ("plain", "out") if args.with_out else ("plain",)
    with tempfile.TemporaryDirectory(prefix="sim_bench_paired_") as tmp:
        traces = {}
        for n in (small, big):
            traces[n] = Path(tmp) / f"synthetic_{n}.parquet"
            _child_run(["--child-synth", f"{traces[n]}:{n}", "--seed", str(args.seed)], "")
        replay_args = ["--child-replay", "--seed", str(args.seed)]
        for label in labels:

            def out_dir(name: str, label: str = label) -> str:
                return "-" if label == "plain" else str(Path(tmp) / f"out_{name}")

            big_child = _start_child(replay_args, f"{traces[big]}\n{out_dir('big')}\n")
            children = [big_child]
            small_s: list[float] = []
            try:
                while _running(big_child):
                    child = _start_child(replay_args, f"{traces[small]}\n{out_dir('small')}\n")
                    children.append(child)
                    _, cpu, _ = _finish_child(child, replay_args)
                    if _running(big_child):  # it ran wholly beside the large replay
                        small_s.append(round(cpu - startup, 2))
                    shutil.rmtree(Path(tmp) / "out_small", ignore_errors=True)
                _, big_cpu, _ = _finish_child(big_child, replay_args)
            finally:  # a failed small replay or Ctrl-C: no replay is left running
                for c in children:
                    if c.returncode is None:
                        c.kill()
                        c.wait()
            shutil.rmtree(Path(tmp) / "out_big", ignore_errors=True)
            big_s = round(big_cpu - startup, 2)
            if not small_s:
                raise RuntimeError("no small replay finished beside the large one")
            mean_small = sum(small_s) / len(small_s)
            exponent = math.log(big_s / mean_small) / math.log(big / small)
            result[label] = {
                "big_s": big_s,
                "small_s": small_s,
                "exponent": round(exponent, 4),
            }
            print(
                f"paired:   {label}: {big:,} tasks {big_s} s CPU ({1e6 * big_s / big:.1f} us/task) "
                f"beside {len(small_s)} replays of {small:,} tasks, mean {mean_small:.2f} s "
                f"({1e6 * mean_small / small:.1f} us/task; range {min(small_s)}-{max(small_s)} "
                f"s): time exponent {exponent:.4f} (target <= 1.02)"
            )
    return result


if __name__ == "__main__":
    main()
