"""The ``sim`` command line: a thin layer over :mod:`sim.engine.replays` and friends.

Library errors (:class:`router.errors.InputError`) become one line on stderr
and exit code 2 here, and only here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from router.errors import InputError, fail_cli, run_cli

if TYPE_CHECKING:
    import polars as pl

    from router.config import RouterConfig
    from sim.world.scenario import Scenario

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Replay task traces against a SimPy twin of your LLM providers.",
)
err = Console(stderr=True)


#: ``sim compare`` pairs configs on seeds ``seed + COMPARE_SEED_OFFSET + r`` by default: a
#: stream that a study with the same ``--seed`` never trains (``seed + [0, R)``), selects
#: (``+ 10_000``) or reports (``+ 20_000``) on (optimize.study.SEED_STREAMS["compare"]).
COMPARE_SEED_OFFSET = 30_000
#: Seeds in one stream: ``--replications`` above this would run into the next stream.
SEED_STREAM_WIDTH = 10_000

#: Where a user gets files to edit, quoted in hints.
INIT_HINT = "`sim init DIR` writes editable copies of the seed config and scenario"

#: Library argument names -> the CLI flags that set them (messages name the flag).
_FLAGS = {
    "n_tasks": "--tasks",
    "duration_s": "--duration-s",
    "rate_per_s": "--rate",
    "arrival": "--arrival",
    "mix": "--mix",
    "seed": "--seed",
    "limit": "--limit",
    "replications": "--replications",
}


def _flag_names(message: str) -> str:
    """``message`` with a leading library argument name replaced by its CLI flag."""
    name, sep, rest = message.partition(":")
    base = name.split("[", 1)[0]
    if sep and base in _FLAGS:
        return f"{_FLAGS[base]}{name[len(base) :]}{sep}{rest}"
    return message


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("costroute")
        except PackageNotFoundError:  # running from a source tree that is not installed
            text = "unknown (not installed)"
        from router import native

        # which modules run: the compiled ones, or the Python sources and why
        sys.stdout.write(f"sim (costroute) {text}, {native.build()}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            metavar="",
            help="Print the costroute version and exit.",
        ),
    ] = False,
) -> None:
    """Replay task traces against a SimPy twin of your LLM providers."""


def _config(path: Path | None, flag: str = "--config") -> RouterConfig:
    if path is None:
        from router.catalog import load_seed_config

        return load_seed_config()
    if not path.exists():
        raise InputError(f"{flag}: {path}: no such file; {INIT_HINT}")
    from router.config import load_config

    return load_config(path)


def _scenario(path: Path | None) -> Scenario:
    # Imported here, not with the module: the scenario models pull in numpy and scipy,
    # which `sim --help` does not need.
    from sim.world.scenario import load_scenario, load_seed_scenario

    if path is None:
        return load_seed_scenario()
    if not path.exists():
        raise InputError(f"--scenario: {path}: no such file; {INIT_HINT}")
    return load_scenario(path)


def _check_pair(
    cfg: RouterConfig, scn: Scenario, config: Path | None, scenario: Path | None
) -> None:
    """Refuse a config whose models the scenario cannot simulate; warn on prices."""
    from sim.world.consistency import missing_models, price_warning

    missing = missing_models(cfg, scn)
    scn_name = str(scenario) if scenario else "the seed scenario"
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(
            f"--scenario: {scn_name} has no model {shown} of the config "
            f"(it has: {', '.join(scn.models)}); pass --scenario with a scenario that "
            f"models every config model ({INIT_HINT})"
        )
    warning = price_warning(
        cfg,
        scn,
        config_name=str(config) if config else "the seed config",
        scenario_name=scn_name,
    )
    if warning:
        sys.stderr.write(warning + "\n")


def _parse_mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise InputError(f"--mix: expected name=weight pairs, got {part!r}") from None
    return mix


class _LazyProgress:
    """A rich progress bar that appears only once a replay has run for a second."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.bar: Progress | None = None
        self.task = None

    def __call__(self, done: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            if time.perf_counter() - self.t0 < 1.0:
                return
            self.bar = Progress(
                TextColumn("replaying"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,}"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("replay", total=self.total)
        self.bar.update(self.task, completed=min(done, self.total))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_summary(summary: dict, out: Path | None) -> None:
    from rich.table import Table

    from sim.engine.results import SCALAR_KEYS

    table = Table(title="Replay summary", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    ci = summary.get("ci", {})
    for key in SCALAR_KEYS:
        v = summary[key]
        text = f"{v:,.6g}" if isinstance(v, float) else f"{v:,}"
        if key in ci:
            text += f" ± {ci[key]:.3g}"
        table.add_row(key, text)
    console = Console()
    console.print(table)
    failures = summary.get("failures") or {}
    if failures:
        causes = summary.get("no_candidate_causes") or {}
        parts = []
        for reason, count in sorted(failures.items(), key=lambda kv: -kv[1]):
            text = f"{reason} {count:,.6g}"
            if reason == "no_candidate" and causes:
                text += " (" + ", ".join(f"{c} {k:,.6g}" for c, k in causes.items()) + ")"
            parts.append(text)
        console.print("  failures: " + "; ".join(parts))
    per_route = summary.get("per_route") or {}
    if len(per_route) > 1:
        for name, r in per_route.items():
            why = ", ".join(f"{k} {v:,.6g}" for k, v in r["failures"].items())
            console.print(
                f"  route {name}: {r['tasks']:,.6g} tasks, completion "
                f"{r['completion_rate']:.3f}" + (f" (failures: {why})" if why else "")
            )
    if summary.get("diagnosis"):
        console.print(f"  diagnosis: {summary['diagnosis']}")
    per_trace = summary.get("per_trace", {})
    if summary.get("mode") == "one_stream":
        console.print(
            f"  one stream: {len(per_trace)} file(s) through one router "
            "(shared breakers, budgets and spend)"
        )
    if len(per_trace) > 1:
        for name, s in per_trace.items():
            console.print(
                f"  {name}: {s['tasks']:,} tasks, completion {s['completion_rate']:.3f}, "
                f"${s['cost_per_task']:.5f}/task, p95 {s['latency_p95_s']:.2f} s"
            )
    if out is not None:
        console.print(f"results written to {out}/ (tasks.parquet, summary.json, figures)")


@app.command()
def replay(
    paths: Annotated[list[Path], typer.Argument(help="Trace files or directories.")],
    config: Annotated[Path | None, typer.Option(help="Router config (default: the seed).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario (default: the seed).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; replication r uses seed + r.")] = 0,
    replications: Annotated[int, typer.Option(min=1, help="Seeds to replicate over.")] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for tasks.parquet, summary.json, PNGs: new, empty, or an "
            "earlier --out (which is replaced)."
        ),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json/--no-json", metavar="", help="Print only the summary JSON.")
    ] = False,
    as_one_stream: Annotated[
        bool,
        typer.Option(
            "--as-one-stream",
            help="Merge the files into one arrival-ordered stream through one router "
            "(shared breakers, budgets and spend; task ids prefixed by file). Default: "
            "each file is its own run.",
        ),
    ] = False,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run the config as N router replicas (tasks spread as --spread says), "
            "each with its own breakers and budget view.",
        ),
    ] = 1,
    spread: Annotated[
        str,
        typer.Option(
            help="How tasks are spread over --replicas: round_robin, or random (seeded).",
        ),
    ] = "round_robin",
    state_delay: Annotated[
        float,
        typer.Option(
            help="Seconds before a replica's breaker transitions and spend reach the "
            "others: 0 = shared through Redis, inf = nothing shared.",
        ),
    ] = 0.0,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run replications in N processes (fork); results are identical, byte for "
            "byte, to --jobs 1.",
        ),
    ] = 1,
) -> None:
    """Replay traces with the router's own policy; print the summary.

    Each file is replayed as its own run by default (summary "mode": "per_file"); with
    --as-one-stream the files are one stream through one router ("mode": "one_stream"),
    and per_trace gives each file's tasks within it. With --replicas N each run is N
    router replicas sharing breakers and spend after --state-delay seconds.
    """
    from sim.engine.outdir import check_out_dir
    from sim.engine.replays import dump_summary, load_traces
    from sim.engine.replays import replay as run_replay

    try:
        if not state_delay >= 0.0:
            fail_cli(f"--state-delay: expected seconds >= 0 or inf, got {state_delay}")
        if spread not in ("round_robin", "random"):
            fail_cli(f"--spread: expected 'round_robin' or 'random', got {spread!r}")
        if out is not None:
            check_out_dir(out, flag="--out")  # before any work: refuse a foreign directory
        cfg = _config(config)
        scn = _scenario(scenario)
        _check_pair(cfg, scn, config, scenario)
        traces = load_traces(paths, compact=True)
        total = sum(len(c.task_ids) for _, c in traces) * replications
        bar = _LazyProgress(total, quiet=json_)
        try:
            report = run_replay(
                traces=traces,
                config=cfg,
                scenario=scn,
                seed=seed,
                replications=replications,
                out=out,
                progress=bar,
                one_stream=as_one_stream,
                replicas=replicas,
                state_delay=state_delay,
                spread=spread,  # type: ignore[arg-type]
                jobs=jobs,
                # Nothing here needs the columns after the run: the run frees them as
                # it reads them (~33 bytes a task less at the end of a long run).
                consume_traces=True,
            )
        finally:
            bar.close()
    except InputError as exc:
        fail_cli(str(exc))
    except OSError as exc:
        if out is None:
            raise
        fail_cli(f"--out: {out}: cannot write: {exc.strerror or exc}")
    if json_:
        sys.stdout.write(dump_summary(report.summary))
    else:
        _print_summary(report.summary, out)


@app.command()
def compare(
    config_a: Annotated[Path, typer.Argument(help="Config A (the baseline).")],
    config_b: Annotated[Path, typer.Argument(help="Config B.")],
    paths: Annotated[list[Path], typer.Argument(help="Trace files or directories.")],
    scenario: Annotated[Path | None, typer.Option(help="Scenario (default: the seed).")] = None,
    seed: Annotated[
        int, typer.Option(help="Base seed (a study's --seed); pair r uses seed + offset + r.")
    ] = 0,
    seed_offset: Annotated[
        int,
        typer.Option(
            min=0,
            help="Where the paired seeds start past --seed. The default 30000 is a stream no "
            "`optimize run` with this --seed trained (+0), selected (+10000) or reported "
            "(+20000) on; 20000 re-runs a study's reporting seeds.",
        ),
    ] = COMPARE_SEED_OFFSET,
    replications: Annotated[
        int, typer.Option(min=2, max=SEED_STREAM_WIDTH, help="Paired seeds.")
    ] = 5,
    json_: Annotated[
        bool,
        typer.Option("--json/--no-json", metavar="", help="Print only the comparison JSON."),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run each config's replications in N processes (fork); results are "
            "identical, byte for byte, to --jobs 1.",
        ),
    ] = 1,
) -> None:
    """Run A and B on the same seeds; report B − A per metric with its 95% CI.

    The seeds are seed + seed-offset + [0, replications): by default a stream that a
    study with the same --seed never trained, selected or reported its winner on, so
    the check is independent of how the winner was chosen.
    """
    from sim.engine.replays import compare as run_compare
    from sim.engine.replays import load_traces

    try:
        a, b = _config(config_a, "CONFIG_A"), _config(config_b, "CONFIG_B")
        scn = _scenario(scenario)
        _check_pair(a, scn, config_a, scenario)
        _check_pair(b, scn, config_b, scenario)
        result = run_compare(
            a,
            b,
            load_traces(paths, compact=True),
            scenario=scn,
            seed=seed + seed_offset,
            replications=replications,
            jobs=jobs,
        )
    except InputError as exc:
        fail_cli(str(exc))
    if json_:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    from rich.table import Table

    first = seed + seed_offset
    table = Table(
        title=f"B − A over {replications} paired seeds ({first}..{first + replications - 1})"
    )
    for col in ("metric", "A", "B", "B − A", "95% CI"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, d in result.items():
        table.add_row(
            key,
            f"{d['a']:.6g}",
            f"{d['b']:.6g}",
            f"{d['diff']:+.4g}",
            f"[{d['diff_ci_low']:+.4g}, {d['diff_ci_high']:+.4g}]",
        )
    Console().print(table)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output trace (.parquet, .ndjson or .csv).")],
    tasks: Annotated[int | None, typer.Option(help="Number of tasks.")] = None,
    duration_s: Annotated[float | None, typer.Option(help="Simulated seconds of traffic.")] = None,
    arrival: Annotated[str, typer.Option(help="poisson | bursty | diurnal")] = "poisson",
    rate: Annotated[float, typer.Option(help="Mean arrivals per second.")] = 0.25,
    mix: Annotated[str | None, typer.Option(help="Task-type mix, e.g. json=3,sql=1.")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write a synthetic trace (seeded; same seed, same bytes)."""
    from sim.traces.synth import synthesize

    if tasks is None and duration_s is None:
        fail_cli("--tasks or --duration-s is required (e.g. --tasks 1000, or --duration-s 86400)")
    if arrival not in ("poisson", "bursty", "diurnal"):
        fail_cli(f"--arrival: expected poisson, bursty or diurnal, got {arrival!r}")
    try:
        df = synthesize(
            n_tasks=tasks,
            duration_s=duration_s,
            arrival=arrival,  # type: ignore[arg-type]
            rate_per_s=rate,
            mix=_parse_mix(mix),
            seed=seed,
        )
        _write_trace_file(df, out)
    except InputError as exc:
        fail_cli(_flag_names(str(exc)))
    err.print(f"wrote {df.height:,} tasks to {out}")


def _write_trace_file(df: pl.DataFrame, out: Path) -> None:
    """Write a trace, creating its directory; OS errors become one-line input errors."""
    from sim.traces.tasks import write_trace

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_trace(df, out)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror or exc}") from None


@app.command("import-azure")
def import_azure_cmd(
    csv: Annotated[Path, typer.Argument(help="AzureLLMInferenceTrace_*.csv")],
    out: Annotated[Path, typer.Argument(help="Output trace file.")],
    seed: Annotated[int, typer.Option(help="Seed of the task-type draw.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Keep the first N requests.")] = None,
    mix: Annotated[str | None, typer.Option(help="Task-type mix, e.g. json=3,sql=1.")] = None,
) -> None:
    """Convert the public Azure LLM inference trace to the trace schema."""
    from sim.traces.azure import import_azure

    try:
        df = import_azure(csv, seed=seed, limit=limit, mix=_parse_mix(mix))
        _write_trace_file(df, out)
    except InputError as exc:
        fail_cli(_flag_names(str(exc)))
    err.print(f"wrote {df.height:,} tasks to {out}")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the copies.")] = Path("."),
) -> None:
    """Write editable copies of the seed config and seed scenario."""
    from importlib import resources

    sources = (
        (_seed_config_path(), directory / "router.yaml"),
        (
            Path(str(resources.files("sim") / "data" / "seed_scenario.yaml")),
            directory / "scenario.yaml",
        ),
    )
    for _, dest in sources:
        if dest.exists():
            fail_cli(f"{dest}: already exists; not overwriting it (choose another directory)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for src, dest in sources:
            shutil.copyfile(src, dest)
    except OSError as exc:
        fail_cli(f"{directory}: cannot write: {exc.strerror or exc}")
    sys.stderr.write(
        f"wrote {sources[0][1]}, {sources[1][1]}; edit them, then: sim replay traces/ "
        f"--config {sources[0][1]} --scenario {sources[1][1]}\n"
    )


def request_logger(
    stream: IO[str] | None = None,
) -> Callable[[str, str, str | None, int | None, float], None]:
    """The ``sim serve`` request log: one line per request on stderr (or ``stream``).

    ``POST /v1/chat/completions model=grok-4.20 status=200 812.4 ms``; a request the
    server never answered (a hang the client gave up on) shows ``status=-``. Only
    these five facts are logged: never a payload, a header or a key.
    """

    def log(
        method: str, path: str, model: str | None, status: int | None, latency_ms: float
    ) -> None:
        out = stream if stream is not None else sys.stderr
        shown = "-" if status is None else str(status)
        out.write(f"{method} {path} model={model or '-'} status={shown} {latency_ms:.1f} ms\n")
        out.flush()

    return log


@app.command()
def serve(
    scenario: Annotated[Path | None, typer.Option(help="Scenario (default: the seed).")] = None,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    time_scale: Annotated[
        float, typer.Option(help="Wall seconds per scenario second (0.01: 100x faster).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the scenario's randomness.")] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet/--no-quiet",
            metavar="",
            help="Do not log requests (by default one line per request on stderr).",
        ),
    ] = False,
) -> None:
    """Serve the scenario's models as an OpenAI-compatible API until Ctrl-C / SIGTERM.

    Prints the base URL (http://HOST:PORT/v1) on stdout once it is listening.

    Logs one line per request on stderr: method, path, model, status, latency.
    Never a payload, a header or a key. --quiet turns the log off.
    """
    import asyncio
    import errno
    import inspect
    import math
    import os
    import signal

    from sim.twin.server import TwinServer

    if not (math.isfinite(time_scale) and time_scale > 0):
        fail_cli(f"--time-scale: expected a positive number, got {time_scale:g}")
    if not 0 <= port <= 65535:
        fail_cli(f"--port: expected 0..65535, got {port}")
    if seed < 0:
        fail_cli(f"--seed: expected an integer >= 0, got {seed}")
    hooks: dict[str, object] = {}
    # The request log needs TwinServer's ``on_request`` hook (see request_logger).
    if not quiet and "on_request" in inspect.signature(TwinServer).parameters:
        hooks["on_request"] = request_logger()
    try:
        twin = TwinServer(
            _scenario(scenario), seed=seed, time_scale=time_scale, host=host, port=port, **hooks
        )
    except InputError as exc:
        fail_cli(str(exc))

    async def run() -> None:
        try:
            await twin.start()
        except OSError as exc:
            # The port is taken, or the address is not this host's.
            in_use = exc.errno == errno.EADDRINUSE
            hint = "; try --port 0 (any free port)" if in_use and port else ""
            why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's text is long
            fail_cli(f"--port: cannot listen on {host}:{port}: {why}{hint}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sys.stdout.write(twin.url + "\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await twin.stop()

    asyncio.run(run())


# --------------------------------------------------------------------------- #
# Importers of real logs (sim.traces): attempt records, traces, catalogs.      #
# --------------------------------------------------------------------------- #

#: Library argument names of the sim.traces importers -> the flags that set them.
_IMPORT_FLAGS = {
    "mapping": "--map",
    "units": "--units",
    "time_format": "--time-format",
    "concurrency": "--concurrency",
    "pass_rate": "--pass-rate",
    "latency_sigma": "--sigma",
    "chain_length": "--chain-length",
    "attempts_per_model": "--attempts-per-model",
}


def _import_error(exc: InputError) -> str:
    """An importer's message with a leading library argument name replaced by its flag."""
    message = str(exc)
    name, sep, rest = message.partition(":")
    if sep and name in _IMPORT_FLAGS:
        return f"{_IMPORT_FLAGS[name]}{sep}{rest}"
    return message


def _check_outputs(*outputs: tuple[str, Path | None]) -> None:
    """Refuse, before any work, output paths of unknown format or named twice."""
    from sim.traces.tasks import TRACE_EXTENSIONS

    seen: dict[Path, str] = {}
    for flag, path in outputs:
        if path is None:
            continue
        if path.suffix.lower() not in TRACE_EXTENSIONS:
            fail_cli(
                f"{flag}: {path}: unknown format '{path.suffix or '(no extension)'}' "
                f"(expected one of {', '.join(TRACE_EXTENSIONS)})"
            )
        key = path.resolve()
        if key in seen:
            fail_cli(f"{flag}: {path}: the same file as {seen[key]}")
        seen[key] = flag


def _write_outputs(outputs: list[tuple[object, Path]]) -> None:
    """Write validated frames all or nothing; OS errors become one-line input errors."""
    from sim.traces._common import write_frames

    try:
        write_frames(outputs)  # type: ignore[arg-type]
    except OSError as exc:
        paths = ", ".join(str(p) for _, p in outputs)
        raise InputError(f"{paths}: cannot write: {exc.strerror or exc}") from None


@app.command("import-litellm")
def import_litellm_cmd(
    spendlogs: Annotated[
        Path, typer.Argument(help="LiteLLM_SpendLogs export (.csv, .json, .ndjson, .parquet).")
    ],
    out: Annotated[Path, typer.Argument(help="Output attempt records (.parquet, .ndjson, .csv).")],
    tasks: Annotated[
        Path | None, typer.Option(help="Also write the matching task trace here.")
    ] = None,
    task_column: Annotated[
        str | None,
        typer.Option(help="Group requests into tasks by this column (e.g. session_id)."),
    ] = None,
    task_type: Annotated[
        str | None, typer.Option(help="Task type of every request (default: none/unknown).")
    ] = None,
) -> None:
    """Convert LiteLLM proxy spend logs to attempt records (one per request).

    Reads times, model and model_group, tokens, spend, status and the error information.

    Never reads api_key, user, messages or response. Cache hits are skipped.
    """
    from sim.traces.attempts import tasks_from_attempts
    from sim.traces.litellm import import_litellm

    _check_outputs(("OUT", out), ("--tasks", tasks))
    try:
        df = import_litellm(spendlogs, task_column=task_column, task_type=task_type)
        outputs: list[tuple[object, Path]] = [(df, out)]
        if tasks is not None:
            outputs.append((tasks_from_attempts(df, task_type=task_type), tasks))
        _write_outputs(outputs)
    except InputError as exc:
        fail_cli(_import_error(exc))
    err.print(
        f"wrote {df.height:,} attempts to {out}" + (f" and tasks to {tasks}" if tasks else "")
    )


@app.command("import-llmperf")
def import_llmperf_cmd(
    source: Annotated[
        Path,
        typer.Argument(help="llmperf results: a per-request JSON file or a directory of them."),
    ],
    out: Annotated[Path, typer.Argument(help="Output attempt records (.parquet, .ndjson, .csv).")],
    concurrency: Annotated[
        int | None,
        typer.Option(help="Requests in flight (default: the run summary's, else 1)."),
    ] = None,
    task_type: Annotated[str | None, typer.Option(help="Task type of every request.")] = None,
    tasks: Annotated[
        Path | None, typer.Option(help="Also write the matching task trace here.")
    ] = None,
) -> None:
    """Convert llmperf per-request results to attempt records.

    Latency is end_to_end_latency_s; error_code 429 is rate_limited, -1 connection.

    Start times are reconstructed from the run's concurrency: llmperf records none.
    """
    from sim.traces.attempts import tasks_from_attempts
    from sim.traces.llmperf import import_llmperf

    _check_outputs(("OUT", out), ("--tasks", tasks))
    try:
        df = import_llmperf(source, concurrency=concurrency, task_type=task_type)
        outputs: list[tuple[object, Path]] = [(df, out)]
        if tasks is not None:
            outputs.append((tasks_from_attempts(df, task_type=task_type), tasks))
        _write_outputs(outputs)
    except InputError as exc:
        fail_cli(_import_error(exc))
    runs = df.get_column("model").n_unique()
    err.print(f"wrote {df.height:,} attempts of {runs} runs to {out}")


@app.command("import-aider")
def import_aider_cmd(
    leaderboard: Annotated[Path, typer.Argument(help="An Aider leaderboard YAML file.")],
    scenario: Annotated[Path, typer.Option(help="Output scenario (.yaml).")],
    catalog: Annotated[Path, typer.Option(help="Output router catalog config (.yaml).")],
    pass_rate: Annotated[
        int, typer.Option(help="Completion = pass_rate_1 (1) or pass_rate_2 (2).")
    ] = 1,
    sigma: Annotated[
        float, typer.Option(help="Lognormal latency shape (the leaderboard has no spread).")
    ] = 0.0911,
    chain_length: Annotated[int, typer.Option(help="Models in the default route.")] = 3,
    attempts_per_model: Annotated[int, typer.Option(help="Attempts per model in it.")] = 2,
) -> None:
    """Turn an Aider leaderboard into a scenario and a router catalog.

    Per model: completion, malformed and server-error rates, seconds and cost per answer.

    The second-try pass rate is noted in comments. Both files are validated by loading them.
    """
    from sim.traces.aider import check_aider_outputs, import_aider, write_aider

    try:
        check_aider_outputs(scenario, catalog)  # before any work
        result = import_aider(
            leaderboard,
            pass_rate=pass_rate,
            latency_sigma=sigma,
            chain_length=chain_length,
            attempts_per_model=attempts_per_model,
        )
        write_aider(result, scenario, catalog)
    except InputError as exc:
        fail_cli(_import_error(exc))
    except OSError as exc:
        fail_cli(f"{scenario}, {catalog}: cannot write: {exc.strerror or exc}")
    for row, name, reason in result.skipped:
        sys.stderr.write(f"skipped entry {row} {name!r}: {reason}\n")
    err.print(
        f"wrote {len(result.models)} models to {scenario} and {catalog} "
        f"(default route: {', '.join(result.chain)})"
    )


@app.command("import-csv")
def import_csv_cmd(
    file: Annotated[Path, typer.Argument(help="A .csv, .parquet, .json or .ndjson table.")],
    out: Annotated[Path, typer.Argument(help="Output trace or attempt records.")],
    map_: Annotated[
        list[str],
        typer.Option(
            "--map",
            help="source=target pairs, comma-separated or repeated "
            "(e.g. startTime=arrival_s,input=prompt_tokens).",
        ),
    ],
    time_format: Annotated[
        str,
        typer.Option(help="The time column: seconds (as is), iso, epoch or epoch_ms."),
    ] = "seconds",
    units: Annotated[
        str | None, typer.Option(help="Duration units, e.g. latency=ms,ttft=ms (s, ms, us, min).")
    ] = None,
    attempts: Annotated[
        bool,
        typer.Option(
            "--attempts", metavar="", help="Map to attempt records (default: the task trace)."
        ),
    ] = False,
    task_type: Annotated[
        str | None, typer.Option(help="Task type for rows without a mapped one.")
    ] = None,
) -> None:
    """Map a table's columns onto the task trace (or, with --attempts, attempt records).

    ISO-8601 or epoch timestamps become seconds from the earliest row.

    --units converts durations to seconds. Unmapped columns are dropped.
    """
    from sim.traces.mapper import import_table, parse_pairs

    _check_outputs(("OUT", out))
    try:
        mapping = parse_pairs(map_, what="mapping")
        df = import_table(
            file,
            mapping,
            attempts=attempts,
            time_format=time_format,  # type: ignore[arg-type]
            units=parse_pairs(units, what="units"),
            task_type=task_type,
        )
        _write_outputs([(df, out)])
    except InputError as exc:
        fail_cli(_import_error(exc))
    err.print(f"wrote {df.height:,} {'attempts' if attempts else 'tasks'} to {out}")


def _records(paths: list[Path], time_scale: float):  # noqa: ANN202 - sim.world.calibration.Records
    """Attempt (and task) records, or a one-line error naming the bad path."""
    from sim.world.calibration import load_records

    if not (time_scale > 0):
        raise InputError(f"--time-scale: expected a positive number, got {time_scale:g}")
    return load_records(paths, time_scale=time_scale)


@app.command("calibrate")
def calibrate_cmd(
    recorded: Annotated[
        list[Path],
        typer.Argument(help="Attempt records, and task records if any: files or directories."),
    ],
    out: Annotated[Path, typer.Option(help="The fitted scenario (.yaml).")],
    report: Annotated[
        Path | None,
        typer.Option(
            help="Directory for report.md and PNG figures: new, empty, or an earlier --report."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="The router config that was live (its providers share outages)."),
    ] = None,
    html: Annotated[
        bool, typer.Option("--html/--no-html", metavar="", help="Also write report.html.")
    ] = False,
    time_scale: Annotated[
        float,
        typer.Option(help="The recording ran against `sim serve --time-scale X`: divide by X."),
    ] = 1.0,
    name: Annotated[str, typer.Option(help="The scenario's name.")] = "calibrated",
    seed: Annotated[int, typer.Option(help="Seed of the held-out splits and bootstraps.")] = 0,
) -> None:
    """Fit a scenario from recorded attempts; every number commented with n, CI and fit.

    Completion per model and task type, task difficulty, unsolvable share, retry correlation.

    Latency (time to first token + per-token terms), errors, outages, rate limits, prices.

    The YAML is loaded back with the scenario loader before it is written.
    """
    from sim.engine.outdir import check_out_dir
    from sim.world.calibration import calibrate, write_calibration

    if out.suffix.lower() not in (".yaml", ".yml"):
        fail_cli(f"--out: {out}: expected a .yaml file, got '{out.suffix or '(no extension)'}'")
    if out.is_dir():
        fail_cli(f"--out: {out}: is a directory; give the scenario file to write")
    try:
        if report is not None:
            check_out_dir(report, flag="--report")  # before any work
        cfg = _config(config) if config is not None else None
        records = _records(recorded, time_scale)
        cal = calibrate(records, cfg, name=name, seed=seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_calibration(cal, out, report=report, html=html)
    except InputError as exc:
        fail_cli(str(exc))
    except OSError as exc:
        fail_cli(f"--out: {out}: cannot write: {exc.strerror or exc}")
    comp = cal.completion
    diff = (
        f"; sigma {comp.sigma.value:.3g}, unsolvable {comp.unsolvable.value:.3g}, "
        f"retry correlation {comp.rho.value:.3g}"
        if comp is not None
        else ""
    )
    err.print(
        f"wrote {len(cal.models)} models fitted from {cal.n_attempts:,} attempts to {out}{diff}"
    )
    if report is not None:
        err.print(f"report written to {report}/ (report.md{', report.html' if html else ''}, PNGs)")


@app.command("validate")
def validate_cmd(
    recorded: Annotated[
        list[Path],
        typer.Argument(help="Attempt records, and task records if any: files or directories."),
    ],
    split: Annotated[
        float, typer.Option(help="Share of the tasks (by arrival) to calibrate on.")
    ] = 0.5,
    config: Annotated[
        Path | None, typer.Option(help="The router config that was live (default: the seed).")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json/--no-json", metavar="", help="Print only the JSON summary.")
    ] = False,
    tolerance_pp: Annotated[
        float, typer.Option(help="Tolerance of rates and shares, in percentage points.")
    ] = 2.0,
    tolerance_rel: Annotated[
        float, typer.Option(help="Relative tolerance of costs, latencies and calls.")
    ] = 0.10,
    replications: Annotated[int, typer.Option(min=2, help="Seeds of the prediction.")] = 10,
    seed: Annotated[int, typer.Option(help="Base seed (calibration and prediction).")] = 0,
    time_scale: Annotated[
        float,
        typer.Option(help="The recording ran against `sim serve --time-scale X`: divide by X."),
    ] = 1.0,
) -> None:
    """Calibrate on the first part, predict the rest with the simulator, compare.

    Completion, cost per task, latency p50/p95/p99, fallback rate and error mix, with CIs.

    Exit 0: no metric fails; 1: some metric fails; 2: bad input.
    """
    from sim.world.validation import validate

    if not (0.0 < split < 1.0):
        fail_cli(f"--split: expected a share strictly between 0 and 1, got {split:g}")
    if tolerance_pp < 0 or tolerance_rel < 0:
        fail_cli("--tolerance-pp/--tolerance-rel: expected numbers >= 0")
    try:
        cfg = _config(config)
        records = _records(recorded, time_scale)
        seen = set(records.attempts.get_column("model").unique().to_list())
        if not seen & {m.id for m in cfg.models}:
            raise InputError(
                f"--config: none of its models ({', '.join(m.id for m in cfg.models[:5])}"
                f"{', ...' if len(cfg.models) > 5 else ''}) is in the records (they call: "
                f"{', '.join(sorted(seen)[:5])}); pass the config that was live"
            )
        report = validate(
            records,
            cfg,
            split=split,
            replications=replications,
            seed=seed,
            tolerance_pp=tolerance_pp,
            tolerance_rel=tolerance_rel,
        )
    except InputError as exc:
        fail_cli(str(exc))
    if json_:
        sys.stdout.write(json.dumps(report.summary(), indent=2) + "\n")
    else:
        _print_validation(report)
    if not report.passed:
        raise typer.Exit(1)


def _print_validation(report) -> None:  # noqa: ANN001 - sim.world.validation.ValidationReport
    from rich.table import Table

    table = Table(
        title=(
            f"Predicted vs observed: calibrated on {report.train_tasks:,} tasks, "
            f"{report.test_tasks:,} predicted over {report.replications} seeds"
        )
    )
    for col in ("metric", "observed", "predicted", "diff", "95% CI of diff", "tolerance", "status"):
        table.add_column(col, justify="left" if col in ("metric", "status") else "right")
    for m in report.metrics:
        rate = m.kind == "rate"
        unit = " pp" if rate else " %"
        style = {"fail": "red", "noise": "yellow", "few": "dim"}.get(m.status, "")
        table.add_row(
            m.name,
            f"{m.observed:.4g}",
            f"{m.predicted:.4g}",
            f"{100 * m.diff:+.2f}{unit}",
            f"[{100 * m.diff_ci[0]:+.2f}, {100 * m.diff_ci[1]:+.2f}]",
            f"{100 * m.tolerance:g}{unit}",
            f"[{style}]{m.status}[/{style}]" if style else m.status,
        )
    console = Console()
    console.print(table)
    failed = [m.name for m in report.failed]
    console.print(
        "all metrics pass (or are within noise)" if not failed else f"failed: {', '.join(failed)}"
    )


def _seed_config_path() -> Path:
    from router.catalog import seed_config_path

    return seed_config_path()


def main() -> None:
    """Entry point of the ``sim`` command (usage errors: one line, exit 2)."""
    # One BLAS thread unless the user says otherwise: calibration runs thousands of
    # small L-BFGS-B fits, where OpenBLAS's thread pool costs far more than it gives
    # (measured: 2.9 ms per fit with one thread vs 107-217 ms with two on a busy
    # 2-core machine). It must be set before numpy loads, which the CLI defers.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    run_cli(app)


if __name__ == "__main__":
    main()
