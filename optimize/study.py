"""The study runner: Optuna trials scored by the simulator, a winner chosen on held-out seeds.

How a study runs (:func:`run_study`):

1. The search space is derived from the base config and the scenario
   (:class:`~optimize.space.SearchSpace`) and stored with the study, with the
   objective and the base config, so that ``optimize show`` and ``optimize
   export`` need nothing but the storage. The base config's own parameters are
   enqueued as trial 0.
2. Each trial builds a config and replays the traces under ``replications``
   seeds ``seed, seed+1, …`` (the same seeds for every trial: common random
   numbers, so trials differ by their config, not by their luck). For a scalar
   objective the running mean is reported after each replication and a median
   pruner stops trials that are already behind.
   A trial whose config (built from its params, compared by canonical JSON)
   repeats an earlier COMPLETE trial's is not simulated again: the replay is a
   function of the config and the seeds, so it gets that trial's values,
   metrics and constraints, and the user attr ``duplicate_of`` names the
   trial. Optuna records it like any other (the sampler learns that the point
   was tried), but it does not count towards ``trials``: a run gives such
   repeats back, up to ``trials`` of them (beyond that the space looks
   exhausted, and repeats count like simulated trials so the run ends).
3. ``--jobs N`` runs N worker processes on the same storage; each takes trial
   slots from a shared counter, so the study ends with exactly the requested
   number of simulated (complete or pruned, not repeated) trials. Trials left
   RUNNING by a killed process on this machine are marked FAIL when the study
   is resumed, and so are trials no worker named within ``UNNAMED_GRACE_S`` (a
   process killed between creating a trial and naming itself); every finished
   trial is kept.
4. Choosing and reporting the winner uses seeds no trial was scored on, in
   named, disjoint streams (:data:`SEED_STREAMS`, :func:`seed_stream`): trials
   train on ``seed + [0, R)``; the top ``top_k`` distinct feasible trials (for
   ``multi``: Pareto points, ranked by net value) and the base config are re-run
   on the *selection* seeds ``seed + 10_000 + [0, H)`` (and on the held-out
   traces when given) and the winner is the best there (feasible first); the
   winner and the base config are then run again on fresh *reporting* seeds
   ``seed + 20_000 + [0, H)``, which chose nothing, and only those numbers are
   reported: the winner's value with its 95% CI, its paired improvement over
   the base config, whether it holds the constraints there (``feasible``) and
   whether the improvement's CI lies above 0 (``significant``). ``sim compare``
   pairs configs on ``seed + 30_000 + [0, R)`` by default, a fourth stream.
   Selecting on the seeds you report on would report the winner's luck along
   with its merit (the maximum of k noisy means is biased upwards).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimize.objective import Objective
from optimize.space import SearchSpace, SpaceSpec
from optimize.storage import open_storage, redact
from router import RouterConfig, config_from_dict
from router.errors import InputError
from sim.engine.replays import replay
from sim.engine.results import SCALAR_KEYS, mean_ci, paired_difference
from sim.traces.tasks import ReplayColumns
from sim.world.scenario import Scenario

#: Warnings a resume has to give (logging's last-resort handler prints them on stderr).
_log = logging.getLogger("optimize")

SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "gp", "random")
#: How many seeds one stream holds: streams never overlap while replications,
#: holdout replications and ``sim compare --replications`` stay within it.
STREAM_WIDTH = 10_000
#: The seed streams of a study with base seed ``s``: stream ``name`` is
#: ``s + SEED_STREAMS[name] + [0, n)``, n <= :data:`STREAM_WIDTH`. ``compare`` is
#: ``sim compare``'s default (sim.cli.COMPARE_SEED_OFFSET), so a check run by hand
#: meets seeds the study neither trained, selected nor reported on.
SEED_STREAMS: dict[str, int] = {
    "training": 0,
    "selection": 10_000,
    "reporting": 20_000,
    "compare": 30_000,
}
HOLDOUT_SEED_OFFSET = SEED_STREAMS["selection"]  # the selection stream (older name)
#: Metrics compared between the winner and the base config, paired by held-out seed
#: (and the direction that is better).
PAIRED_METRICS: tuple[tuple[str, str], ...] = (
    ("completion_rate", "maximize"),
    ("cost_per_task", "minimize"),
    ("latency_mean_s", "minimize"),
    ("latency_p95_s", "minimize"),
    ("breaker_trips", "minimize"),
)
Traces = Sequence[tuple[str, ReplayColumns]]


# ----------------------------------------------------------------- evaluation
class Evaluator:
    """Replays a fixed set of traces under a config and a seed (one summary per seed).

    ``fraction`` < 1 replays a sample of every trace instead
    (:func:`optimize.fidelity.subsample`, cut once per fraction and kept) with the
    budget caps scaled by the sample's share of the tasks.
    """

    def __init__(self, traces: Traces, scenario: Scenario) -> None:
        if not traces:
            raise InputError("traces: no task traces to evaluate on")
        self.traces = list(traces)
        self.scenario = scenario
        self._samples: dict[float, tuple[list[tuple[str, ReplayColumns]], float]] = {}

    def sample(self, fraction: float) -> tuple[list[tuple[str, ReplayColumns]], float]:
        """The traces cut to ``fraction`` of their time, and their share of the tasks."""
        if fraction >= 1.0:
            return self.traces, 1.0
        if fraction not in self._samples:
            from optimize.fidelity import subsample

            cut = [(name, subsample(cols, fraction)) for name, cols in self.traces]
            total = sum(len(c.task_ids) for _, c in self.traces)
            share = sum(len(c.task_ids) for _, c in cut) / max(total, 1)
            self._samples[fraction] = (cut, share)
        return self._samples[fraction]

    def summary(self, config: RouterConfig, seed: int, fraction: float = 1.0) -> dict[str, Any]:
        """The merged summary of every trace (or of their ``fraction`` sample) under one seed."""
        traces, share = self.sample(fraction)
        if share < 1.0:
            from optimize.fidelity import scale_budget

            config = scale_budget(config, share)
        report = replay(
            traces=traces, config=config, scenario=self.scenario, seed=seed, figures=False
        )
        return report.per_seed[0]

    def fingerprint(self) -> str:
        """Names and sizes of the traces (a resumed study must use the same ones)."""
        return ", ".join(f"{name}:{len(cols.task_ids)}" for name, cols in self.traces)


def seed_stream(name: str, seed: int, n: int) -> list[int]:
    """The first ``n`` seeds of stream ``name`` for base seed ``seed`` (:data:`SEED_STREAMS`)."""
    if name not in SEED_STREAMS:
        raise InputError(
            f"seed stream: unknown stream {name!r} (expected one of {', '.join(SEED_STREAMS)})"
        )
    if not 0 <= n <= STREAM_WIDTH:
        raise InputError(f"seed stream {name}: {n} seeds do not fit in a stream of {STREAM_WIDTH}")
    start = seed + SEED_STREAMS[name]
    return list(range(start, start + n))


def mean_metrics(summaries: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per-metric mean over replications (scalar summary keys only)."""
    return {k: float(np.mean([s[k] for s in summaries])) for k in SCALAR_KEYS}


def config_key(config: RouterConfig) -> str:
    """A digest of the config's canonical JSON: equal configs, equal keys."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------- settings
@dataclass
class StudySettings:
    """Everything :func:`run_study` needs besides the traces and the scenario."""

    study: str
    storage: str
    base: RouterConfig
    objective: Objective = field(default_factory=Objective)
    spec: SpaceSpec = field(default_factory=SpaceSpec)
    trials: int = 100
    jobs: int = 1
    seed: int = 0
    replications: int = 3
    holdout_replications: int = 10
    top_k: int = 5
    sampler: str = "tpe"
    prune: bool = True
    #: Fractions of the traffic a trial is scored on before the full trace
    #: (:mod:`optimize.fidelity`); empty: every trial replays the full trace.
    fidelity: tuple[float, ...] = ()
    fidelity_pruner: str = "halving"
    #: Each fidelity rung keeps about ``1/reduction_factor`` of the trials reaching it.
    reduction_factor: int = 3
    #: Race the holdout's candidates (stop those clearly behind; see :func:`holdout`).
    race: bool = True

    def check(self) -> None:
        """One-line errors for settings out of range."""
        from optimize.fidelity import FIDELITY_PRUNERS, parse_fidelity

        self.fidelity = parse_fidelity(list(self.fidelity))
        if self.fidelity_pruner not in FIDELITY_PRUNERS:
            raise InputError(
                f"--fidelity-pruner: unknown pruner {self.fidelity_pruner!r} "
                f"(expected one of {', '.join(FIDELITY_PRUNERS)})"
            )
        rf = self.reduction_factor
        if isinstance(rf, bool) or not isinstance(rf, int) or rf < 2:
            raise InputError(f"--reduction-factor: expected an integer >= 2, got {rf!r}")
        if self.fidelity and self.objective.multi:
            raise InputError(
                "--fidelity: Optuna's pruners rank one objective; a multi-objective study "
                "runs every trial on the full trace (drop --fidelity)"
            )
        for key, low in (
            ("trials", 1),
            ("jobs", 1),
            ("replications", 1),
            ("holdout_replications", 2),
            ("top_k", 1),
        ):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(
                    f"--{key.replace('_', '-')}: expected an integer >= {low}, got {v!r}"
                )
        for key in ("replications", "holdout_replications"):
            v = getattr(self, key)
            if v > STREAM_WIDTH:
                raise InputError(
                    f"--{key.replace('_', '-')}: at most {STREAM_WIDTH} (one seed stream), got {v}"
                )
        if self.sampler not in SAMPLERS:
            raise InputError(
                f"--sampler: unknown sampler {self.sampler!r} "
                f"(expected one of {', '.join(SAMPLERS)})"
            )
        if self.sampler == "gp":
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise InputError(
                    "--sampler gp: Optuna's GP sampler needs PyTorch (pip install 'costroute[gp]')"
                )


def make_sampler(name: str, seed: int, *, batched: bool = False) -> Any:
    """A seeded Optuna sampler by name (TPE handles multi-objective studies too).

    TPE is univariate: the routes' parameters act on separate task types, so the
    objective is close to a sum of per-route terms, which independent Parzen
    estimators model well (and cheaply) once the base config's neighbours are in.
    ``batched``: trials are asked many at a time before any is told (synchronous
    halving), so TPE counts the running ones as bad (``constant_liar``) and a
    batch spreads out instead of drawing the same neighbourhood again and again.
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=batched)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _derived_seed(*parts: int) -> int:
    """A sampler seed from (study seed, worker, trials already run): resumed or parallel
    workers must not replay the same random start-up points."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


# ----------------------------------------------------------------- trial objective
@dataclass
class _Context:
    """What a worker needs; inherited by forked workers, never pickled.

    ``repeats`` is the shared count of repeated trials this run may still give
    back to the slot counter; ``keys`` memoises config keys of trials stored
    without one; ``repeated`` says whether this process's last trial was a repeat.
    """

    settings: StudySettings
    space: SearchSpace
    evaluator: Evaluator
    storage: str
    repeats: Any = None
    keys: dict[int, str] = field(default_factory=dict)
    repeated: bool = False


def _earlier_twin(ctx: _Context, study: Any, key: str, number: int) -> Any | None:
    """The first COMPLETE, simulated trial before ``number`` whose config has ``key``."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.number >= number or "duplicate_of" in t.user_attrs:
            continue
        k = t.user_attrs.get("config_key") or ctx.keys.get(t.number)
        if k is None:  # a trial stored before config keys were recorded
            k = ctx.keys[t.number] = config_key(ctx.space.build(t.params))
        if k == key:
            return t
    return None


def copy_twin(trial: Any, twin: Any) -> None:
    """Mark ``trial`` a repeat of ``twin`` (``duplicate_of``) and give it the twin's
    user attrs and constraints; the caller returns or tells the twin's values."""
    trial.set_user_attr("duplicate_of", twin.number)
    for attr in ("metrics", "seed_values", "fidelity", "fidelity_values"):
        if attr in twin.user_attrs:
            trial.set_user_attr(attr, twin.user_attrs[attr])
    for name, v in twin.constraints.items():
        trial.set_constraint(name, v)


def _evaluate_trial(ctx: _Context, trial: Any) -> float | list[float]:
    import optuna

    s = ctx.settings
    obj = s.objective
    ctx.repeated = False
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    config = ctx.space.suggest(trial)
    key = config_key(config)
    trial.set_user_attr("config_key", key)
    twin = _earlier_twin(ctx, trial.study, key, trial.number)
    if twin is not None:
        # Same config, same seeds: the replay would give the same numbers.
        ctx.repeated = True
        copy_twin(trial, twin)
        return list(twin.values) if obj.multi else float(twin.value)
    seeds = seed_stream("training", s.seed, s.replications)
    if s.fidelity:
        _climb_fidelity(ctx, trial, config, seeds)
    summaries: list[dict[str, Any]] = []
    values: list[float] = []
    for r, seed in enumerate(seeds):
        summary = ctx.evaluator.summary(config, seed)
        summaries.append(summary)
        values.append(obj.value(summary))
        if not obj.multi and s.prune and s.replications > 1 and not s.fidelity:
            trial.report(float(np.mean(values)), step=r)
            if r < s.replications - 1 and trial.should_prune():
                trial.set_user_attr("metrics", mean_metrics(summaries))
                raise optuna.TrialPruned()
    metrics = mean_metrics(summaries)
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("seed_values", values)
    for key, v in obj.constraints.values(metrics).items():
        trial.set_constraint(key, v)
    out = obj.values(metrics)
    return out if obj.multi else out[0]


def _climb_fidelity(ctx: _Context, trial: Any, config: RouterConfig, seeds: list[int]) -> None:
    """Score ``config`` on each rung's sample in turn; raise TrialPruned where the pruner says.

    Rung ``j``'s mean objective over the training seeds is reported at step
    ``reduction_factor ** j`` (:func:`optimize.fidelity.rung_steps`). User attrs:
    ``fidelity_values`` (one per rung reached) and ``fidelity``, the largest fraction
    the trial was replayed on (1.0 once it goes on to the full trace).
    """
    import optuna

    from optimize.fidelity import rung_steps

    s = ctx.settings
    reached: list[float] = []
    for frac, step in zip(s.fidelity, rung_steps(s.fidelity, s.reduction_factor), strict=True):
        rung = [ctx.evaluator.summary(config, seed, frac) for seed in seeds]
        value = float(np.mean([s.objective.value(x) for x in rung]))
        reached.append(value)
        trial.set_user_attr("fidelity_values", reached)
        trial.report(value, step=step)
        if trial.should_prune():
            trial.set_user_attr("fidelity", frac)
            # A sample's metrics: only ever shown for this pruned trial, never ranked.
            trial.set_user_attr("metrics", mean_metrics(rung))
            raise optuna.TrialPruned()
    trial.set_user_attr("fidelity", 1.0)


def _finished(study: Any) -> list[Any]:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _simulated(study: Any) -> list[Any]:
    """Finished trials that were simulated (not answered from an earlier twin)."""
    return [t for t in _finished(study) if "duplicate_of" not in t.user_attrs]


def count_trials(trials: Sequence[Any]) -> dict[str, int]:
    """Trial counts by state; ``trials`` counts the simulated finished ones, as
    ``--trials`` does, and ``duplicates`` the repeats answered without simulating."""
    import optuna

    S = optuna.trial.TrialState
    repeat = ["duplicate_of" in t.user_attrs for t in trials]
    finished = [t.state in (S.COMPLETE, S.PRUNED) for t in trials]
    return {
        "trials": sum(f and not r for f, r in zip(finished, repeat, strict=True)),
        "complete": sum(t.state == S.COMPLETE for t in trials),
        "pruned": sum(t.state == S.PRUNED for t in trials),
        "failed": sum(t.state == S.FAIL for t in trials),
        "running": sum(t.state == S.RUNNING for t in trials),
        "waiting": sum(t.state == S.WAITING for t in trials),
        "duplicates": sum(f and r for f, r in zip(finished, repeat, strict=True)),
    }


@dataclass(frozen=True)
class Progress:
    """What :func:`run_study` reports as trials finish.

    ``done`` counts simulated finished trials (repeats excluded) against
    ``total``; ``best_value`` is the best objective value (``multi``: net value)
    of a complete trial, ``best_trial`` its number, ``feasible`` whether it
    holds the constraints (infeasible only while no trial does). ``metric``
    names the value.
    """

    done: int
    total: int
    metric: str
    best_value: float | None = None
    best_trial: int | None = None
    feasible: bool = True
    duplicates: int = 0


def best_so_far(trials: Sequence[Any], objective: Objective) -> tuple[float, int, bool] | None:
    """(value, trial number, feasible) of the best complete trial, feasible ones first.

    Scalar objectives compare the trial's value; ``multi`` its net value. Ties go
    to the lower trial number.
    """
    import optuna

    best: tuple[bool, float, int] | None = None
    for t in trials:
        if t.state != optuna.trial.TrialState.COMPLETE or "metrics" not in t.user_attrs:
            continue
        v = objective.value(t.user_attrs["metrics"]) if objective.multi else float(t.value)
        ok = all(c <= 0 for c in t.constraints.values())
        if best is None or (ok, v, -t.number) > (best[0], best[1], -best[2]):
            best = (ok, v, t.number)
    return None if best is None else (best[1], best[2], best[0])


def _progress(study: Any, settings: StudySettings) -> Progress:
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    obj = settings.objective
    best = best_so_far(trials, obj)
    metric = "net_value" if obj.multi else obj.name
    if best is None:
        return Progress(counts["trials"], settings.trials, metric, duplicates=counts["duplicates"])
    return Progress(
        counts["trials"], settings.trials, metric, *best, duplicates=counts["duplicates"]
    )


def _worker(
    ctx: _Context,
    worker: int,
    slots: Any,
    callback: Callable[[Any, Any], None] | None = None,
) -> None:
    """Run trials until the shared slot counter is empty (or the study is full).

    A repeated trial gives its slot back while ``ctx.repeats`` allows.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The traces are hundreds of thousands of long-lived objects: keep them out of
    # every full garbage collection the simulator's churn triggers.
    gc.freeze()
    s = ctx.settings
    storage = open_storage(ctx.storage)
    probe = optuna.load_study(study_name=s.study, storage=storage)
    sampler = make_sampler(s.sampler, _derived_seed(s.seed, worker, len(probe.trials)))
    if s.fidelity:
        from optimize.fidelity import make_pruner

        pruner = make_pruner(s.fidelity_pruner, s.fidelity, s.reduction_factor)
    elif s.prune and not s.objective.multi:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=s.study, storage=storage, sampler=sampler, pruner=pruner)
    callbacks = [callback] if callback is not None else None
    while True:
        with slots.get_lock():
            if slots.value <= 0:
                return
            slots.value -= 1
        # Workers on other machines share the study: stop once it holds enough trials.
        if len(_simulated(study)) >= s.trials:
            return
        ctx.repeated = False
        study.optimize(lambda t: _evaluate_trial(ctx, t), n_trials=1, callbacks=callbacks)
        if ctx.repeated and ctx.repeats is not None:
            with ctx.repeats.get_lock():
                if ctx.repeats.value > 0:
                    ctx.repeats.value -= 1
                    with slots.get_lock():
                        slots.value += 1


#: Seconds a RUNNING trial may stay without a ``worker`` name before a resume takes it
#: for orphaned. ``ask`` writes the trial and the objective names its worker in the
#: next write, milliseconds later; only a process killed in between leaves a trial
#: unnamed (measured: a SIGKILL just after a trial completed, in CI).
UNNAMED_GRACE_S = 10.0


def _fail_stale_trials(study: Any) -> int:
    """Mark RUNNING trials whose worker process on this host is gone as FAIL, and
    RUNNING trials that no worker named within ``UNNAMED_GRACE_S`` of their start (a
    process killed between creating a trial and naming itself; any host). A young
    unnamed trial is waited for until it is that old, then looked at again: without
    that rule such a trial stayed RUNNING through every resume."""
    import optuna

    running = (optuna.trial.TrialState.RUNNING,)
    host = socket.gethostname()
    ages = {
        t.number: _age_s(t)
        for t in study.get_trials(deepcopy=False, states=running)
        if "worker" not in t.user_attrs
    }
    if ages and min(ages.values()) < UNNAMED_GRACE_S:
        wait = UNNAMED_GRACE_S - min(ages.values())
        # Said, so that a resume that sits still for seconds is not taken for a hang.
        _log.warning(
            "resume: trial %s is RUNNING and no worker has named it yet; waiting %.1f s "
            "before failing it as orphaned",
            ", ".join(f"#{n}" for n, age in sorted(ages.items()) if age < UNNAMED_GRACE_S),
            wait,
        )
        time.sleep(wait)
    n = 0
    for t in study.get_trials(deepcopy=False, states=running):
        worker = t.user_attrs.get("worker")
        if worker is None:
            stale = _age_s(t) >= UNNAMED_GRACE_S
        else:
            w_host, _, pid = str(worker).rpartition(":")
            stale = w_host == host and pid.isdigit() and not _alive(int(pid))
        if stale:
            study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
            n += 1
    return n


def _age_s(trial: Any) -> float:
    """Seconds since ``trial`` started (Optuna stamps it with the local ``now()``)."""
    import datetime as dt

    if trial.datetime_start is None:
        return math.inf
    return (dt.datetime.now() - trial.datetime_start).total_seconds()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) still answers kill(0): read its state.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ----------------------------------------------------------------- study setup
def _study_attrs(
    settings: StudySettings, space: SearchSpace, evaluator: Evaluator
) -> dict[str, Any]:
    return {
        "costroute": 1,
        "base_config": settings.base.model_dump(mode="json"),
        "space": space.resolved_spec().to_dict(),
        "objective": settings.objective.to_dict(),
        "seed": settings.seed,
        "replications": settings.replications,
        "traces": evaluator.fingerprint(),
        # None without a schedule (and in studies made before schedules existed).
        "fidelity": (
            {
                "schedule": list(settings.fidelity),
                "pruner": settings.fidelity_pruner,
                "reduction_factor": settings.reduction_factor,
            }
            if settings.fidelity
            else None
        ),
    }


def create_or_load(
    settings: StudySettings, space: SearchSpace, evaluator: Evaluator, *, wait_s: float = 120.0
) -> Any:
    """Create the study (storing its definition and enqueuing the base config) or resume it.

    On creation the base config is enqueued as trial 0, then its one-step
    neighbours (:meth:`SearchSpace.neighbours`), so the sampler starts from
    what is known to work and learns which single changes help.

    Several processes may start on one storage at the same moment: only the one
    whose ``create_study`` succeeds writes the definition, and it writes the
    ``costroute`` marker last, so the others wait (up to ``wait_s``) for a
    complete definition instead of reading half of one. A resumed study must
    have been made with the same objective, seeds and traces: trials scored
    differently cannot be compared, so that is an error.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(settings.storage)
    directions = settings.objective.directions
    attrs = _study_attrs(settings, space, evaluator)
    try:
        study = optuna.create_study(
            study_name=settings.study, storage=storage, directions=directions
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.study, storage=storage)
    else:
        for k, v in attrs.items():
            if k != "costroute":
                study.set_user_attr(k, v)
        study.enqueue_trial(space.base_params())
        for params in space.neighbours():
            study.enqueue_trial(params)
        study.set_user_attr("costroute", attrs["costroute"])
        return study
    deadline = time.monotonic() + wait_s
    while not study.user_attrs.get("costroute"):
        if time.monotonic() > deadline:
            raise InputError(
                f"--study {settings.study}: exists in {redact(settings.storage)} but was not "
                "made by this tool (or its creator died before defining it)"
            )
        time.sleep(0.2)
        study = optuna.load_study(study_name=settings.study, storage=storage)
    stored = study.user_attrs
    for key in ("objective", "seed", "replications", "traces", "fidelity"):
        if stored.get(key) != attrs[key]:
            raise InputError(
                f"--study {settings.study}: already exists with a different {key} "
                f"({_short(stored.get(key))} vs {_short(attrs[key])}); use a new --study name"
            )
    if [d.name.lower() for d in study.directions] != directions:
        raise InputError(f"--study {settings.study}: exists with other objective directions")
    return study


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def space_of(study: Any) -> tuple[SearchSpace, RouterConfig, Objective]:
    """Rebuild a stored study's space, base config and objective from its user attrs."""
    attrs = study.user_attrs
    if not attrs.get("costroute"):
        raise InputError(
            f"study {study.study_name!r}: not made by `optimize run` (no stored space)"
        )
    base = config_from_dict(attrs["base_config"], source=f"study {study.study_name} base config")
    spec = SpaceSpec.from_dict(attrs["space"], source=f"study {study.study_name}")
    return SearchSpace(base, None, spec), base, Objective.from_dict(attrs["objective"])


# ----------------------------------------------------------------- holdout
@dataclass
class Candidate:
    trial: int | None  # None: the base config
    config: RouterConfig
    train_value: float | None


#: The evaluator forked pool workers inherit (set before the pool is made).
_POOL_EVALUATOR: Evaluator | None = None


def _summary(evaluator: Evaluator, config: RouterConfig, seed: int, fraction: float) -> Any:
    # The full traces as Evaluator.summary(config, seed): its default, kept for callers
    # (and test doubles) that only know that form.
    if fraction >= 1.0:
        return evaluator.summary(config, seed)
    return evaluator.summary(config, seed, fraction)


def _pool_summary(args: tuple[dict[str, Any], int, float]) -> dict[str, Any]:
    data, seed, fraction = args
    assert _POOL_EVALUATOR is not None
    return _summary(_POOL_EVALUATOR, config_from_dict(data), seed, fraction)


class _Replays:
    """Summaries of (config, seed, fraction) replays, each simulated once per run.

    With ``jobs`` > 1 (and fork available) they run in a forked pool in submission
    order; otherwise at submission. A replay depends only on its config, seed and
    fraction, so the summaries are the same either way.
    """

    def __init__(self, evaluator: Evaluator, jobs: int) -> None:
        self.evaluator = evaluator
        self.jobs = jobs if "fork" in mp.get_all_start_methods() else 1
        self.memo: dict[tuple[str, int, float], Any] = {}
        self.simulated = 0
        self._pool: Any = None

    def submit(self, key: str, config: RouterConfig, seed: int, fraction: float) -> None:
        global _POOL_EVALUATOR
        k = (key, seed, fraction)
        if k in self.memo:
            return
        self.simulated += 1
        if self.jobs <= 1:
            self.memo[k] = _summary(self.evaluator, config, seed, fraction)
            return
        if self._pool is None:
            _POOL_EVALUATOR = self.evaluator  # inherited by the forked workers
            self._pool = mp.get_context("fork").Pool(self.jobs)
        self.memo[k] = self._pool.apply_async(
            _pool_summary, ((config.model_dump(mode="json"), seed, fraction),)
        )

    def ready(self, key: str, seed: int, fraction: float) -> bool:
        v = self.memo[(key, seed, fraction)]
        return isinstance(v, dict) or v.ready()

    def get(self, key: str, seed: int, fraction: float) -> dict[str, Any]:
        k = (key, seed, fraction)
        v = self.memo[k]
        if not isinstance(v, dict):
            v = self.memo[k] = v.get()  # re-raises a worker's exception
        return v

    def wait(self, key: str, seed: int, fraction: float, timeout_s: float) -> None:
        v = self.memo[(key, seed, fraction)]
        if not isinstance(v, dict):
            v.wait(timeout_s)

    def close(self, *, terminate: bool = False) -> None:
        """Stop the pool: let it finish (``terminate``: kill its workers, on an error)."""
        global _POOL_EVALUATOR
        if self._pool is not None:
            if terminate:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
        _POOL_EVALUATOR = None


class _Runs:
    """Summaries of (config, seed) pairs on the full traces, each simulated once, over
    ``jobs`` forked workers (:class:`_Replays`).

    A pair asked for again (the base config among the candidates, the base config on
    the reporting seeds once the winner is known) is answered from memory. Every
    batch is simulated in full before the next is chosen, and a replay depends only
    on its config and seed, so the summaries are the same for any ``jobs``.
    """

    def __init__(self, evaluator: Evaluator, jobs: int) -> None:
        self.replays = _Replays(evaluator, jobs)

    @property
    def simulated(self) -> int:
        return self.replays.simulated

    def __call__(self, pairs: Sequence[tuple[RouterConfig, int]]) -> list[dict[str, Any]]:
        keyed = [(config_key(c), c, seed) for c, seed in pairs]
        for k, c, seed in keyed:
            self.replays.submit(k, c, seed, 1.0)
        return [self.replays.get(k, seed, 1.0) for k, _, seed in keyed]

    def close(self) -> None:
        self.replays.close()


#: Selection seeds every candidate runs before racing may stop it.
RACE_MIN_SEEDS = 3


def _race_drops(
    objective: Objective, alive: Sequence[int], runs: dict[int, list[dict[str, Any]]]
) -> list[int]:
    """Candidates (indices) to stop after this round (:func:`holdout`'s racing rule)."""
    stats = {}
    for i in alive:
        m, h = mean_ci([objective.value(x) for x in runs[i]])
        stats[i] = (m, h, objective.constraints.feasible(mean_metrics(runs[i])))
    pool = [i for i in alive if stats[i][2]] or list(alive)
    leader = max(pool, key=lambda i: (stats[i][0], -i))
    lm, lh, lfeas = stats[leader]
    return [
        i
        for i in alive
        if i != leader and stats[i][0] + stats[i][1] < lm - lh and (lfeas or not stats[i][2])
    ]


def select_candidates(
    study: Any, space: SearchSpace, objective: Objective, k: int
) -> list[Candidate]:
    """The top ``k`` distinct complete trials, feasible ones only when there are any.

    Scalar objectives rank by value; ``multi`` takes the Pareto front of those
    trials and ranks its points by net value.
    """
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
    pool = feasible or complete
    if objective.multi:
        # The Pareto front of the pool (feasible trials when any, else all complete ones).
        from optimize.plots import pareto_mask

        signs = [(-1.0 if d == "maximize" else 1.0) for d in objective.directions]
        pts = np.array([[sg * v for sg, v in zip(signs, t.values, strict=True)] for t in pool])
        front = [t for t, keep in zip(pool, pareto_mask(pts), strict=True) if keep] if pool else []
        ranked = sorted(front, key=lambda t: -objective.value(t.user_attrs["metrics"]))
    else:
        ranked = sorted(pool, key=lambda t: -(t.value if t.value is not None else -math.inf))
    seen: set[str] = set()
    out: list[Candidate] = []
    for t in ranked:
        cfg = space.build(t.params)
        key = config_key(cfg)
        if key in seen:
            continue
        seen.add(key)
        train = objective.value(t.user_attrs["metrics"])
        out.append(Candidate(t.number, cfg, train))
        if len(out) == k:
            break
    return out


def holdout(
    study: Any,
    space: SearchSpace,
    base: RouterConfig,
    objective: Objective,
    evaluator: Evaluator,
    *,
    seed: int,
    replications: int,
    top_k: int,
    jobs: int = 1,
    race: bool = True,
) -> dict[str, Any]:
    """Choose the winner on the selection seeds; report it on fresh reporting seeds.

    The top trials and the base config are re-run on ``replications`` selection
    seeds; the best there (feasible first) wins. The winner and the base config
    are then run on ``replications`` reporting seeds, and every reported number
    (value, CI, paired improvement, metrics, ``feasible``, ``significant``) comes
    from those. ``selection`` keeps what the choice was made on.

    Racing (``race``): the candidates run the selection seeds in rounds, first
    :data:`RACE_MIN_SEEDS` seeds, then one seed a round. After each round the
    *leader* is the candidate with the best mean so far among those whose mean
    metrics hold the constraints so far (among all when none does); a candidate
    stops when the upper end of its 95% CI (Student t, over the seeds it ran) lies
    below the lower end of the leader's, unless it holds the constraints so far
    and the leader does not. Two non-overlapping 95% intervals after at least three
    common-random-number seeds: a stopped candidate would have needed a reversal
    far beyond its noise to win. The winner is chosen among the candidates that ran
    every selection seed; a stopped one is listed with the seeds it ran
    (``seeds``) and ``stopped: true``. The base config runs every seed (it is the
    reference for ``selection.base_value``). No pair (config, seed) is simulated
    twice (the base config among the candidates, the base config on the reporting
    seeds), and the runs are spread over ``jobs`` forked workers; the rounds and the
    decisions depend only on the summaries, so the result is the same for any
    ``jobs``.
    """
    cands = select_candidates(study, space, objective, top_k)
    if not cands:
        raise InputError(f"study {study.study_name!r}: no completed trial to choose from")
    sel_seeds = seed_stream("selection", seed, replications)
    runner = _Runs(evaluator, jobs)
    try:
        first = min(RACE_MIN_SEEDS, replications) if race else replications
        rounds = [sel_seeds[:first]] + [[x] for x in sel_seeds[first:]]
        alive = list(range(len(cands)))
        runs: dict[int, list[dict[str, Any]]] = {i: [] for i in alive}
        base_sel: list[dict[str, Any]] = []
        stopped: set[int] = set()
        for seeds in rounds:
            pairs = [(base, x) for x in seeds]
            pairs += [(cands[i].config, x) for i in alive for x in seeds]
            got = runner(pairs)
            n = len(seeds)
            base_sel.extend(got[:n])
            for j, i in enumerate(alive):
                runs[i].extend(got[n + j * n : n + (j + 1) * n])
            done = len(runs[alive[0]])
            if race and RACE_MIN_SEEDS <= done < replications and len(alive) > 1:
                drop = set(_race_drops(objective, alive, runs))
                stopped |= drop
                alive = [i for i in alive if i not in drop]
        sel_base_vals = [objective.value(x) for x in base_sel]
        rows = []
        for i, c in enumerate(cands):
            vals = [objective.value(x) for x in runs[i]]
            rows.append(
                {
                    "trial": c.trial,
                    "train_value": c.train_value,
                    "mean": float(np.mean(vals)),
                    "feasible": objective.constraints.feasible(mean_metrics(runs[i])),
                    "seeds": len(vals),
                    "stopped": i in stopped,
                }
            )
        pool = [r for r in rows if not r["stopped"]]
        pool = [r for r in pool if r["feasible"]] or pool
        win = max(pool, key=lambda r: r["mean"])
        winner = cands[rows.index(win)]

        rep_seeds = seed_stream("reporting", seed, replications)
        got = runner([(base, x) for x in rep_seeds] + [(winner.config, x) for x in rep_seeds])
        base_runs, win_runs = got[:replications], got[replications:]
        simulated = runner.simulated
    finally:
        runner.close()
    base_vals = [objective.value(x) for x in base_runs]
    vals = [objective.value(x) for x in win_runs]
    metrics = mean_metrics(win_runs)
    m, h = mean_ci(vals)
    diff = paired_difference(base_vals, vals)
    paired = {
        k: paired_difference([b[k] for b in base_runs], [w[k] for w in win_runs])
        for k, _ in PAIRED_METRICS
    }
    constraints = objective.constraints.values(metrics)
    return {
        "best_trial": win["trial"],
        "holdout_value": m,
        "holdout_ci_low": m - h,
        "holdout_ci_high": m + h,
        "base_value": float(np.mean(base_vals)),
        "improvement_vs_base": diff["diff"],
        "improvement_ci_low": diff["diff_ci_low"],
        "improvement_ci_high": diff["diff_ci_high"],
        # On the reporting seeds: constraints held, and the improvement's CI above 0.
        "feasible": all(v <= 0 for v in constraints.values()),
        "significant": diff["diff_ci_low"] > 0,
        "constraints": constraints,
        "selection_seeds": sel_seeds,
        "reporting_seeds": rep_seeds,
        "metrics": metrics,
        "base_metrics": mean_metrics(base_runs),
        "base_values": base_vals,
        "values": vals,
        # Per metric: base mean (a), winner mean (b), paired b - a and its 95% CI.
        "paired": paired,
        "selection": {
            "value": win["mean"],
            "base_value": float(np.mean(sel_base_vals)),
            "feasible": win["feasible"],
            "candidates": rows,
            "raced": race,
        },
        # Replays the holdout simulated (each (config, seed) pair once).
        "runs": simulated,
    }


def export_warnings(ho: dict[str, Any]) -> list[str]:
    """Why a holdout winner should not go live (empty: it may).

    Infeasible: some constraint is not met on the reporting seeds. Not
    significant: its paired improvement over the base config has a 95% CI that
    reaches 0 (or lies below it). A result stored before reporting seeds existed
    was measured on the seeds it was selected on, which is said too.
    """
    out: list[str] = []
    n = len(ho.get("reporting_seeds") or ho.get("holdout_seeds") or [])
    where = f"on {n} reporting seeds" if "reporting_seeds" in ho else f"on {n} held-out seeds"
    if not ho.get("feasible", False):
        broken = [f"{k} by {v:+.4g}" for k, v in (ho.get("constraints") or {}).items() if v > 0]
        detail = f" ({', '.join(broken)})" if broken else ""
        out.append(f"infeasible: constraints not met {where}{detail}")
    lo, hi = ho.get("improvement_ci_low", 0.0), ho.get("improvement_ci_high", 0.0)
    ci = f"{ho.get('improvement_vs_base', 0.0):+.4g} [{lo:+.4g}, {hi:+.4g}]"
    if hi < 0:
        out.append(f"worse than the base config {where}: improvement {ci}")
    elif not lo > 0:
        out.append(f"not significant: improvement over the base config {ci} includes 0 {where}")
    if "reporting_seeds" not in ho:
        out.append(
            "selected and reported on the same seeds (a study from before reporting seeds; "
            "run `optimize run` again to report it on fresh ones)"
        )
    return out


# ----------------------------------------------------------------- the runner
@dataclass
class StudyReport:
    """What :func:`run_study` returns: the JSON summary, the study and its space."""

    summary: dict[str, Any]
    study: Any
    space: SearchSpace
    holdout: dict[str, Any]


def run_study(
    traces: Traces,
    scenario: Scenario,
    settings: StudySettings,
    *,
    holdout_traces: Traces | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> StudyReport:
    """Run (or resume) a study to ``settings.trials`` simulated trials, then the holdout.

    ``progress`` is called with a :class:`Progress` as trials finish. The summary's
    ``seconds`` is this call's wall time; ``seconds_study`` and ``seconds_holdout``
    its two phases.
    """
    import optuna

    started = time.perf_counter()
    settings.check()
    evaluator = Evaluator(traces, scenario)
    space = SearchSpace(
        settings.base,
        scenario,
        settings.spec,
        value_per_success=settings.objective.value_per_success,
        latency_cost_per_s=settings.objective.latency_cost_per_s,
    )
    if not space.params:
        raise InputError("space: every parameter is frozen; nothing to search")
    study = create_or_load(settings, space, evaluator)
    # Resuming: use the space the study was made with (its candidates were ranked then).
    space, _, _ = space_of(study)
    _fail_stale_trials(study)
    remaining = max(0, settings.trials - len(_simulated(study)))
    study_started = time.perf_counter()
    if remaining and settings.fidelity and settings.fidelity_pruner == "halving":
        from optimize.halving import run_halving

        seed = _derived_seed(settings.seed, 0, len(study.trials))
        sampler = make_sampler(settings.sampler, seed, batched=True)
        study = optuna.load_study(
            study_name=settings.study, storage=open_storage(settings.storage), sampler=sampler
        )
        run_halving(settings, space, evaluator, study, remaining, progress)
    elif remaining:
        if settings.jobs == 1 or "fork" not in mp.get_all_start_methods():
            slots = mp.Value("i", remaining)
            ctx = _Context(
                settings, space, evaluator, settings.storage, repeats=mp.Value("i", settings.trials)
            )

            def on_trial(st: Any, _t: Any) -> None:
                if progress is not None:
                    progress(_progress(st, settings))

            _worker(ctx, 0, slots, on_trial)
        else:
            ctx = _Context(
                settings,
                space,
                evaluator,
                settings.storage,
                repeats=mp.get_context("fork").Value("i", settings.trials),
            )
            _run_parallel(ctx, remaining, progress)
    study = optuna.load_study(study_name=settings.study, storage=open_storage(settings.storage))
    holdout_started = time.perf_counter()
    ho_eval = Evaluator(holdout_traces, scenario) if holdout_traces else evaluator
    result = holdout(
        study,
        space,
        settings.base,
        settings.objective,
        ho_eval,
        seed=settings.seed,
        replications=settings.holdout_replications,
        top_k=settings.top_k,
        jobs=settings.jobs,
        race=settings.race,
    )
    result["holdout_traces"] = ho_eval.fingerprint()
    study.set_user_attr("holdout", result)
    done = time.perf_counter()
    counts = count_trials(study.get_trials(deepcopy=False))
    summary = {
        "study": settings.study,
        "storage": redact(settings.storage),
        "best_trial": result["best_trial"],
        "objective": settings.objective.name,
        "holdout_value": result["holdout_value"],
        "holdout_ci_low": result["holdout_ci_low"],
        "holdout_ci_high": result["holdout_ci_high"],
        "improvement_vs_base": result["improvement_vs_base"],
        "improvement_ci_low": result["improvement_ci_low"],
        "improvement_ci_high": result["improvement_ci_high"],
        "base_value": result["base_value"],
        "feasible": result["feasible"],
        "significant": result["significant"],
        "constraints": result["constraints"],
        "warnings": export_warnings(result),
        "selection_value": result["selection"]["value"],
        "selection_seeds": len(result["selection_seeds"]),
        "reporting_seeds": len(result["reporting_seeds"]),
        "trials": counts["trials"],
        "complete": counts["complete"],
        "pruned": counts["pruned"],
        "failed": counts["failed"],
        "duplicates": counts["duplicates"],
        "fidelity": _fidelity_counts(study, settings),
        "holdout_runs": result["runs"],
        "stopped_candidates": sum(r["stopped"] for r in result["selection"]["candidates"]),
        "seconds": round(done - started, 3),
        "seconds_study": round(holdout_started - study_started, 3),
        "seconds_holdout": round(done - holdout_started, 3),
        "metrics": result["metrics"],
        "base_metrics": result["base_metrics"],
        "paired": result["paired"],
    }
    return StudyReport(summary, study, space, result)


def _fidelity_counts(study: Any, settings: StudySettings) -> dict[str, Any] | None:
    """A schedule's rungs and how many simulated trials were replayed at each
    (``trials_per_rung[-1]``: on the full trace); None without a schedule."""
    if not settings.fidelity:
        return None
    rungs = [*settings.fidelity, 1.0]
    reached = [float(t.user_attrs.get("fidelity", 0.0)) for t in _simulated(study)]
    return {
        "schedule": rungs,
        "pruner": settings.fidelity_pruner,
        "reduction_factor": settings.reduction_factor,
        "trials_per_rung": [sum(r >= f for r in reached) for f in rungs],
    }


def _run_parallel(
    ctx: _Context, remaining: int, progress: Callable[[Progress], None] | None
) -> None:
    """Fork ``jobs`` workers on the shared storage; poll it for progress until they end."""
    import optuna

    fork = mp.get_context("fork")
    slots = fork.Value("i", remaining)
    procs = [
        fork.Process(target=_worker, args=(ctx, w, slots), name=f"optimize-worker-{w}")
        for w in range(ctx.settings.jobs)
    ]
    for p in procs:
        p.start()
    watcher = optuna.load_study(study_name=ctx.settings.study, storage=open_storage(ctx.storage))
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.5)
            if progress is not None:
                progress(_progress(watcher, ctx.settings))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    bad = [p for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"worker {bad[0].name} exited with code {bad[0].exitcode}")
