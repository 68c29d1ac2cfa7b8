"""Fidelity: the same trace through the live router against the twin, and through the sim.

:func:`run_fidelity` replays one trace twice with the same config, scenario and seed:

* **live**: :class:`router.live.Router` routes every task concurrently (one coroutine
  per task, started at its arrival time x ``time_scale``) over real HTTP to a
  :class:`~sim.twin.server.TwinServer` serving the scenario at ``time_scale``. The config is
  the given one with every duration multiplied by ``time_scale`` (:func:`twin_config`)
  and every model's endpoint pointed at the twin;
* **sim**: :func:`sim.engine.replays.replay` of the same trace, unscaled.

Both summaries come from :func:`sim.engine.results.summarize` (live latencies divided by
``time_scale`` first), so every metric has one definition. Each task carries its
trace position in a :func:`~sim.twin.server.twin_tag` and the twin is given the trace's
:func:`~sim.engine.replays.trace_key`, so the twin draws what the simulator draws for it
(common random numbers); what still differs is what the comparison is
for: real sockets, real timeouts, the asyncio scheduler, and the policy seeing
outcomes in a different interleaving (its backoff and breaker jitter draws then
come in another order).
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from router import RouterConfig, Task, TaskResult, config_from_dict
from router.validation import validate
from sim.engine.replays import replay, trace_key
from sim.engine.results import ResultSink, summarize
from sim.traces.synth import synthesize
from sim.traces.tasks import ReplayColumns, replay_columns
from sim.twin.server import TwinServer, answer_text, twin_tag
from sim.world.scenario import Scenario

__all__ = [
    "FIDELITY_KEYS",
    "FidelityReport",
    "fidelity_tasks",
    "fidelity_trace",
    "run_fidelity",
    "summarize_live",
    "twin_config",
]

#: The keys of :attr:`FidelityReport.line`, in order.
FIDELITY_KEYS: tuple[str, ...] = (
    "completion_live",
    "completion_sim",
    "cost_rel_err",
    "p50_rel_err",
    "p95_rel_err",
    "fallback_live",
    "fallback_sim",
)

# What each task asks, by type. bug_patch needs a source to patch (its validator
# requires spec["source"]); the others are validated without a spec.
_PROMPTS: dict[str, str] = {
    "json": "Return the order as a JSON object.",
    "regex": "Write a regex that matches an ISO date.",
    "sql": "Write the SQL query that counts the orders per customer.",
    "bug_patch": "Fix the bug in calc.py (add() subtracts); answer with a unified diff.",
    "error_handling": "Add error handling for ValueError and KeyError around the lookup.",
}
_BUG_SOURCE = "def add(a, b):\n    return a - b\n"


def fidelity_trace(n_tasks: int = 1000, *, rate_per_s: float = 1.0, seed: int = 0) -> pl.DataFrame:
    """A seeded Poisson trace of ``n_tasks`` tasks at ``rate_per_s`` (default mix)."""
    return synthesize(n_tasks=n_tasks, rate_per_s=rate_per_s, seed=seed, id_prefix="fid-")


def twin_config(config: RouterConfig, base_url: str, time_scale: float) -> RouterConfig:
    """``config`` for a twin running at ``time_scale``: durations scaled, endpoints set.

    Every duration the policy reads is multiplied by ``time_scale`` (profile latencies,
    route SLAs and attempt timeouts, backoff, breaker open times), so the policy meets
    the same decisions on the wall clock as the simulator meets in scenario time. Each
    model's endpoint becomes an OpenAI endpoint at ``base_url`` with the model's id,
    without an API key. Prices, probabilities and caps are unchanged.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale: expected a positive number, got {time_scale!r}")
    data = config.model_dump(mode="json")
    for m in data["models"]:
        for key in ("avg_latency_ms", "p95_latency_ms"):
            if m.get(key) is not None:
                m[key] *= time_scale
        m["endpoint"] = {"kind": "openai", "base_url": base_url, "model": m["id"]}
    for route in data["routes"].values():
        route["max_latency_ms"] *= time_scale
        if route.get("attempt_timeout_ms") is not None:
            route["attempt_timeout_ms"] *= time_scale
        route["backoff"]["base_s"] *= time_scale
        route["backoff"]["cap_s"] *= time_scale
    br = data["breaker"]
    for key in ("open_base_s", "open_cap_s", "reprobe_s", "probe_timeout_s"):
        if br.get(key) is not None:
            br[key] *= time_scale
    data["health"]["latency_cooldown_s"] *= time_scale
    data["quality"]["cooldown_s"] *= time_scale
    return config_from_dict(data, "twin config")


def fidelity_tasks(cols: ReplayColumns) -> list[Task]:
    """The live tasks of a trace: each payload carries its :func:`twin_tag` (its trace
    position, type and sizes) and a prompt its type's classifier recognises; bug_patch
    tasks carry the source their diff must apply to."""
    tasks = []
    for i, task_id in enumerate(cols.task_ids):
        task_type = cols.task_types[i]
        pt, ct = cols.prompt_tokens[i], cols.completion_tokens[i]
        tag = twin_tag(i, task_type, pt, ct)
        spec = {"source": _BUG_SOURCE, "path": "calc.py"} if task_type == "bug_patch" else None
        payload = f"{tag} {_PROMPTS.get(task_type, 'Do the task.')}"
        tasks.append(Task(task_id, task_type, payload, pt, ct, cols.arrival_s[i], spec))
    return tasks


def summarize_live(
    results: Sequence[TaskResult], model_ids: Sequence[str], time_scale: float
) -> dict[str, Any]:
    """:func:`sim.engine.results.summarize` of live results, latencies back in scenario seconds."""
    sink = ResultSink(list(model_ids))
    index = {m: i for i, m in enumerate(model_ids)}
    calls = [0] * len(model_ids)
    failures = [0] * len(model_ids)
    spend = [0.0] * len(model_ids)
    for r in results:
        for a in r.attempts:
            i = index[a.model]
            calls[i] += 1
            failures[i] += a.kind != "ok"
            spend[i] += a.cost_usd
        sink.add(r)
    arrays = sink.arrays()
    arrays["latency_s"] = arrays["latency_s"] / time_scale
    arrays["started_s"] = arrays["started_s"] / time_scale
    return summarize(
        arrays, list(model_ids), calls=calls, failures=failures, spend=spend, breaker_trips=0
    )


async def _route_all(
    config: RouterConfig, tasks: Sequence[Task], twin: TwinServer, time_scale: float, seed: int
) -> tuple[list[TaskResult], int]:
    from router.live import Router

    async with Router(config, seed=seed) as router:
        # Build every provider (an httpx client each) before the clock starts: their
        # construction is a one-off cost no task should be charged for.
        for m in config.models:
            router.provider(m.id)
        loop = asyncio.get_running_loop()

        async def one(task: Task) -> TaskResult:
            await asyncio.sleep(max(0.0, t0 + task.arrival_s * time_scale - loop.time()))
            return await router.route(task)  # a failed task is a result too

        twin.reset()  # scenario time 0 of the twin = the trace's time 0
        t0 = loop.time()
        results = await asyncio.gather(*(one(t) for t in tasks))
        return list(results), router.policy.breaker_trips


@dataclass
class FidelityReport:
    """Both summaries, the live run's breaker trips and the twin's answer counts, and
    :attr:`line` (the :data:`FIDELITY_KEYS` comparison; relative errors are signed,
    ``(live - sim) / sim``)."""

    live: dict[str, Any]
    sim: dict[str, Any]
    served: dict[str, int]
    wall_s: float

    @property
    def line(self) -> dict[str, float]:
        live, sim = self.live, self.sim

        def rel(key: str) -> float:
            ref = sim[key]
            return round((live[key] - ref) / ref, 4) if ref else math.inf * (live[key] != ref)

        return {
            "completion_live": round(live["completion_rate"], 4),
            "completion_sim": round(sim["completion_rate"], 4),
            "cost_rel_err": rel("cost_per_task"),
            "p50_rel_err": rel("latency_p50_s"),
            "p95_rel_err": rel("latency_p95_s"),
            "fallback_live": round(live["fallback_rate"], 4),
            "fallback_sim": round(sim["fallback_rate"], 4),
        }


def run_fidelity(
    config: RouterConfig,
    scenario: Scenario,
    trace: pl.DataFrame,
    *,
    seed: int = 0,
    time_scale: float = 0.02,
) -> FidelityReport:
    """Replay ``trace`` live against a twin at ``time_scale`` and in the simulator.

    Blocks for about the trace's span x ``time_scale`` of wall time. The twin runs in a
    thread of this process; the live router on a fresh event loop in this thread.
    """
    cols = replay_columns(trace)
    model_ids = [m.id for m in config.models]
    sim_summary = replay(
        traces=[("fidelity", cols)], config=config, scenario=scenario, seed=seed, figures=False
    ).summary
    tasks = fidelity_tasks(cols)
    # Warm the validators (sqlglot's import alone takes longer than a scaled call).
    for task_type, prompt in _PROMPTS.items():
        spec = {"source": _BUG_SOURCE} if task_type == "bug_patch" else None
        validate(task_type, answer_text("ok", task_type, prompt), spec)
    # A full collection walks every long-lived object of numpy, polars and pydantic:
    # 40-60 ms during which neither the router nor the twin runs, i.e. seconds of
    # scenario time at small time scales. Freezing what exists now leaves the
    # collector only the run's own objects.
    gc.collect()
    gc.freeze()
    # The router and the twin share one interpreter: a thread waiting for the GIL gets
    # it only after the switch interval (5 ms by default), which would add to the
    # twin's answer times. 0.5 ms keeps the handover well under a scaled latency.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        # The twin draws the world of this trace, as the replay above did (its key).
        with TwinServer(
            scenario, seed=seed, time_scale=time_scale, trace_key=trace_key(cols)
        ) as twin:
            live_config = twin_config(config, twin.url, time_scale)
            started = time.perf_counter()
            results, trips = asyncio.run(_route_all(live_config, tasks, twin, time_scale, seed))
            wall = time.perf_counter() - started
            served = dict(twin.served)
    finally:
        sys.setswitchinterval(switch)
        gc.unfreeze()
    live_summary = summarize_live(results, model_ids, time_scale)
    live_summary["breaker_trips"] = trips
    return FidelityReport(live_summary, sim_summary, served, wall)
