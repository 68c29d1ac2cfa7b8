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

import contextlib
import copy
import functools
import gc
import json
import os
import shutil
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from router import RouterConfig, load_seed_config
from sim.engine.driver import Simulation, Spread, _chunk
from sim.engine.outdir import check_out_dir, new_tmp_dir, replace_dir
from sim.engine.results import (
    SCALAR_KEYS,
    ResultSink,
    combine,
    paired_difference,
    summarize,
    task_schema,
)
from sim.traces.tasks import (
    REQUIRED_COLUMNS,
    ReplayColumns,
    discover_traces,
    read_replay_columns,
    read_trace,
    replay_columns,
)
from sim.world.scenario import Scenario, load_seed_scenario

if TYPE_CHECKING:
    import pyarrow.parquet as pq

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


def load_traces(
    paths: Sequence[str | os.PathLike[str]], *, compact: bool = False
) -> list[tuple[str, ReplayColumns]]:
    """Discover, read and validate every trace under ``paths`` (name, columns) pairs.

    ``compact=True``: array columns read and validated batch by batch
    (:func:`sim.traces.tasks.read_replay_columns`: only the trace's schema columns are
    read, and nothing per task is kept but the arrays), for long traces; the replay's
    results are the same, and so are the errors for a bad file.
    """
    out = []
    for p in discover_traces(paths):
        if compact:
            out.append((p.name, read_replay_columns(p)))
            # The batches' buffers are freed but kept by the allocators (~45 MiB a
            # million tasks): hand them back before the run grows its own.
            _release_free_memory()
            continue
        df = read_trace(p)
        cols = replay_columns(df.select(list(REQUIRED_COLUMNS)))
        del df  # the validated frame (payloads, recorded columns) is not kept
        out.append((p.name, cols))
    return out


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Hand memory that is freed but still held by the allocators back to the system.

    Arrow's pool keeps freed buffers, and glibc's heap keeps free chunks below the
    last live one (``free`` only shrinks the heap from its top): after reading a long
    trace, or after a run, tens of megabytes a million tasks stay resident though
    nothing uses them, and the next stage's arrays are added on top. Values are not
    touched: this changes no result, only the resident set (and costs milliseconds).
    """
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_gc_depth = 0


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector off the hot path of a run.

    On entry every object alive (the loaded traces, config, world) is frozen
    (:func:`gc.freeze`: never walked again by a collection) and the collector is
    disabled; on exit, also on an exception, both are undone. A run makes no lasting
    reference cycles (tasks are freed by reference counting as they finish), while
    full collections over millions of live objects made long runs super-linear.
    Nested uses are no-ops.
    """
    global _gc_depth
    if _gc_depth:
        _gc_depth += 1
        try:
            yield
        finally:
            _gc_depth -= 1
        return
    was_enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    _gc_depth = 1
    try:
        yield
    finally:
        _gc_depth = 0
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _text_crc(values: Any, n: int, h: int) -> int:
    """CRC-32 of ``"\x1f".join(values)`` in UTF-8, over chunks (constant memory)."""
    step = 1 << 16
    for lo in range(0, n, step):
        part = _chunk(values, lo, min(lo + step, n))
        h = zlib.crc32(("\x1f" if lo else "").encode() + "\x1f".join(part).encode("utf-8"), h)
    return h if n else zlib.crc32(b"", h)


def trace_key(cols: ReplayColumns) -> int:
    """The identity of a trace: a CRC-32 of its content in canonical order.

    Hashed: every task's id, arrival time (float64 bits), type and token sizes, in the
    order of :func:`sim.traces.tasks.replay_columns` (by arrival, then id). So the key
    depends on what the trace *is*, not on how it is stored: the same tasks give the
    same key whatever the file's row order or format (Parquet, NDJSON, CSV), and two
    traces that differ in any task (even synthetic traces that reuse the ids
    ``synth-000001, ...`` with other arrivals) get different keys, hence independent
    worlds. The file's bytes are not used: they change with the row order and format.
    """
    n = len(cols.task_ids)
    h = _text_crc(cols.task_ids, n, 0)
    h = _number_crc(cols.arrival_s, "<f8", n, h)
    h = _text_crc(cols.task_types, n, h)
    h = _number_crc(cols.prompt_tokens, "<i8", n, h)
    return _number_crc(cols.completion_tokens, "<i8", n, h)


def _number_crc(values: Any, dtype: str, n: int, h: int) -> int:
    """CRC-32 of ``np.asarray(values, dtype).tobytes()``, a slice at a time (CRC-32 is
    incremental, so the value is the same): no widened copy of a whole column."""
    if n == 0:
        return zlib.crc32(b"", h)
    step = 1 << 16
    for lo in range(0, n, step):
        h = zlib.crc32(np.asarray(values[lo : lo + step], dtype=dtype).tobytes(), h)
    return h


class _ReadOnce:
    """A trace column that one run reads once, in order, then drops as it goes.

    :class:`~sim.engine.driver.Simulation` asks a column for rows ``lo:hi`` a chunk at
    a time, ``lo`` never decreasing. This column holds its rows as separate parts and
    drops every part that ends at or before the ``lo`` last asked for, so a run that
    owns its trace frees the trace while the results grow, rather than holding both at
    its end (~33 bytes a task). Rows already dropped cannot be read again.
    """

    __slots__ = ("_parts", "_n")

    def __init__(self, parts: Sequence[Any]) -> None:
        self._parts: deque[tuple[int, Any]] = deque()  # (first row, rows)
        lo = 0
        for part in parts:
            if len(part):
                self._parts.append((lo, part))
                lo += len(part)
        self._n = lo

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, rows: slice) -> Any:
        lo, hi, step = rows.indices(self._n)
        if step != 1:
            raise ValueError("a read-once column is read by contiguous slices")
        parts = self._parts
        while parts and parts[0][0] + len(parts[0][1]) <= lo:
            parts.popleft()
        if lo < hi and (not parts or lo < parts[0][0]):
            raise IndexError(f"rows {lo}:{hi} of a read-once column were already dropped")
        pieces = []
        for start, part in parts:
            if start >= hi:
                break
            pieces.append(part[max(lo - start, 0) : hi - start])
        if len(pieces) == 1:
            return pieces[0]  # a numpy or Arrow slice: the driver converts it
        return [x for piece in pieces for x in _chunk(piece, 0, len(piece))]


#: Rows of a numpy column's parts in :func:`_read_once` (the driver's chunk of rows).
_PART_ROWS = 1 << 16


def _read_once(cols: ReplayColumns) -> ReplayColumns:
    """``cols`` as :class:`_ReadOnce` columns (the same rows), for a run that owns them.

    Arrow columns keep their chunks as parts (a chunk a batch of the file); a numpy
    column is copied into parts of :data:`_PART_ROWS` rows, so that the parts can be
    freed one by one (the copy is made before the run, while its results are small).
    List columns (short traces) and a sample's ``index`` are left as they are.
    """

    def parts(column: Any) -> Any:
        if isinstance(column, np.ndarray) and column.ndim == 1:
            return _ReadOnce(
                [column[lo : lo + _PART_ROWS].copy() for lo in range(0, column.size, _PART_ROWS)]
            )
        chunks = getattr(column, "chunks", None)
        if chunks is not None:  # a pyarrow ChunkedArray
            return _ReadOnce(chunks)
        return column

    return ReplayColumns(
        task_ids=parts(cols.task_ids),
        arrival_s=parts(cols.arrival_s),
        task_types=cols.task_types,  # one byte a task (dictionary codes): kept whole
        prompt_tokens=parts(cols.prompt_tokens),
        completion_tokens=parts(cols.completion_tokens),
        index=cols.index,
        key=cols.key,
    )


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
    make_sink: Callable[..., ResultSink] = ResultSink,
    replicas: int = 1,
    state_delay: float = 0.0,
    spread: Spread = "round_robin",
    release_columns: Callable[[], None] | None = None,
) -> RunOutput:
    """Simulate one trace under one seed.

    ``key`` is the world's trace key: ``"content"`` (the default) is
    :func:`trace_key` of ``cols`` (or, for a sample cut from a longer trace, the key
    it carries in ``cols.key``, with ``cols.index`` its tasks' indices there); an
    integer pairs this run's draws with another trace's on purpose; None gives the
    world keyed by the seed alone (the draws of replays before traces were keyed, kept
    to reproduce earlier results).
    ``make_sink`` builds the result sink (called like :class:`ResultSink`).
    ``replicas``/``state_delay``/``spread``: the config as N router replicas sharing
    state with that delay (:class:`~sim.engine.driver.Simulation`).
    ``release_columns`` hands ``cols`` over to the run: it is called before the tasks
    are simulated, once this function has its own read-once view of the columns
    (:class:`_ReadOnce`), and the caller, holding the only other reference, drops it
    there. The run then frees the trace as it reads it, so a long trace's columns
    (~33 bytes a task) are not held under the results at the end of the run, nor
    under the summary's arrays. The results are the same.
    """
    model_ids = [m.id for m in config.models]
    n_tasks = len(cols.task_ids)
    horizon = (float(cols.arrival_s[-1]) if n_tasks else 0.0) + _HORIZON_MARGIN_S
    if key == "content":
        tkey: int | None = cols.key if cols.key is not None else trace_key(cols)
    else:
        tkey = key
    if release_columns is not None:
        cols = _read_once(cols)
        release_columns()
    # The world caches its draws in blocks of 4,096 tasks, at most ``max_cached_blocks``
    # per kind (512 by default: ~96 MiB once full, which any trace past 2M tasks fills).
    # A whole trace is replayed in task order and its tasks in flight touch a block or
    # two (a few dozen cached blocks), so 128 per kind serve it with 72 MiB less; a
    # block evicted too early would be drawn again, identically (results never depend
    # on the cache). A sample cut from a longer trace (``cols.index``) jumps between
    # that trace's blocks, so it keeps the default.
    cache: dict[str, int] = {} if cols.index is not None else {"max_cached_blocks": 128}
    world = scenario.realize(seed, horizon, model_ids, trace_key=tkey, **cache)
    # The run's churn (world draw blocks, task objects, Parquet chunks) leaves free
    # heap between live blocks, resident for nothing (~45 MiB a million tasks): the sink
    # hands it back every chunk of tasks (values unchanged; milliseconds a call).
    sink = make_sink(
        model_ids,
        writer=writer,
        trace=trace,
        replication=replication,
        seed=seed,
        every_chunk=_release_free_memory,
    )
    sim = Simulation(
        config,
        world,
        seed=seed,
        sink=sink,
        progress=progress,
        replicas=replicas,
        state_delay=state_delay,
        spread=spread,
    )
    with quiet_gc():
        sim.run(cols)
    sink.flush()
    trips = sim.breaker_trips
    calls, failures, spend = list(sim.calls), list(sim.failures), list(sim.spend)
    alerts = sim.budget_alerts
    used = {m for r in config.routes.values() for m in r.chain}
    outages = [o for o in world.outage_intervals() if o[0] in used] if n_tasks else []
    # The summary needs none of the run's objects: the world's draw caches (~100 MiB on
    # a long trace), the policy, the last chunk of tasks. They are freed (the
    # simulation's callbacks make reference cycles, hence the collection) and handed
    # back before the summary's arrays are made, which would otherwise come on top.
    # Not after a short run: there is little to free, and a full collection costs more
    # than the run when an optimizer replays thousands of small samples.
    del sim, world, cols
    if n_tasks >= ResultSink.CHUNK:
        gc.collect()
        _release_free_memory()
    # The summary reads the tasks' routes as the sink's codes; the object array of
    # route names (8 bytes a task) is made after it, not under its temporaries.
    arrays = sink.arrays(route=False)
    summary = summarize(
        arrays,
        model_ids,
        calls=calls,
        failures=failures,
        spend=spend,
        breaker_trips=trips,
        budget_alerts=alerts,
        routes=sink.route_codes(),
    )
    arrays["route"] = sink.route_array()
    return RunOutput(
        trace, replication, seed, summary, arrays, outages, calls, failures, spend, trips
    )


def _merge(runs: Sequence[RunOutput], model_ids: Sequence[str]) -> dict[str, Any]:
    """The summary of several traces' runs under one seed, as one population."""
    if len(runs) == 1:
        # One trace: its summary already is the population's (the same arrays and
        # counters); summarizing again would copy every per-task array once more.
        merged = copy.deepcopy(runs[0].summary)
        merged["throughput_per_hour"] = float(f"{merged['throughput_per_hour']:.12g}")
        return merged
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


#: ``summary["mode"]`` of a replay: each file its own run, or every file in one stream.
MODES: tuple[str, ...] = ("per_file", "one_stream")
#: The trace name of a one-stream run (its per-task records name each task's file).
ONE_STREAM = "one stream"


def merge_streams(
    traces: Sequence[tuple[str, ReplayColumns]],
) -> tuple[ReplayColumns, list[int], list[str]]:
    """Several traces as one arrival-ordered stream (``sim replay --as-one-stream``).

    Task ids are namespaced by their file, ``<file stem>/<task id>`` (the whole file
    name when two stems are equal, then ``#<n>`` when names are), so ids that repeat
    across files stay distinct; tasks arriving at the same instant are ordered by the
    namespaced id, as :func:`sim.traces.tasks.replay_columns` orders one file. Returns the
    merged columns, each task's file index and the prefix of each file.
    """
    traces = [(name, _as_lists(cols)) for name, cols in traces]
    names = [str(name) for name, _ in traces]
    stems = [Path(n).stem or n for n in names]
    prefixes = stems if len(set(stems)) == len(stems) else names
    if len(set(prefixes)) != len(prefixes):
        prefixes = [f"{p}#{i}" for i, p in enumerate(prefixes)]
    rows = sorted(
        (t, f"{prefixes[f]}/{cols.task_ids[i]}", f, i)
        for f, (_, cols) in enumerate(traces)
        for i, t in enumerate(cols.arrival_s)
    )
    cols = [c for _, c in traces]
    merged = ReplayColumns(
        [tid for _, tid, _, _ in rows],
        [t for t, _, _, _ in rows],
        [cols[f].task_types[i] for _, _, f, i in rows],
        [cols[f].prompt_tokens[i] for _, _, f, i in rows],
        [cols[f].completion_tokens[i] for _, _, f, i in rows],
    )
    return merged, [f for _, _, f, _ in rows], prefixes


def _as_lists(cols: ReplayColumns) -> ReplayColumns:
    """``cols`` with list columns (compact columns converted)."""
    if isinstance(cols.task_ids, list):
        return cols
    n = len(cols.task_ids)
    return ReplayColumns(
        *(
            _chunk(c, 0, n)
            for c in (
                cols.task_ids,
                cols.arrival_s,
                cols.task_types,
                cols.prompt_tokens,
                cols.completion_tokens,
            )
        )
    )


class _FileSink(ResultSink):
    """A result sink for one stream of several files: notes each finished task's file,
    and tallies calls, failed calls and spend per (file, model) from its attempts, so
    that every file gets its own summary out of the shared run. Per-task records carry
    the task's file as their ``trace``."""

    def __init__(
        self,
        model_ids: Sequence[str],
        *,
        file_of: dict[str, int],
        names: Sequence[str],
        **kw: Any,
    ) -> None:
        super().__init__(model_ids, **kw)
        self.file_of = file_of
        self.names = list(names)
        self.file = array("h")
        n = len(self.model_ids)
        self.file_calls = [[0] * n for _ in names]
        self.file_failures = [[0] * n for _ in names]
        self.file_spend = [[0.0] * n for _ in names]

    def add(self, r: Any) -> None:
        f = self.file_of[r.task_id]
        self.file.append(f)
        for a in r.attempts:
            m = self.model_index.get(a.model)
            if m is None:
                continue
            self.file_calls[f][m] += 1
            self.file_failures[f][m] += a.kind != "ok"
            self.file_spend[f][m] += a.cost_usd
        super().add(r)

    def flush(self) -> None:
        """Write the buffered records, one row group per file (in file order), each
        naming its file as ``trace``."""
        if self.writer is None or len(self.started) == self._written:
            return
        import pyarrow as pa

        files = np.frombuffer(self.file, dtype=np.int16)[self._written :].copy()
        stream = self.trace
        try:
            for f in sorted(set(files.tolist())):
                self.trace = self.names[f]
                self.writer.write_table(self._pending_table().filter(pa.array(files == f)))
        finally:
            self.trace = stream
        self._clear_pending()

    def file_summary(self, f: int, *, breaker_trips: int, budget_alerts: int) -> dict[str, Any]:
        """The summary of file ``f``'s tasks in the shared run (breaker trips and budget
        alerts are the stream's: breakers and budgets are shared)."""
        mask = np.frombuffer(self.file, dtype=np.int16) == f
        arrays = {k: v[mask] for k, v in self.arrays().items()}
        return summarize(
            arrays,
            self.model_ids,
            calls=self.file_calls[f],
            failures=self.file_failures[f],
            spend=self.file_spend[f],
            breaker_trips=breaker_trips,
            budget_alerts=budget_alerts,
        )


def _one_stream_replication(
    r: int,
    writer: pq.ParquetWriter | None,
    progress: Callable[[int], None] | None,
    *,
    merged: ReplayColumns,
    file_of: dict[str, int],
    names: Sequence[str],
    config: RouterConfig,
    scenario: Scenario,
    seed: int,
    key_by_trace: bool,
    replica_kw: dict[str, Any],
) -> tuple[list[RunOutput], dict[str, dict[str, Any]]]:
    """Replication ``r`` of every file merged into one stream through one policy: its
    run, and each file's summary (in ``names`` order)."""
    sinks: list[_FileSink] = []

    def make_sink(model_ids: Sequence[str], **kw: Any) -> _FileSink:
        sinks.append(_FileSink(model_ids, file_of=file_of, names=names, **kw))
        return sinks[-1]

    run = run_trace(
        merged,
        config,
        scenario,
        seed=seed + r,
        trace=ONE_STREAM,
        replication=r,
        writer=writer,
        progress=progress,
        key="content" if key_by_trace else None,
        make_sink=make_sink,
        **replica_kw,
    )
    sink = sinks[-1]
    alerts = int(run.summary.get("budget_alerts", 0))
    files = {
        name: sink.file_summary(f, breaker_trips=run.breaker_trips, budget_alerts=alerts)
        for f, name in enumerate(names)
    }
    return [run], files


def _per_file_replication(
    r: int,
    writer: pq.ParquetWriter | None,
    progress: Callable[[int], None] | None,
    *,
    loaded: list[tuple[str, ReplayColumns | None]],
    config: RouterConfig,
    scenario: Scenario,
    seed: int,
    key_by_trace: bool,
    replica_kw: dict[str, Any],
    release_after: int | None = None,
) -> tuple[list[RunOutput], None]:
    """Replication ``r`` of each file as its own run, in ``loaded`` order.

    ``release_after``: the last replication; in it each file's entry of ``loaded`` (a
    list this replay owns) becomes ``(name, None)`` as its run starts, the run then
    freeing the columns as it reads them (see :func:`run_trace`).
    """
    runs: list[RunOutput] = []
    done = 0
    for f in range(len(loaded)):
        # Columns passed by index, not kept in a local of this loop: the list entry and
        # run_trace's argument are then their only references (see release below).
        name, cols = loaded[f]
        assert cols is not None, "a trace's columns were released before its last run"
        n_tasks = len(cols.task_ids)
        del cols
        base = done

        def tick(i: int, base: int = base) -> None:
            if progress is not None:
                progress(base + i)

        def release(f: int = f, name: str = name) -> None:
            loaded[f] = (name, None)

        # No ``**replica_kw`` here: a call that unpacks keywords packs its positional
        # arguments into a tuple that the caller holds until the call returns, and that
        # tuple would keep the columns alive past release_columns.
        runs.append(
            run_trace(
                loaded[f][1],  # type: ignore[arg-type]  # not None: asserted above
                config,
                scenario,
                seed=seed + r,
                trace=name,
                replication=r,
                writer=writer,
                progress=tick if progress else None,
                key="content" if key_by_trace else None,
                release_columns=release if r == release_after else None,
                replicas=replica_kw["replicas"],
                state_delay=replica_kw["state_delay"],
                spread=replica_kw["spread"],
            )
        )
        done += n_tasks
    return runs, None


# The work of a fork pool's workers: set by the parent just before it forks, so the
# workers inherit the traces, config and scenario without pickling them.
_POOL_WORK: Callable[..., Any] | None = None
_POOL_PARTS: Path | None = None


def _pool_replication(r: int) -> tuple[Any, ...]:
    """In a worker: replication ``r``, its records written to its own part file."""
    import pyarrow.parquet as pq

    assert _POOL_WORK is not None
    if _POOL_PARTS is None:
        return _POOL_WORK(r, None, None)
    part = _POOL_PARTS / f"part-{r:06d}.parquet"
    with pq.ParquetWriter(part, task_schema()) as writer:
        return _POOL_WORK(r, writer, None)


def _replications(
    work: Callable[..., tuple[list[RunOutput], Any]],
    replications: int,
    *,
    jobs: int,
    writer: pq.ParquetWriter | None,
    parts: Path | None,
    progress: Callable[[int], None] | None,
    tasks_per_replication: int,
) -> list[tuple[list[RunOutput], Any]]:
    """``work(r, writer, progress)`` for every replication, in replication order.

    ``jobs`` > 1 runs them in a pool of forked processes, each replication writing its
    records to a part file under ``parts``; the parent copies the parts' row groups
    into ``writer`` in replication order, so the output is the same, byte for byte, as
    one process writing as it goes (every replication has its own seed: a process
    shares nothing with another but what it inherited).
    """
    out: list[tuple[list[RunOutput], Any]] = []
    if jobs <= 1 or replications == 1:
        for r in range(replications):
            base = r * tasks_per_replication

            def tick(i: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + i)

            out.append(work(r, writer, tick if progress else None))
            if progress is not None:
                progress(base + tasks_per_replication)
        return out
    import multiprocessing

    import pyarrow.parquet as pq

    global _POOL_WORK, _POOL_PARTS
    _POOL_WORK, _POOL_PARTS = work, parts if writer is not None else None
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(jobs, replications)) as pool:
            for r, result in enumerate(pool.imap(_pool_replication, range(replications))):
                out.append(result)
                if writer is not None and parts is not None:
                    part = parts / f"part-{r:06d}.parquet"
                    source = pq.ParquetFile(part)
                    for g in range(source.num_row_groups):
                        writer.write_table(source.read_row_group(g))
                    source.close()
                    part.unlink()
                if progress is not None:
                    progress((r + 1) * tasks_per_replication)
    finally:
        _POOL_WORK = _POOL_PARTS = None
    return out


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
    one_stream: bool = False,
    replicas: int = 1,
    state_delay: float = 0.0,
    spread: Spread = "round_robin",
    jobs: int = 1,
    consume_traces: bool = False,
) -> ReplayReport:
    """Replay traces (files or directories, or pre-loaded ``traces``).

    Returns the summary (the keys of :mod:`sim.engine.results`, ``ci`` when
    ``replications > 1``, ``per_trace`` and ``mode``) plus the runs. With ``out``,
    writes ``tasks.parquet``, ``summary.json`` and PNG figures there atomically: into
    a temporary sibling directory, renamed into place only when complete.
    ``key_by_trace=False`` replays every trace in the world keyed by the seed alone
    (traces then share per-task draws: only for reproducing earlier results).

    ``mode`` says how files were run. ``"per_file"`` (the default): each file is a
    separate run with a fresh policy (its own breakers, budgets and spend), and the
    summary merges them as one population. ``"one_stream"`` (``one_stream=True``):
    the files are merged into one arrival-ordered stream (:func:`merge_streams`,
    task ids namespaced by file) through one policy, so breakers, budgets and spend
    are shared as they would be in one deployment; ``per_trace`` then gives each
    file's tasks within that shared run (``breaker_trips`` and ``budget_alerts``
    there are the stream's).

    ``replicas`` > 1 runs each run's config as that many router replicas, tasks spread
    ``round_robin`` or at ``random`` (seeded), sharing breakers and spend with a
    propagation delay of ``state_delay`` seconds (0: as through the Redis store;
    ``math.inf``: no sharing); the summary then says ``replicas``, ``state_delay``
    and ``spread``.

    ``jobs`` > 1 runs the replications in that many forked processes (POSIX ``fork``):
    the summary, the runs and ``tasks.parquet`` are the same, byte for byte, as with
    ``jobs=1`` (each replication's seed is its own; results are merged in replication
    order).

    ``consume_traces=True`` hands ``traces`` (a list) over: it is emptied, and each
    trace's last run frees its columns as it reads them (see :func:`run_trace`), so a
    long trace's columns are not held under its results (the caller must keep no other
    reference to them). Traces read from ``paths`` are always freed so. Either way
    the results are the same.
    """
    replica_kw: dict[str, Any] = {
        "replicas": replicas,
        "state_delay": state_delay,
        "spread": spread,
    }
    if replications < 1:
        raise ValueError(f"replications: expected an integer >= 1, got {replications}")
    if jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1, got {jobs}")
    config = config or load_seed_config()
    scenario = scenario or load_seed_scenario()
    own = traces is None or consume_traces
    if traces is None:
        loaded: list[tuple[str, ReplayColumns | None]] = list(
            load_traces(paths or [], compact=True)
        )
    else:
        loaded = list(traces)
        if consume_traces:
            if not isinstance(traces, list):
                raise TypeError("consume_traces: traces must be a list (it is emptied)")
            traces.clear()
    model_ids = [m.id for m in config.models]
    tmp: Path | None = None
    writer: pq.ParquetWriter | None = None
    if out is not None:
        import pyarrow.parquet as pq

        # Refused before any work when ``out`` is not ours to replace (sim.engine.outdir).
        tmp = new_tmp_dir(check_out_dir(out, flag="out"))
        writer = pq.ParquetWriter(tmp / "tasks.parquet", task_schema())
    try:
        common: dict[str, Any] = {
            "config": config,
            "scenario": scenario,
            "seed": seed,
            "key_by_trace": key_by_trace,
            "replica_kw": replica_kw,
        }
        stream = one_stream and bool(loaded)
        if stream:
            merged, file_index, _ = merge_streams(loaded)  # type: ignore[arg-type]
            names = [name for name, _ in loaded]
            work: Callable[..., tuple[list[RunOutput], Any]] = functools.partial(
                _one_stream_replication,
                merged=merged,
                file_of=dict(zip(merged.task_ids, file_index, strict=True)),
                names=names,
                **common,
            )
            per_rep_tasks = len(merged.task_ids)
        else:
            per_rep_tasks = sum(len(cols.task_ids) for _, cols in loaded)  # type: ignore[union-attr]
            # Columns are released in the last replication, run by this process (a
            # forked worker's release would free nothing of the parent's).
            work = functools.partial(
                _per_file_replication,
                loaded=loaded,
                release_after=replications - 1
                if own and (jobs <= 1 or replications == 1)
                else None,
                **common,
            )
        results = _replications(
            work,
            replications,
            jobs=jobs,
            writer=writer,
            parts=tmp,
            progress=progress,
            tasks_per_replication=per_rep_tasks,
        )
        runs = [run for rep, _ in results for run in rep]
        if stream:
            per_seed = [x.summary for x in runs]
            summary = combine(per_seed)
            summary["seed"] = seed
            summary["mode"] = "one_stream"
            if replicas > 1:
                summary.update(replica_kw)
            summary["per_trace"] = {
                name: combine([files[name] for _, files in results]) for name, _ in loaded
            }
        else:
            per_seed = [
                _merge([x for x in runs if x.replication == r], model_ids)
                for r in range(replications)
            ]
            summary = combine(per_seed)
            summary["seed"] = seed
            summary["mode"] = "per_file"
            if replicas > 1:
                summary.update(replica_kw)
            summary["per_trace"] = {
                name: combine([x.summary for x in runs if x.trace == name]) for name, _ in loaded
            }
        report = ReplayReport(summary, runs, per_seed)
        if tmp is not None and writer is not None:
            writer.close()
            writer = None
            (tmp / "summary.json").write_text(dump_summary(summary), encoding="utf-8")
            if figures:
                from sim.engine.plots import write_figures

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
    jobs: int = 1,
) -> dict[str, dict[str, float]]:
    """Paired comparison of B − A on the same seeds, per summary metric (``jobs``:
    processes per replay, as in :func:`replay`; the figures do not depend on it)."""
    a = replay(
        traces=traces,
        config=config_a,
        scenario=scenario,
        seed=seed,
        replications=replications,
        figures=False,
        jobs=jobs,
    )
    b = replay(
        traces=traces,
        config=config_b,
        scenario=scenario,
        seed=seed,
        replications=replications,
        figures=False,
        jobs=jobs,
    )
    return {
        key: paired_difference([s[key] for s in a.per_seed], [s[key] for s in b.per_seed])
        for key in SCALAR_KEYS
    }
