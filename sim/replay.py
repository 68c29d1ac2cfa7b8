"""Replaying traces: replications, summaries with CIs, paired comparisons, output.

:func:`replay` is what ``sim replay`` runs. Each trace file is a separate run;
each run is replicated over seeds ``seed, seed + 1, ..., seed + R - 1``. The
world of replication ``r`` on a trace depends only on its seed and on the trace's
content (:func:`trace_key`), never on the config, so two configs replayed with the
same seeds meet the same world (common random numbers) and :func:`compare` can pair
them, while two different traces replayed with one seed meet independent per-task
draws (their outage timelines, which describe the providers, are shared).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from router import RouterConfig, load_seed_config
from sim.driver import Simulation
from sim.outdir import check_out_dir, new_tmp_dir, replace_dir
from sim.results import (
    SCALAR_KEYS,
    TASK_SCHEMA,
    ResultSink,
    combine,
    paired_difference,
    summarize,
)
from sim.scenario import Scenario, load_seed_scenario
from sim.trace import ReplayColumns, discover_traces, read_trace, replay_columns

# Outage timelines are drawn this far past the last arrival: the longest task
# SLA plus the tail of the longest outage that could still be running.
_HORIZON_MARGIN_S = 6 * 3600.0


@dataclass
class RunOutput:
    """One (trace, replication) run: its summary, compact arrays and outage data."""

    trace: str
    replication: int
    seed: int
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]
    outages: list[tuple[str, float, float]] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    breaker_trips: int = 0


def load_traces(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, ReplayColumns]]:
    """Discover, read and validate every trace under ``paths`` (name, columns) pairs."""
    return [(p.name, replay_columns(read_trace(p))) for p in discover_traces(paths)]


def trace_key(cols: ReplayColumns) -> int:
    """The identity of a trace: a CRC-32 of its content in canonical order.

    Hashed: every task's id, arrival time (float64 bits), type and token sizes, in the
    order of :func:`sim.trace.replay_columns` (by arrival, then id). So the key
    depends on what the trace *is*, not on how it is stored: the same tasks give the
    same key whatever the file's row order or format (Parquet, NDJSON, CSV), and two
    traces that differ in any task (even synthetic traces that reuse the ids
    ``synth-000001, ...`` with other arrivals) get different keys, hence independent
    worlds. The file's bytes are not used: they change with the row order and format.
    """
    h = zlib.crc32("\x1f".join(cols.task_ids).encode("utf-8"))
    h = zlib.crc32(np.asarray(cols.arrival_s, dtype="<f8").tobytes(), h)
    h = zlib.crc32("\x1f".join(cols.task_types).encode("utf-8"), h)
    h = zlib.crc32(np.asarray(cols.prompt_tokens, dtype="<i8").tobytes(), h)
    return zlib.crc32(np.asarray(cols.completion_tokens, dtype="<i8").tobytes(), h)


def run_trace(
    cols: ReplayColumns,
    config: RouterConfig,
    scenario: Scenario,
    *,
    seed: int,
    trace: str = "",
    replication: int = 0,
    writer: pq.ParquetWriter | None = None,
    progress: Callable[[int], None] | None = None,
    key: int | None | Literal["content"] = "content",
) -> RunOutput:
    """Simulate one trace under one seed.

    ``key`` is the world's trace key: ``"content"`` (the default) is
    :func:`trace_key` of ``cols``; an integer pairs this run's draws with another
    trace's on purpose; None gives the world keyed by the seed alone (the draws of
    replays before traces were keyed, kept to reproduce earlier results).
    """
    model_ids = [m.id for m in config.models]
    horizon = (cols.arrival_s[-1] if cols.arrival_s else 0.0) + _HORIZON_MARGIN_S
    tkey = trace_key(cols) if key == "content" else key
    world = scenario.realize(seed, horizon, model_ids, trace_key=tkey)
    sink = ResultSink(model_ids, writer=writer, trace=trace, replication=replication, seed=seed)
    sim = Simulation(config, world, seed=seed, sink=sink, progress=progress)
    sim.run(cols)
    sink.flush()
    arrays = sink.arrays()
    trips = sim.policy.breaker_trips
    summary = summarize(
        arrays,
        model_ids,
        calls=sim.calls,
        failures=sim.failures,
        spend=sim.spend,
        breaker_trips=trips,
        budget_alerts=len(sim.policy.ledger.alerts),
    )
    used = {m for r in config.routes.values() for m in r.chain}
    outages = [o for o in world.outage_intervals() if o[0] in used] if cols.arrival_s else []
    return RunOutput(
        trace,
        replication,
        seed,
        summary,
        arrays,
        outages,
        list(sim.calls),
        list(sim.failures),
        list(sim.spend),
        trips,
    )


def _merge(runs: Sequence[RunOutput], model_ids: Sequence[str]) -> dict[str, Any]:
    """The summary of several traces' runs under one seed, as one population."""
    arrays = {k: np.concatenate([r.arrays[k] for r in runs]) for k in runs[0].arrays}
    # Traces are separate runs: their time axes are independent, so throughput is the
    # sum of each run's throughput rather than completions over a merged window.
    merged = summarize(
        arrays,
        model_ids,
        calls=[sum(r.calls[i] for r in runs) for i in range(len(model_ids))],
        failures=[sum(r.failures[i] for r in runs) for i in range(len(model_ids))],
        spend=[sum(r.spend[i] for r in runs) for i in range(len(model_ids))],
        breaker_trips=sum(r.breaker_trips for r in runs),
        budget_alerts=sum(r.summary.get("budget_alerts", 0) for r in runs),
    )
    merged["throughput_per_hour"] = float(
        f"{sum(r.summary['throughput_per_hour'] for r in runs):.12g}"
    )
    return merged


@dataclass
class ReplayReport:
    """Everything a replay produced: the summary and the runs behind it."""

    summary: dict[str, Any]
    runs: list[RunOutput]
    per_seed: list[dict[str, Any]]


def replay(
    paths: Sequence[str | os.PathLike[str]] | None = None,
    *,
    traces: Sequence[tuple[str, ReplayColumns]] | None = None,
    config: RouterConfig | None = None,
    scenario: Scenario | None = None,
    seed: int = 0,
    replications: int = 1,
    out: str | os.PathLike[str] | None = None,
    figures: bool = True,
    progress: Callable[[int], None] | None = None,
    key_by_trace: bool = True,
) -> ReplayReport:
    """Replay traces (files or directories, or pre-loaded ``traces``).

    Returns the summary (the keys of :mod:`sim.results`, ``ci`` when
    ``replications > 1``, and ``per_trace``) plus the runs. With ``out``, writes
    ``tasks.parquet``, ``summary.json`` and PNG figures there atomically: into a
    temporary sibling directory, renamed into place only when complete.
    ``key_by_trace=False`` replays every trace in the world keyed by the seed alone
    (traces then share per-task draws: only for reproducing earlier results).
    """
    if replications < 1:
        raise ValueError(f"replications: expected an integer >= 1, got {replications}")
    config = config or load_seed_config()
    scenario = scenario or load_seed_scenario()
    loaded = list(traces) if traces is not None else load_traces(paths or [])
    model_ids = [m.id for m in config.models]
    tmp: Path | None = None
    writer: pq.ParquetWriter | None = None
    if out is not None:
        # Refused before any work when ``out`` is not ours to replace (sim.outdir).
        tmp = new_tmp_dir(check_out_dir(out, flag="out"))
        writer = pq.ParquetWriter(tmp / "tasks.parquet", TASK_SCHEMA)
    try:
        runs: list[RunOutput] = []
        done = 0
        for r in range(replications):
            for name, cols in loaded:
                base = done

                def tick(i: int, base: int = base) -> None:
                    if progress is not None:
                        progress(base + i)

                runs.append(
                    run_trace(
                        cols,
                        config,
                        scenario,
                        seed=seed + r,
                        trace=name,
                        replication=r,
                        writer=writer,
                        progress=tick if progress else None,
                        key="content" if key_by_trace else None,
                    )
                )
                done += len(cols.task_ids)
                if progress is not None:
                    progress(done)
        per_seed = [
            _merge([x for x in runs if x.replication == r], model_ids) for r in range(replications)
        ]
        summary = combine(per_seed)
        summary["seed"] = seed
        summary["per_trace"] = {
            name: combine([x.summary for x in runs if x.trace == name]) for name, _ in loaded
        }
        report = ReplayReport(summary, runs, per_seed)
        if tmp is not None and writer is not None:
            writer.close()
            writer = None
            (tmp / "summary.json").write_text(dump_summary(summary), encoding="utf-8")
            if figures:
                from sim.plots import write_figures

                write_figures(report, config, tmp)
            replace_dir(tmp, out)  # type: ignore[arg-type]
            tmp = None
        return report
    finally:
        if writer is not None:
            writer.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def dump_summary(summary: dict[str, Any]) -> str:
    """The summary as stable JSON text (sorted keys are NOT used: the order is the spec's)."""
    return json.dumps(summary, indent=2, allow_nan=True) + "\n"


def compare(
    config_a: RouterConfig,
    config_b: RouterConfig,
    traces: Sequence[tuple[str, ReplayColumns]],
    *,
    scenario: Scenario | None = None,
    seed: int = 0,
    replications: int = 5,
) -> dict[str, dict[str, float]]:
    """Paired comparison of B − A on the same seeds, per summary metric."""
    a = replay(
        traces=traces,
        config=config_a,
        scenario=scenario,
        seed=seed,
        replications=replications,
        figures=False,
    )
    b = replay(
        traces=traces,
        config=config_b,
        scenario=scenario,
        seed=seed,
        replications=replications,
        figures=False,
    )
    return {
        key: paired_difference([s[key] for s in a.per_seed], [s[key] for s in b.per_seed])
        for key in SCALAR_KEYS
    }
