"""The ``optimize`` command line: run, list, show and export Optuna studies.

Library errors (:class:`router.errors.InputError`) and usage errors become one
line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from optimize.objective import OBJECTIVES, PRESETS

if TYPE_CHECKING:
    from router import RouterConfig


def _plain_flags(params: list[Any]) -> list[Any]:
    """Flags take no value: show ``--json / --no-json`` without a ``<bool>`` type column."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    cls=_Group,
    help="Tune routing configs with Optuna studies on the SimPy twin; export the winner.",
)
err = Console(stderr=True)


def version() -> str:
    """The installed costroute version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version("costroute")
    except metadata.PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"optimize (costroute) {version()}\n")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the costroute version and exit.",
        ),
    ] = False,
) -> None:
    """Tune routing configs with Optuna studies on the SimPy twin; export the winner."""


_PRESET_HELP = "\n\n".join(f"[bold]{name}[/bold]: {p.description}" for name, p in PRESETS.items())
_RUN_HELP = f"""Run (or resume) a study, choose the winner on selection seeds, report it on
fresh reporting seeds, write figures.

The study simulates --trials trials (a trial that repeats an earlier one's config
is answered from it, recorded with user attr duplicate_of, and not counted). On a
terminal a progress bar runs; otherwise a line is printed every --progress-every trials.

Seeds (base --seed S): trials train on S + [0, R); the top trials and the base
config are compared on selection seeds S + 10000 + [0, H) (and --holdout traces);
the winner and the base config are reported on S + 20000 + [0, H), seeds the
winner was not chosen on. `sim compare` uses S + 30000 + [0, R) by default.
The holdout's runs are spread over --jobs workers (the same numbers as one), and
with --race a candidate stops once its 95% CI, after at least 3 selection seeds,
lies below the leader's.

Multi-fidelity (--fidelity F1,F2,...): a trial is first replayed on F1 of the
traffic (contiguous time windows spread over the trace, at their own times, so
bursts and outages stay; the same training seeds; budget caps scaled to the
sample), then, if promoted, on F2, ..., and only then on the full trace.
--fidelity-pruner halving (the default): trials climb in batches of N**k (k
fractions, N = --reduction-factor, default 3) and the best 1/N of a batch at each
rung go on, so a trial costs a fixed share of a full replay; sha | hyperband:
Optuna's asynchronous pruners instead. Only full-trace trials are ranked,
exported or re-run in the holdout.
In a study file: fidelity: [0.04, 0.12, 0.36], fidelity_pruner, reduction_factor.

Presets (--preset; `optimize presets` lists their settings):

{_PRESET_HELP}"""


def _config(path: Path | None) -> RouterConfig:
    from router import load_config, load_seed_config

    return load_config(path) if path else load_seed_config()


def _load_study(study: str, storage: str | None) -> tuple[Any, str]:
    import optuna

    from optimize.storage import open_storage, redact, resolve_storage
    from router.errors import InputError

    url = resolve_storage(storage, study)
    if not Path(url).exists() and "://" not in url:
        raise InputError(f"--storage: {url}: no such study journal (run `optimize run` first)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study, storage=open_storage(url)), url
    except KeyError:
        raise InputError(f"--study: no study named {study!r} in {redact(url)}") from None


def _best_text(p: Any) -> str:
    """``best net_value 0.0401 (trial 12)`` for a :class:`~optimize.study.Progress`."""
    if p.best_value is None:
        return "no complete trial yet"
    note = "" if p.feasible else ", constraints not held"
    return f"best {p.metric} {p.best_value:.4g} (trial {p.best_trial}{note})"


class _Bar:
    """How ``optimize run`` shows progress.

    ``bar``: a rich progress bar on stderr (stdout is a terminal); ``lines``: a
    plain line on stdout every ``every`` simulated trials and at the end (stdout
    is a file or a pipe: a log keeps them); ``quiet``: nothing (``--json``).
    """

    def __init__(self, mode: str, every: int = 10, then: str = "") -> None:
        self.mode = mode
        self.every = every
        self.then = then  # printed (lines mode) once the last trial is in
        self._next = every
        self._last: int | None = None
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, p: Any) -> None:
        if self.mode == "lines":
            self._line(p)
        elif self.mode == "bar":
            self._bar(p)

    def _line(self, p: Any) -> None:
        if p.done == self._last or (p.done < self._next and p.done < p.total):
            return
        self._last = p.done
        self._next = (p.done // self.every + 1) * self.every
        repeats = f"; {p.duplicates} repeats not re-simulated" if p.duplicates else ""
        sys.stdout.write(f"trial {p.done}/{p.total}: {_best_text(p)}{repeats}\n")
        if p.done >= p.total and self.then:
            sys.stdout.write(self.then + "\n")
            self.then = ""
        sys.stdout.flush()

    def _bar(self, p: Any) -> None:
        done, total = p.done, p.total
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("trials"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[best]}"),
                console=err,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("study", total=total, best="")
        label = _best_text(p) if p.best_value is not None else ""
        self._progress.update(self._task, completed=done, total=total, best=label)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@app.command(cls=_Command, help=_RUN_HELP)
def run(
    paths: Annotated[list[Path], typer.Argument(help="Trace files or directories to tune on.")],
    study: Annotated[str, typer.Option(help="Study name (resumed when it exists).")] = "routing",
    storage: Annotated[
        str | None,
        typer.Option(help="Journal file or database URL (default: studies/<study>.journal)."),
    ] = None,
    trials: Annotated[
        int, typer.Option(help="Simulated trials the study should hold (repeats not counted).")
    ] = 100,
    jobs: Annotated[int, typer.Option(help="Worker processes on the storage.")] = 1,
    objective: Annotated[
        str | None,
        typer.Option(help=f"{' | '.join(OBJECTIVES)} (default net_value)."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help=f"{' | '.join(PRESETS)}: see below."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of the replications.")] = 0,
    config: Annotated[Path | None, typer.Option(help="Base config (default: the seed).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario (default: the seed).")] = None,
    holdout: Annotated[
        list[Path] | None, typer.Option(help="Held-out traces for choosing the winner.")
    ] = None,
    replications: Annotated[
        int, typer.Option(help="Training seeds per trial (common random numbers).")
    ] = 3,
    holdout_replications: Annotated[
        int, typer.Option(help="Selection seeds, and as many reporting seeds.")
    ] = 10,
    top_k: Annotated[int, typer.Option(help="Trials re-run on the selection seeds.")] = 5,
    sampler: Annotated[str, typer.Option(help="tpe | nsga2 | gp | random.")] = "tpe",
    study_file: Annotated[
        Path | None, typer.Option(help="YAML: objective settings, constraints, space.")
    ] = None,
    value_per_success: Annotated[float | None, typer.Option(help="USD per completion.")] = None,
    latency_cost_per_s: Annotated[float | None, typer.Option(help="USD per second.")] = None,
    min_completion_rate: Annotated[float | None, typer.Option(help="Constraint.")] = None,
    max_latency_p95_s: Annotated[float | None, typer.Option(help="Constraint.")] = None,
    max_cost_per_task: Annotated[float | None, typer.Option(help="Constraint.")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Constraint (per replication).")] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune/--no-prune", help="Stop trials that fall behind after a replication."
        ),
    ] = True,
    fidelity: Annotated[
        str | None,
        typer.Option(
            help="Multi-fidelity: fractions of the traffic a trial is scored on before the "
            "full trace, e.g. 0.04,0.12,0.36 (see below; study file key: fidelity)."
        ),
    ] = None,
    fidelity_pruner: Annotated[
        str | None,
        typer.Option(
            help="halving | sha | hyperband: who promotes trials between rungs "
            "(default halving: synchronous, in batches)."
        ),
    ] = None,
    reduction_factor: Annotated[
        int | None,
        typer.Option(help="Each rung keeps about 1/N of the trials reaching it (default 3)."),
    ] = None,
    race: Annotated[
        bool,
        typer.Option(
            "--race/--no-race",
            help="Stop holdout candidates whose CI falls clearly below the leader's.",
        ),
    ] = True,
    out: Annotated[
        Path | None,
        typer.Option(help="Figures, summary.json, tuned.yaml (default: studies/<study>/)."),
    ] = None,
    endpoints: Annotated[
        Path | None,
        typer.Option(help="YAML: model id -> endpoint, merged into tuned.yaml."),
    ] = None,
    progress_every: Annotated[
        int, typer.Option(help="Without a terminal: print progress every N trials.")
    ] = 10,
    json_: Annotated[
        bool, typer.Option("--json/--no-json", help="Print only the final JSON.")
    ] = False,
) -> None:
    from router.errors import InputError, fail_cli

    started = time.perf_counter()
    from optimize.export import load_endpoints, merge_endpoints, write_export
    from optimize.fidelity import parse_fidelity
    from optimize.objective import make_objective
    from optimize.plots import write_figures
    from optimize.space import SpaceSpec, load_space_spec
    from optimize.storage import STUDIES_DIR, redact, resolve_storage
    from optimize.study import StudySettings, run_study
    from sim.engine.replays import load_traces
    from sim.world.scenario import load_scenario, load_seed_scenario

    warnings.filterwarnings("ignore", module="optuna")
    mode = "quiet" if json_ else ("bar" if sys.stdout.isatty() else "lines")
    bar = _Bar(
        mode,
        max(progress_every, 1),
        then=f"holdout: re-running the top {top_k} trials and the base config on "
        f"{holdout_replications} selection seeds, then the winner on {holdout_replications} "
        "reporting seeds",
    )
    try:
        if progress_every < 1:
            raise InputError(f"--progress-every: expected an integer >= 1, got {progress_every}")
        eps = load_endpoints(endpoints) if endpoints else None
        base = _config(config)
        if eps:
            base = merge_endpoints(base, eps)
        spec, file_settings = load_space_spec(study_file) if study_file else (SpaceSpec(), {})
        # The study file's fidelity keys; the flags win over them.
        file_schedule = file_settings.pop("fidelity", None)
        schedule = (
            parse_fidelity(fidelity)
            if fidelity is not None
            else parse_fidelity(file_schedule, f"{study_file}: fidelity")
        )
        file_pruner = file_settings.pop("fidelity_pruner", "halving")
        file_factor = file_settings.pop("reduction_factor", 3)
        obj = make_objective(
            objective,
            preset=preset,
            settings=file_settings,
            value_per_success=value_per_success,
            latency_cost_per_s=latency_cost_per_s,
            min_completion_rate=min_completion_rate,
            max_latency_p95_s=max_latency_p95_s,
            max_cost_per_task=max_cost_per_task,
            budget_usd=budget_usd,
        )
        settings = StudySettings(
            study=study,
            storage=resolve_storage(storage, study),
            base=base,
            objective=obj,
            spec=spec,
            trials=trials,
            jobs=jobs,
            seed=seed,
            replications=replications,
            holdout_replications=holdout_replications,
            top_k=top_k,
            sampler=sampler,
            prune=prune,
            fidelity=schedule,
            fidelity_pruner=fidelity_pruner or file_pruner,
            reduction_factor=reduction_factor if reduction_factor is not None else file_factor,
            race=race,
        )
        settings.check()
        scn = load_scenario(scenario) if scenario else load_seed_scenario()
        traces = load_traces(paths)
        held = load_traces(holdout) if holdout else None
        target = out or (STUDIES_DIR / study)
        # Checked before the study runs, so a bad --out does not cost the whole study.
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--out: {target}: cannot create: {exc.strerror or exc}") from None
        if mode == "lines":
            sys.stdout.write(
                f"study {study}: {trials} trials on {', '.join(n for n, _ in traces)}, "
                f"objective {obj.name}, storage {redact(settings.storage)}\n"
            )
            sys.stdout.flush()
        try:
            report = run_study(traces, scn, settings, holdout_traces=held, progress=bar)
        finally:
            bar.close()
        figures_started = time.perf_counter()
        write_figures(report.study, obj, report.holdout, target)
        best = report.space.build(report.study.trials[report.summary["best_trial"]].params)
        if eps:
            best = merge_endpoints(best, eps)
        warned = report.summary["warnings"]
        tuned = write_export(best, target / "tuned.yaml", header=_warning_header(warned))
        s = report.summary
        s["out"] = str(target)
        s["exported"] = str(tuned)
        now = time.perf_counter()
        s["seconds_figures"] = round(now - figures_started, 3)
        s["seconds"] = round(now - started, 3)  # the whole command: load, study, holdout, figures
        _write_json(target / "summary.json", s)
    except InputError as exc:
        fail_cli(str(exc))
    if json_:
        sys.stdout.write(json.dumps(s, indent=2) + "\n")
        return
    _print_run(s, plain=mode != "bar")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from router.config import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _plain_table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1, indent: str = ""
) -> list[str]:
    """Aligned text columns: the first ``left`` columns flush left, the rest flush right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        indent
        + "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [header, *rows]
    ]


def _run_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, tuned - base [95% CI]) rows of a run summary."""
    rows = [
        (
            s["objective"] if s["objective"] != "multi" else "net_value",
            f"{s['base_value']:.4g}",
            f"{s['holdout_value']:.4g}",
            f"{s['improvement_vs_base']:+.3g} [{s['improvement_ci_low']:+.3g}, "
            f"{s['improvement_ci_high']:+.3g}]",
        )
    ]
    for key, d in (s.get("paired") or {}).items():
        rows.append(
            (
                key,
                f"{d['a']:.4g}",
                f"{d['b']:.4g}",
                f"{d['diff']:+.3g} [{d['diff_ci_low']:+.3g}, {d['diff_ci_high']:+.3g}]",
            )
        )
    return rows


def _verdict_lines(ho: dict[str, Any]) -> list[str]:
    """Feasibility and significance of a holdout result, one line each."""
    from optimize.study import export_warnings

    n = len(ho.get("reporting_seeds") or ho.get("holdout_seeds") or [])
    where = f"on {n} reporting seeds" if "reporting_seeds" in ho else f"on {n} held-out seeds"
    if ho.get("feasible"):
        feasible = f"feasible: constraints met {where}"
    else:
        feasible = next(w for w in export_warnings(ho) if w.startswith("infeasible"))
    lo, hi = ho["improvement_ci_low"], ho["improvement_ci_high"]
    if lo > 0:
        sig = (
            f"significant: improvement over the base config {ho['improvement_vs_base']:+.4g} "
            f"[{lo:+.4g}, {hi:+.4g}], 95% CI above 0 {where}"
        )
    else:
        sig = next(
            w for w in export_warnings(ho) if w.startswith(("not significant", "worse than"))
        )
    return [feasible, sig]


def _warning_header(warnings_: list[str]) -> list[str]:
    """The header comment of an export written despite ``warnings_`` (empty: none)."""
    if not warnings_:
        return []
    return ["WARNING: exported although it should not go live as it is:"] + [
        f"  - {w}" for w in warnings_
    ]


def _print_run(s: dict[str, Any], plain: bool = False) -> None:
    """The run's result: a rich table on a terminal, plain lines otherwise."""
    counts = (
        f"{s['trials']} trials ({s['complete']} complete, {s['pruned']} pruned, "
        f"{s.get('failed', 0)} failed; {s.get('duplicates', 0)} repeats not re-simulated)"
    )
    head = f"study {s['study']}: {counts}, objective {s['objective']}"
    winner = (
        f"winner: trial {s['best_trial']}, chosen on {s['selection_seeds']} selection seeds, "
        f"reported on {s['reporting_seeds']} fresh reporting seeds"
    )
    ho = {
        **s,
        "reporting_seeds": [0] * s["reporting_seeds"],
        "constraints": s.get("constraints", {}),
    }
    verdict = _verdict_lines(ho)
    timing = (
        f"{s['seconds']:.1f} s: study {s['seconds_study']:.1f} s, holdout "
        f"{s['seconds_holdout']:.1f} s, figures {s['seconds_figures']:.1f} s"
    )
    tail = f"figures, summary.json and tuned.yaml in {s['out']}/ ({timing})"
    if s.get("warnings"):
        tail += "; tuned.yaml carries the warnings in its header, `optimize export` refuses it"
    rows = _run_rows(s)
    header = ("reporting seeds", "base", "tuned", "tuned - base [95% CI]")
    if plain:
        lines = [head, winner, *verdict, *_plain_table(header, rows, left=1, indent="  "), tail]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.table import Table

    console = Console()
    table = Table(title=head)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(winner, markup=False)
    for line in verdict:
        console.print(line, markup=False)
    console.print(tail, markup=False)


@app.command(cls=_Command)
def show(
    study: Annotated[str, typer.Option(help="Study name.")] = "routing",
    storage: Annotated[str | None, typer.Option(help="Journal file or database URL.")] = None,
    top: Annotated[int, typer.Option(help="How many best trials to list.")] = 10,
    json_: Annotated[bool, typer.Option("--json/--no-json", help="Print JSON.")] = False,
) -> None:
    """Best trials, the Pareto front, parameter importances and the holdout result."""
    import numpy as np
    import optuna

    from optimize.plots import importances, pareto_mask
    from optimize.study import count_trials, space_of
    from router.errors import InputError, fail_cli

    warnings.filterwarnings("ignore", module="optuna")
    try:
        st, _ = _load_study(study, storage)
        _, _, obj = space_of(st)
    except InputError as exc:
        fail_cli(str(exc))
    TrialState = optuna.trial.TrialState
    trials = st.get_trials(deepcopy=False)
    # Repeats carry their twin's numbers: list each config once.
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    rows = []
    for t in complete:
        m = t.user_attrs.get("metrics", {})
        rows.append(
            {
                "trial": t.number,
                "value": obj.value(m),
                "feasible": all(v <= 0 for v in t.constraints.values()),
                "completion_rate": m.get("completion_rate"),
                "cost_per_success": m.get("cost_per_success"),
                "latency_p95_s": m.get("latency_p95_s"),
            }
        )
    rows.sort(key=lambda r: (not r["feasible"], -r["value"], r["trial"]))
    pts = [[-r["completion_rate"], r["cost_per_success"], r["latency_p95_s"]] for r in rows]
    front = (
        [r["trial"] for r, k in zip(rows, pareto_mask(np.array(pts)), strict=True) if k]
        if rows
        else []
    )
    counts = count_trials(trials)
    data = {
        "study": study,
        "objective": obj.name,
        **counts,
        "best": rows[:top],
        "pareto_front": sorted(front),
        "importances": importances(st),
        "holdout": {
            k: v
            for k, v in (st.user_attrs.get("holdout") or {}).items()
            if k not in ("metrics", "base_metrics", "values", "base_values", "candidates")
        },
    }
    if data["holdout"]:
        from optimize.study import export_warnings

        data["holdout"]["significant"] = data["holdout"]["improvement_ci_low"] > 0
        data["holdout"]["warnings"] = export_warnings(st.user_attrs["holdout"])
    if json_:
        sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")
        return
    from rich.table import Table

    from optimize.space import param_label

    console = Console()
    table = Table(
        title=f"Study {study}: best of {len(complete)} complete trials ({obj.name}); "
        f"{counts['trials']} simulated, {counts['pruned']} pruned, {counts['failed']} failed, "
        f"{counts['duplicates']} repeats"
    )
    for col in ("trial", "value", "feasible", "completion", "cost/success", "p95 s", "Pareto"):
        table.add_column(col, justify="right")
    for r in rows[:top]:
        table.add_row(
            str(r["trial"]),
            f"{r['value']:.6g}",
            "yes" if r["feasible"] else "no",
            f"{r['completion_rate']:.4f}",
            f"{r['cost_per_success']:.6g}",
            f"{r['latency_p95_s']:.3f}",
            "*" if r["trial"] in front else "",
        )
    console.print(table)
    console.print(f"Pareto front (completion ↑, cost/success ↓, p95 ↓): trials {sorted(front)}")
    if data["importances"]:
        console.print(
            "importances: "
            + ", ".join(f"{param_label(k)} {v:.1%}" for k, v in data["importances"].items())
        )
    ho = data["holdout"]
    if ho:
        console.print(
            f"holdout winner: trial {ho['best_trial']}, value {ho['holdout_value']:.6g} "
            f"[{ho['holdout_ci_low']:.6g}, {ho['holdout_ci_high']:.6g}], improvement vs base "
            f"{ho['improvement_vs_base']:+.6g} [{ho['improvement_ci_low']:+.6g}, "
            f"{ho['improvement_ci_high']:+.6g}]",
            markup=False,
        )
        for line in _verdict_lines(ho):
            console.print(line, markup=False)


def _storages(storage: str | None) -> list[str]:
    """The storages ``optimize list`` reads: the one given, or every journal in studies/."""
    from optimize.storage import STUDIES_DIR, is_url
    from router.errors import InputError

    if storage:
        if not is_url(storage) and not Path(storage).is_file():
            raise InputError(f"--storage: {storage}: no such study journal")
        # Opening a SQLite URL would create an empty database: say it is missing instead.
        if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///") :]).is_file():
            raise InputError(f"--storage: {storage}: no such database file")
        return [storage]
    return [str(p) for p in sorted(STUDIES_DIR.glob("*.journal"))]


def study_rows(storage: str) -> list[dict[str, Any]]:
    """One row per study in a storage: trial counts, best value, the holdout winner."""
    import optuna

    from optimize.objective import Objective
    from optimize.storage import open_storage, redact
    from optimize.study import best_so_far, count_trials

    store = open_storage(storage)
    rows = []
    for frozen in sorted(store.get_all_studies(), key=lambda f: f.study_name):
        st = optuna.load_study(study_name=frozen.study_name, storage=store)
        trials = st.get_trials(deepcopy=False)
        attrs = st.user_attrs
        obj = Objective.from_dict(attrs["objective"]) if attrs.get("objective") else None
        best = best_so_far(trials, obj) if obj is not None else None
        ho = attrs.get("holdout") or {}
        rows.append(
            {
                "study": frozen.study_name,
                "storage": redact(storage),
                "objective": obj.name if obj else None,
                **count_trials(trials),
                "best_value": best[0] if best else None,
                "best_trial": best[1] if best else None,
                "best_feasible": best[2] if best else None,
                "holdout_trial": ho.get("best_trial"),
                "holdout_value": ho.get("holdout_value"),
            }
        )
    return rows


@app.command("list", cls=_Command)
def list_(
    storage: Annotated[
        str | None,
        typer.Option(help="Journal file or database URL (default: every studies/*.journal)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json/--no-json", help="Print JSON.")] = False,
) -> None:
    """Studies in a storage: trial counts and best values.

    trials: simulated (complete or pruned) trials, as --trials counts them;
    repeats: trials answered from an earlier one with the same config; best: the
    best complete trial on the training seeds (feasible ones first; for a
    multi-objective study, by net value); holdout winner: the trial chosen on the
    selection seeds and its value on the reporting seeds.
    """
    from router.errors import InputError, fail_cli

    warnings.filterwarnings("ignore", module="optuna")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        rows = [r for url in _storages(storage) for r in study_rows(url)]
    except InputError as exc:
        fail_cli(str(exc))
    if json_:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        where = storage or "studies/"
        err.print(f"no studies in {where} (`optimize run TRACES` makes one)")
        return
    header = (
        "study",
        "storage",
        "objective",
        "trials",
        "complete",
        "pruned",
        "failed",
        "repeats",
        "best (trial)",
        "holdout winner",
    )
    table = []
    for r in rows:
        best = "-"
        if r["best_value"] is not None:
            note = "" if r["best_feasible"] else ", infeasible"
            best = f"{r['best_value']:.4g} ({r['best_trial']}{note})"
        ho = "-"
        if r["holdout_value"] is not None:
            ho = f"{r['holdout_value']:.4g} ({r['holdout_trial']})"
        table.append(
            (
                r["study"],
                r["storage"],
                r["objective"] or "-",
                *(str(r[k]) for k in ("trials", "complete", "pruned", "failed", "duplicates")),
                best,
                ho,
            )
        )
    sys.stdout.write("\n".join(_plain_table(header, table, left=3)) + "\n")


@app.command(cls=_Command)
def presets(
    json_: Annotated[bool, typer.Option("--json/--no-json", help="Print JSON.")] = False,
) -> None:
    """The presets (the article's decision matrix): objective, prices, constraints, why."""
    from dataclasses import asdict

    data = {
        name: {
            "description": p.description,
            "objective": p.objective.name,
            "value_per_success": p.objective.value_per_success,
            "latency_cost_per_s": p.objective.latency_cost_per_s,
            "constraints": {
                k: v for k, v in asdict(p.objective.constraints).items() if v is not None
            },
        }
        for name, p in PRESETS.items()
    }
    if json_:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    lines = []
    for name, d in data.items():
        cons = ", ".join(f"{k} {v:g}" for k, v in d["constraints"].items())
        lines.append(
            f"{name}: {d['objective']}, value_per_success {d['value_per_success']:g}, "
            f"latency_cost_per_s {d['latency_cost_per_s']:g}; constraints: {cons}\n"
            f"  {d['description']}"
        )
    sys.stdout.write("\n".join(lines) + "\n")


@app.command(cls=_Command)
def export(
    out: Annotated[Path, typer.Option(help="File to write (.yaml, .json or .toml).")],
    study: Annotated[str, typer.Option(help="Study name.")] = "routing",
    storage: Annotated[str | None, typer.Option(help="Journal file or database URL.")] = None,
    trial: Annotated[
        int | None, typer.Option(help="Trial number (default: the holdout winner).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="router | litellm.")] = "router",
    endpoints: Annotated[
        Path | None,
        typer.Option(
            help="YAML: model id -> endpoint (base_url, model, api_key_env, ...); added to "
            "or replacing the base config's endpoints."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write a winner that is infeasible or not significantly better than the "
            "base config on the reporting seeds; the reason goes into the file's header.",
        ),
    ] = False,
) -> None:
    """Write a trial's config for the live router (or a LiteLLM proxy).

    The default is the study's winner. It must hold the constraints on the reporting
    seeds and beat the base config there with a 95% CI above 0; otherwise export
    refuses (exit 2) unless --force, which writes the reason as the file's header
    comment (YAML, TOML, LiteLLM; a JSON router config has no room for it). A
    --trial other than the winner was never reported on fresh seeds: its
    feasibility on the training seeds is checked, and the header says so.
    Settings are rounded (whole milliseconds, costs to 4 significant digits); the
    models keep the base config's endpoints, plus or replaced by --endpoints. A
    LiteLLM export lists on stderr, and in its header, every setting LiteLLM cannot
    carry.
    """
    import optuna

    from optimize.export import (
        FORMATS,
        litellm_losses,
        load_endpoints,
        merge_endpoints,
        round_config,
        write_export,
    )
    from optimize.study import export_warnings, space_of
    from router.errors import InputError, fail_cli

    warnings.filterwarnings("ignore", module="optuna")
    try:
        if format_ not in FORMATS:
            raise InputError(
                f"--format: unknown format {format_!r} (expected one of {', '.join(FORMATS)})"
            )
        if out.is_dir():
            raise InputError(f"--out: {out}: is a directory; expected a file path")
        eps = load_endpoints(endpoints) if endpoints else None
        st, _ = _load_study(study, storage)
        space, _, obj = space_of(st)
        ho = st.user_attrs.get("holdout")
        if trial is None:
            if ho:
                trial = int(ho["best_trial"])
            elif not obj.multi:
                trial = st.best_trial.number
            else:
                raise InputError(
                    "--trial: a multi-objective study needs --trial N (a Pareto point)"
                )
        if trial < 0 or trial >= len(st.trials):
            raise InputError(f"--trial: no trial {trial} (the study has 0..{len(st.trials) - 1})")
        ft = st.trials[trial]
        if ft.state != optuna.trial.TrialState.COMPLETE:
            raise InputError(f"--trial: trial {trial} is {ft.state.name}, not COMPLETE")
        if ho and int(ho["best_trial"]) == trial:
            problems = export_warnings(ho)
            notes: list[str] = []
        else:
            broken = [f"{k} by {v:+.4g}" for k, v in ft.constraints.items() if v > 0]
            problems = (
                [f"infeasible: constraints not met on the training seeds ({', '.join(broken)})"]
                if broken
                else []
            )
            why = "not the study's winner" if ho else "the study has no holdout result yet"
            notes = [
                f"trial {trial} is {why}: it was not reported on fresh seeds; its improvement "
                "over the base config is unmeasured (check it with `sim compare`)"
            ]
        if problems and not force:
            raise InputError(
                f"export: trial {trial} is {'; '.join(problems)}; --force writes it anyway "
                "with this reason in its header"
            )
        header = _warning_header(problems)
        if not (format_ == "router" and out.suffix.lower() == ".json"):
            header += notes  # JSON has no comments: the notes go to stderr only
        config = space.build(ft.params)
        if eps:
            config = merge_endpoints(config, eps)
        path = write_export(config, out, format_, header=header)
        losses = litellm_losses(round_config(config)) if format_ == "litellm" else []
    except InputError as exc:
        fail_cli(str(exc))
    for line in notes:
        err.print(f"note: {line}", markup=False, highlight=False)
    if problems:
        err.print(
            f"warning: written with --force: {'; '.join(problems)}", markup=False, highlight=False
        )
    if losses:
        err.print(
            "not carried to LiteLLM (listed in the file's header too):",
            markup=False,
            highlight=False,
        )
        for line in losses:
            err.print(f"  - {line}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"wrote trial {trial} as {format_} config to {path}", markup=False)


def main() -> None:
    """Entry point of the ``optimize`` command (usage errors: one line, exit 2)."""
    # router.errors is cheap to import: the router package re-exports lazily.
    from router.errors import run_cli

    run_cli(app)


if __name__ == "__main__":
    main()
