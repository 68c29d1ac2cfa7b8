"""Replication: what sharing breakers and spend through Redis buys, live and predicted.

For 1, 2 and 4 router replicas, with the shared backend (Redis) and without (each
replica on its own state), two figures, each **measured live** and **predicted by the
simulator** in the same run:

* *dead calls*: calls a provider gets during a 60 s outage (fail-fast 5xx). One
  request every 0.5 s, spread round-robin over the replicas; chain ``dead`` then
  ``backup``; the default breaker (3 consecutive failures; open 28 s, re-probed every
  12 s) without jitter, so that both sides meet the same deadlines;
* *overspend*: USD settled beyond a $1.00 daily cap when 400 requests of $0.01 arrive
  (one every 0.1 s, round-robin): each replica on its own lets each spend the whole
  cap; shared, the cap holds.

Live: ``router.live.Router`` replicas in this process, each with its own Redis client
(shared) or none (alone), over loopback scripted servers (``router.testing_http``),
time-scaled by ``--time-scale`` (0.1: the 60 s outage lasts 6 s; every duration of
the config and of the schedule is scaled alike). Predicted: ``sim.engine.driver.Simulation``
with ``replicas=N`` and ``state_delay`` 0 (shared) or inf (alone), unscaled, on a
scenario that is the same servers: ``dead`` down for exactly the outage.

Prints a table, then LAST one JSON object::

    {"time_scale": ..., "dead_calls": {"1": {"shared": {"live": ., "sim": .},
     "alone": {...}}, ...}, "overspend_usd": {...}, "max_rel_err": ...}

``max_rel_err`` is the largest |live - sim| / live over the figures (a figure of 0 is
compared in units of one call: one call or $0.01). Target: the prediction within 15%
of the live figure. Needs ``redis-server`` (Debian: ``apt-get install redis-server``).

    python bench/replicas.py [--time-scale 0.1] [--replicas 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from router import Task, config_from_dict
from router.config import RouterConfig
from router.live import Router
from router.shared import RedisState
from router.testing_http import Json, ScriptedServer, openai_completion
from sim.engine.driver import Simulation
from sim.engine.results import ResultSink
from sim.traces.tasks import ReplayColumns
from sim.world.scenario import parse_scenario

OK = Json(openai_completion('{"ok": true}', prompt_tokens=10, completion_tokens=5))
DOWN = Json({"error": {"message": "the provider is down"}}, 500)
COST = 0.01
# The outage experiment, in real (unscaled) seconds.
OUTAGE_S, WARM_S, PERIOD_S = 60.0, 10.0, 0.5
# The budget experiment.
CAP, BUDGET_TASKS, BUDGET_PERIOD_S = 1.0, 400, 0.1


def config(urls: dict[str, str] | None, scale: float, *, cap: float | None = None) -> RouterConfig:
    """The router config, its durations multiplied by ``scale``."""
    models = ("dead", "backup")
    return config_from_dict(
        {
            "models": [
                {
                    "id": m,
                    "provider": f"p-{m}",
                    "cost_per_task": COST,
                    "avg_latency_ms": 10,
                    **(
                        {
                            "endpoint": {
                                "kind": "openai",
                                "base_url": f"{urls[m]}/v1",
                                "model": m,
                                "api_key_env": None,
                            }
                        }
                        if urls
                        else {}
                    ),
                }
                for m in models
            ],
            "routes": {
                "json": {
                    "chain": list(models),
                    "max_cost_per_task": 1.0,
                    "max_latency_ms": 60_000 * scale,
                    "attempts_per_model": 1,
                }
            },
            "default_route": "json",
            "breaker": {
                "open_base_s": 28.0 * scale,
                "reprobe_s": 12.0 * scale,
                "probe_timeout_s": 120.0 * scale,
                "jitter": 0.0,
            },
            **({"budget": {"daily_cap_usd": cap}} if cap else {}),
        }
    )


# -- live -----------------------------------------------------------------------------
async def live_run(
    n: int,
    redis_url: str | None,
    scale: float,
    *,
    outage: bool,
) -> float:
    """One live run: the dead provider's calls during the outage (``outage``), or the
    USD settled beyond the cap."""
    down_at = [math.inf]

    def dead_reply(_request: object) -> Json:
        return DOWN if time.monotonic() >= down_at[0] else OK

    ns = f"bench{time.monotonic_ns()}"
    async with ScriptedServer(default=dead_reply) as dead, ScriptedServer(default=OK) as backup:
        urls = {"dead": dead.url, "backup": backup.url}
        cfg = config(urls, scale, cap=None if outage else CAP)
        routers = [
            Router(
                cfg,
                validate=False,
                shared=None if redis_url is None else RedisState(redis_url, namespace=ns),
            )
            for _ in range(n)
        ]
        for r in routers:
            for m in cfg.models:
                r.provider(m.id)  # build the HTTP clients before measuring
            if r.shared is not None:
                await r.shared.start()
        try:
            if outage:
                total, period = int((WARM_S + OUTAGE_S) / PERIOD_S), PERIOD_S * scale
                t0 = time.monotonic() + 0.2
                down_at[0] = t0 + WARM_S * scale
            else:
                total, period = BUDGET_TASKS, BUDGET_PERIOD_S * scale
                t0 = time.monotonic() + 0.2
            tasks = []
            for i in range(total):
                delay = t0 + i * period - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                router = routers[i % n]
                tasks.append(asyncio.create_task(router.route(Task(f"t{i}", "json"))))
            results = await asyncio.gather(*tasks)
        finally:
            for r in routers:
                await r.aclose()
                if r.shared is not None:
                    await r.shared.aclose()
        if outage:
            return float(
                sum(
                    1
                    for res in results
                    for a in res.attempts
                    if a.model == "dead" and a.kind != "ok"
                )
            )
        return max(0.0, sum(res.cost_usd for res in results) - CAP)


# -- simulated ------------------------------------------------------------------------
def sim_run(n: int, delay: float, *, outage: bool) -> float:
    """The simulator's prediction of the same figure (unscaled time)."""
    model = {
        "completion": {"default": 1.0},
        "latency": {"dist": "fixed", "value_s": 0.05},
        "fail_fast_latency_s": 0.05,
        "cost_per_task": COST,
    }
    scenario = parse_scenario(
        {
            "name": "replicas",
            "models": {
                "dead": {
                    **model,
                    "provider": "p-dead",
                    "outage": {
                        "time_between": {"dist": "fixed", "value_s": 1e9},
                        "duration": {"dist": "fixed", "value_s": OUTAGE_S},
                        "mode": "fail_fast",
                    },
                },
                "backup": {**model, "provider": "p-backup"},
            },
        }
    )
    if outage:
        total, period = int((WARM_S + OUTAGE_S) / PERIOD_S), PERIOD_S
    else:
        total, period = BUDGET_TASKS, BUDGET_PERIOD_S
    cols = ReplayColumns(
        [f"t{i:05d}" for i in range(total)],
        [i * period for i in range(total)],
        ["json"] * total,
        [100] * total,
        [50] * total,
    )
    ids = ["dead", "backup"]
    world = scenario.realize(0, 3600.0, ids)
    timeline = world.outage_timeline(0)
    assert timeline is not None
    start = WARM_S if outage else 1e9
    timeline.starts[:] = [start]
    timeline.ends[:] = [start + OUTAGE_S]
    timeline.covered_until = math.inf
    cfg = config(None, 1.0, cap=None if outage else CAP)
    sim = Simulation(cfg, world, seed=0, sink=ResultSink(ids), replicas=n, state_delay=delay)
    sim.run(cols)
    if outage:
        return float(sim.failures[0])
    return max(0.0, sum(sim.spend) - CAP)


# -- the run --------------------------------------------------------------------------
def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("bench/replicas.py needs redis-server (Debian: apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="costroute-bench-redis-")
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0", directory


def rel_err(live: float, sim: float, unit: float) -> float:
    return abs(live - sim) / max(live, unit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-scale", type=float, default=0.1, help="wall s per real s (live)")
    ap.add_argument("--replicas", default="1,2,4", help="replica counts, comma-separated")
    args = ap.parse_args()
    logging.getLogger("router.budget").setLevel(logging.ERROR)  # the caps are meant to bind
    scale = args.time_scale
    counts = [int(x) for x in args.replicas.split(",")]
    proc, url, directory = start_redis()
    out: dict[str, Any] = {"time_scale": scale, "dead_calls": {}, "overspend_usd": {}}
    errors: list[float] = []
    try:
        print(
            f"{OUTAGE_S:.0f} s outage, a request every {PERIOD_S} s; ${CAP:.2f} cap, "
            f"{BUDGET_TASKS} requests of ${COST}; live at time scale {scale:g}"
        )
        print(
            f"{'replicas':>8} {'state':>7} | {'dead calls live':>15} {'sim':>5} | "
            f"{'overspend live':>14} {'sim':>6}"
        )
        for n in counts:
            for mode in ("shared", "alone"):
                redis_url = url if mode == "shared" else None
                delay = 0.0 if mode == "shared" else math.inf
                dead_live = asyncio.run(live_run(n, redis_url, scale, outage=True))
                dead_sim = sim_run(n, delay, outage=True)
                over_live = round(asyncio.run(live_run(n, redis_url, scale, outage=False)), 6)
                over_sim = round(sim_run(n, delay, outage=False), 6)
                out["dead_calls"].setdefault(str(n), {})[mode] = {
                    "live": dead_live,
                    "sim": dead_sim,
                }
                out["overspend_usd"].setdefault(str(n), {})[mode] = {
                    "live": over_live,
                    "sim": over_sim,
                }
                errors += [rel_err(dead_live, dead_sim, 1.0), rel_err(over_live, over_sim, COST)]
                print(
                    f"{n:>8} {mode:>7} | {dead_live:>15.0f} {dead_sim:>5.0f} | "
                    f"{over_live:>14.2f} {over_sim:>6.2f}"
                )
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    out["max_rel_err"] = round(max(errors), 4)
    out["target_met"] = out["max_rel_err"] <= 0.15
    print(f"largest |live - sim| / live: {out['max_rel_err']:.1%} (target <= 15%)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
