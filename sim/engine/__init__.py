"""The engine: a trace replayed through the router's policy in SimPy.

- :mod:`sim.engine.driver`: :class:`Simulation`, each task a small state machine on
  SimPy events carrying out :class:`router.RoutingPolicy`'s answers against a
  :class:`sim.world.World`;
- :mod:`sim.engine.replays`: :func:`replay` and :func:`compare` (replications on common
  random numbers, one stream or per-file, ``--out`` directories);
- :mod:`sim.engine.results`: :class:`ResultSink` (compact per-task arrays),
  :func:`summarize`, confidence intervals and paired differences;
- :mod:`sim.engine.plots`: the replay's figures;
- :mod:`sim.engine.outdir`: output directories written whole or not at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from router._lazy import lazy_exports

if TYPE_CHECKING:
    import pyarrow as pa

    from sim.engine.driver import (
        Simulation,
        Spread,
    )
    from sim.engine.outdir import (
        OutputDirError,
        check_out_dir,
    )
    from sim.engine.plots import (
        write_figures,
    )
    from sim.engine.replays import (
        ReplayReport,
        RunOutput,
        compare,
        dump_summary,
        load_traces,
        replay,
        run_trace,
        trace_key,
    )
    from sim.engine.results import (
        SCALAR_KEYS,
        ResultSink,
        mean_ci,
        paired_difference,
        summarize,
    )

    #: the Arrow schema of tasks.parquet
    TASK_SCHEMA: pa.Schema

_EXPORTS = {
    "Simulation": "sim.engine.driver",
    "Spread": "sim.engine.driver",
    "OutputDirError": "sim.engine.outdir",
    "check_out_dir": "sim.engine.outdir",
    "write_figures": "sim.engine.plots",
    "ReplayReport": "sim.engine.replays",
    "RunOutput": "sim.engine.replays",
    "compare": "sim.engine.replays",
    "dump_summary": "sim.engine.replays",
    "load_traces": "sim.engine.replays",
    "replay": "sim.engine.replays",
    "run_trace": "sim.engine.replays",
    "trace_key": "sim.engine.replays",
    "ResultSink": "sim.engine.results",
    "SCALAR_KEYS": "sim.engine.results",
    "mean_ci": "sim.engine.results",
    "paired_difference": "sim.engine.results",
    "summarize": "sim.engine.results",
}
_lazy_getattr, _lazy_dir = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    # TASK_SCHEMA is built on first read, so importing the package imports no pyarrow.
    if name == "TASK_SCHEMA":
        from sim.engine.results import task_schema

        return task_schema()
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted({*_lazy_dir(), "TASK_SCHEMA"})


__all__ = [
    "OutputDirError",
    "ReplayReport",
    "ResultSink",
    "RunOutput",
    "SCALAR_KEYS",
    "Simulation",
    "Spread",
    "TASK_SCHEMA",
    "check_out_dir",
    "compare",
    "dump_summary",
    "load_traces",
    "mean_ci",
    "paired_difference",
    "replay",
    "run_trace",
    "summarize",
    "trace_key",
    "write_figures",
]
