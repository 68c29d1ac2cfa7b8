"""The ``optimize`` command line: run, show and export Optuna studies.

Library errors (:class:`router.errors.InputError`) and usage errors become one
line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from router import InputError, RouterConfig, load_config, load_seed_config
from router.errors import fail_cli, run_cli

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Tune routing configs with Optuna studies on the SimPy twin; export the winner.",
)
err = Console(stderr=True)


def _config(path: Path | None) -> RouterConfig:
    return load_config(path) if path else load_seed_config()


def _load_study(study: str, storage: str | None) -> tuple[Any, str]:
    import optuna

    from optimize.storage import open_storage, redact, resolve_storage

    url = resolve_storage(storage, study)
    if not Path(url).exists() and "://" not in url:
        raise InputError(f"--storage: {url}: no such study journal (run `optimize run` first)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study, storage=open_storage(url)), url
    except KeyError:
        raise InputError(f"--study: no study named {study!r} in {redact(url)}") from None


class _Bar:
    """A rich progress bar showing the running best (silent with --json)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int, best: float | None) -> None:
        if self.quiet:
            return
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
        label = f"best {best:.6g}" if best is not None else ""
        self._progress.update(self._task, completed=done, total=total, best=label)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="Trace files or directories to tune on.")],
    study: Annotated[str, typer.Option(help="Study name (resumed when it exists).")] = "routing",
    storage: Annotated[
        str | None,
        typer.Option(help="Journal file or database URL (default: studies/<study>.journal)."),
    ] = None,
    trials: Annotated[int, typer.Option(help="Finished trials the study should hold.")] = 100,
    jobs: Annotated[int, typer.Option(help="Worker processes on the storage.")] = 1,
    objective: Annotated[
        str | None,
        typer.Option(help="net_value | seed_score | successes_per_dollar | multi."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="batch | prototype | critical | interactive | compliance."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of the replications.")] = 0,
    config: Annotated[Path | None, typer.Option(help="Base config (default: the seed).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario (default: the seed).")] = None,
    holdout: Annotated[
        list[Path] | None, typer.Option(help="Held-out traces for choosing the winner.")
    ] = None,
    replications: Annotated[int, typer.Option(help="CRN seeds per trial.")] = 3,
    holdout_replications: Annotated[int, typer.Option(help="Held-out seeds.")] = 10,
    top_k: Annotated[int, typer.Option(help="Trials re-run on the holdout.")] = 5,
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
    no_prune: Annotated[bool, typer.Option("--no-prune", help="Never prune trials.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Figures, summary.json, tuned.yaml (default: studies/<study>/)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print only the final JSON.")] = False,
) -> None:
    """Run (or resume) a study, choose the winner on held-out seeds, write figures."""
    from optimize.export import write_export
    from optimize.objective import make_objective
    from optimize.plots import write_figures
    from optimize.space import SpaceSpec, load_space_spec
    from optimize.storage import STUDIES_DIR, resolve_storage
    from optimize.study import StudySettings, run_study
    from sim.replay import load_traces
    from sim.scenario import load_scenario, load_seed_scenario

    warnings.filterwarnings("ignore", module="optuna")
    bar = _Bar(quiet=json_)
    try:
        spec, file_settings = load_space_spec(study_file) if study_file else (SpaceSpec(), {})
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
            base=_config(config),
            objective=obj,
            spec=spec,
            trials=trials,
            jobs=jobs,
            seed=seed,
            replications=replications,
            holdout_replications=holdout_replications,
            top_k=top_k,
            sampler=sampler,
            prune=not no_prune,
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
        try:
            report = run_study(traces, scn, settings, holdout_traces=held, progress=bar)
        finally:
            bar.close()
        write_figures(report.study, obj, report.holdout, target)
        best = report.space.build(report.study.trials[report.summary["best_trial"]].params)
        tuned = write_export(best, target / "tuned.yaml")
        report.summary["out"] = str(target)
        report.summary["exported"] = str(tuned)
        _write_json(target / "summary.json", report.summary)
    except InputError as exc:
        fail_cli(str(exc))
    if json_:
        sys.stdout.write(json.dumps(report.summary, indent=2) + "\n")
        return
    _print_run(report.summary)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from router.config import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _print_run(s: dict[str, Any]) -> None:
    from rich.table import Table

    console = Console()
    table = Table(title=f"Study {s['study']} ({s['trials']} trials, objective {s['objective']})")
    table.add_column("held-out seeds")
    table.add_column("base", justify="right")
    table.add_column("tuned", justify="right")
    for key in ("completion_rate", "cost_per_task", "latency_mean_s", "latency_p95_s"):
        table.add_row(key, f"{s['base_metrics'][key]:.6g}", f"{s['metrics'][key]:.6g}")
    table.add_row(
        "objective",
        f"{s['base_value']:.6g}",
        f"{s['holdout_value']:.6g} [{s['holdout_ci_low']:.6g}, {s['holdout_ci_high']:.6g}]",
    )
    console.print(table)
    console.print(
        f"trial {s['best_trial']}: improvement vs base {s['improvement_vs_base']:+.6g} "
        f"(95% CI {s['improvement_ci_low']:+.6g} .. {s['improvement_ci_high']:+.6g})"
        + ("" if s["feasible"] else "  [constraints NOT held]")
    )
    console.print(f"figures, summary.json and tuned.yaml in {s['out']}/")


@app.command()
def show(
    study: Annotated[str, typer.Option(help="Study name.")] = "routing",
    storage: Annotated[str | None, typer.Option(help="Journal file or database URL.")] = None,
    top: Annotated[int, typer.Option(help="How many best trials to list.")] = 10,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Best trials, the Pareto front, parameter importances and the holdout result."""
    import optuna

    from optimize.plots import importances, pareto_mask
    from optimize.study import space_of

    warnings.filterwarnings("ignore", module="optuna")
    try:
        st, _ = _load_study(study, storage)
        _, _, obj = space_of(st)
    except InputError as exc:
        fail_cli(str(exc))
    TrialState = optuna.trial.TrialState
    complete = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
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
    rows.sort(key=lambda r: (not r["feasible"], -r["value"]))
    pts = [[-r["completion_rate"], r["cost_per_success"], r["latency_p95_s"]] for r in rows]
    import numpy as np

    front = (
        [r["trial"] for r, k in zip(rows, pareto_mask(np.array(pts)), strict=True) if k]
        if rows
        else []
    )
    data = {
        "study": study,
        "objective": obj.name,
        "trials": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in st.trials),
        "complete": len(complete),
        "waiting": sum(t.state == TrialState.WAITING for t in st.trials),
        "best": rows[:top],
        "pareto_front": sorted(front),
        "importances": importances(st),
        "holdout": {
            k: v
            for k, v in (st.user_attrs.get("holdout") or {}).items()
            if k not in ("metrics", "base_metrics", "values", "base_values", "candidates")
        },
    }
    if json_:
        sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")
        return
    from rich.table import Table

    console = Console()
    table = Table(title=f"Study {study}: best of {len(complete)} complete trials ({obj.name})")
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
    console.print(f"Pareto front (completion ↑, cost/success ↓, p95 ↓): trials {front}")
    if data["importances"]:
        console.print(
            "importances: " + ", ".join(f"{k} {v:.2f}" for k, v in data["importances"].items())
        )
    ho = data["holdout"]
    if ho:
        console.print(
            f"holdout winner: trial {ho['best_trial']}, value {ho['holdout_value']:.6g} "
            f"[{ho['holdout_ci_low']:.6g}, {ho['holdout_ci_high']:.6g}], improvement vs base "
            f"{ho['improvement_vs_base']:+.6g} [{ho['improvement_ci_low']:+.6g}, "
            f"{ho['improvement_ci_high']:+.6g}]"
        )


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="File to write (.yaml, .json or .toml).")],
    study: Annotated[str, typer.Option(help="Study name.")] = "routing",
    storage: Annotated[str | None, typer.Option(help="Journal file or database URL.")] = None,
    trial: Annotated[
        int | None, typer.Option(help="Trial number (default: the holdout winner).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="router | litellm.")] = "router",
) -> None:
    """Write a trial's config for the live router (or a LiteLLM proxy)."""
    import optuna

    from optimize.export import FORMATS, write_export
    from optimize.study import space_of

    warnings.filterwarnings("ignore", module="optuna")
    try:
        if format_ not in FORMATS:
            raise InputError(
                f"--format: unknown format {format_!r} (expected one of {', '.join(FORMATS)})"
            )
        st, _ = _load_study(study, storage)
        space, _, obj = space_of(st)
        if trial is None:
            ho = st.user_attrs.get("holdout")
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
        path = write_export(space.build(ft.params), out, format_)
    except InputError as exc:
        fail_cli(str(exc))
    err.print(f"wrote trial {trial} as {format_} config to {path}")


def main() -> None:
    """Entry point of the ``optimize`` command (usage errors: one line, exit 2)."""
    run_cli(app)


if __name__ == "__main__":
    main()
