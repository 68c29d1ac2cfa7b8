"""Synchronous successive halving: batches of trials climb the fidelity schedule together.

Optuna's pruners (:class:`~optuna.pruners.SuccessiveHalvingPruner`, Hyperband) are
asynchronous: a trial goes on to the next rung when it beats the top ``1/η`` of the
trials that reached the rung *before it*. Under TPE most later trials do (the sampler
keeps proposing points near the best so far), so almost every trial climbs to the
full trace after paying for the samples too: measured on a 200,000-task slice, 40
trials took 1.6x as long as full fidelity, and on 39,442 tasks the asynchronous
rules promoted 21-28 of 40 trials to the full trace (``README.md``, Performance).

Here the rule is the textbook one, with Optuna's ask-and-tell interface:

1. Ask a *batch* of ``B = η ** len(schedule)`` trials (fewer when fewer remain of
   the budget; the enqueued base config and its neighbours come first).
2. Replay every trial of the batch on rung 0's sample under the training seeds
   (common random numbers), report each mean objective at step ``η ** 0``.
3. Keep the best ``ceil(n / η)`` (feasible on the sample first, then by value, then
   by trial number; a trial whose config equals a better-placed one's in the same
   rung is not kept twice), tell the others PRUNED; replay the kept ones on rung 1's
   sample, and so on; those kept after the last sample are replayed on the full
   trace and told COMPLETE with its value, metrics and constraints only.

Cost: each rung costs about ``B / η ** j × fraction_j`` full replays, so a trial
costs :func:`optimize.fidelity.expected_cost` full replays, e.g. 0.134 for
(0.03, 0.1, 0.3) with η = 3: 7.5x fewer than full fidelity, whatever the sampler
proposes.

Both cores: every rung's (trial, seed) replays go to a pool of ``jobs`` forked
workers. A batch's last rung holds a few full-trace replays, which would leave
workers idle, so the next batch is asked as soon as the current one reaches its
last rung (its sample rungs are told by then, so the sampler learns from them) and
its rung-0 replays fill the idle workers. A batch is asked only when the one before
the current batch has finished, so every ask sees the same finished trials whatever
the timing: the study (trial numbers, params, values, states) is the same for any
``jobs``. A trial whose config repeats an earlier COMPLETE trial's is answered from
it as in :func:`optimize.study._evaluate_trial` (``duplicate_of``) and gives its
slot back while the run's allowance of repeats lasts.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from router import RouterConfig

if TYPE_CHECKING:
    from optimize.space import SearchSpace
    from optimize.study import Evaluator, Progress, StudySettings


@dataclass
class _Batch:
    """Trials climbing the schedule together; ``alive`` are at rung ``rung``."""

    alive: list[Any]
    configs: dict[int, RouterConfig]
    keys: dict[int, str]
    rung: int = 0
    reached: dict[int, list[float]] = field(default_factory=dict)


def batch_size(schedule: tuple[float, ...], reduction_factor: int) -> int:
    """Trials asked per batch: ``η ** len(schedule)``, so one is left at the full trace."""
    return reduction_factor ** len(schedule)


def kept(n: int, reduction_factor: int) -> int:
    """How many of ``n`` trials at a rung go on to the next: ``ceil(n / η)``."""
    return max(1, math.ceil(n / reduction_factor))


class _Halving:
    """The coordinator of :func:`run_halving` (one process; it alone writes the study)."""

    def __init__(
        self,
        settings: StudySettings,
        space: SearchSpace,
        evaluator: Evaluator,
        study: Any,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        from optimize.study import seed_stream

        self.s = settings
        self.space = space
        self.evaluator = evaluator
        self.study = study
        self.progress = progress
        self.rungs = [*settings.fidelity, 1.0]
        self.seeds = seed_stream("training", settings.seed, settings.replications)
        from optimize.study import _Replays

        self.replays = _Replays(evaluator, settings.jobs)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        # Repeats a run may give back to the budget (as the worker loop's allowance).
        self.repeats_left = settings.trials
        #: Batches asked so far by this run (each trial's ``halving_batch`` user attr).
        prior = [
            int(t.user_attrs["halving_batch"])
            for t in study.trials
            if "halving_batch" in t.user_attrs
        ]
        self.batches = max(prior) + 1 if prior else 0

    # ------------------------------------------------------------ asking
    def ask(self, slots: int) -> tuple[_Batch | None, int]:
        """A new batch of up to ``batch_size`` simulated trials; the slots it used."""
        import optuna

        from optimize.study import _Context, _earlier_twin, config_key, copy_twin

        ctx = _Context(self.s, self.space, self.evaluator, self.s.storage)
        want = min(slots, batch_size(self.s.fidelity, self.s.reduction_factor))
        batch = _Batch([], {}, {})
        used = 0
        while len(batch.alive) < want and used < slots:
            trial = self.study.ask()
            trial.set_user_attr("worker", self.worker)
            trial.set_user_attr("halving_batch", self.batches)
            config = self.space.suggest(trial)
            key = config_key(config)
            trial.set_user_attr("config_key", key)
            twin = _earlier_twin(ctx, self.study, key, trial.number)
            if twin is not None:
                # Same config, same seeds: the replays would give the same numbers.
                copy_twin(trial, twin)
                self.study.tell(trial, float(twin.value), state=optuna.trial.TrialState.COMPLETE)
                if self.repeats_left > 0:
                    self.repeats_left -= 1
                else:
                    used += 1  # the space looks exhausted: repeats count, so the run ends
                continue
            used += 1
            batch.alive.append(trial)
            batch.configs[trial.number] = config
            batch.keys[trial.number] = key
        if not batch.alive:
            return None, used
        self.batches += 1
        self._submit(batch)
        return batch, used

    def _submit(self, batch: _Batch) -> None:
        frac = self.rungs[batch.rung]
        for t in batch.alive:
            for seed in self.seeds:
                self.replays.submit(batch.keys[t.number], batch.configs[t.number], seed, frac)

    def _ready(self, batch: _Batch) -> bool:
        frac = self.rungs[batch.rung]
        return all(
            self.replays.ready(batch.keys[t.number], seed, frac)
            for t in batch.alive
            for seed in self.seeds
        )

    # ------------------------------------------------------------ climbing
    def advance(self, batch: _Batch) -> bool:
        """Tell the finished rung of ``batch``; True once the batch has finished."""
        import optuna

        from optimize.study import mean_metrics

        s, obj = self.s, self.s.objective
        frac = self.rungs[batch.rung]
        last = batch.rung == len(self.rungs) - 1
        scored = []
        for t in batch.alive:
            key = batch.keys[t.number]
            runs = [self.replays.get(key, seed, frac) for seed in self.seeds]
            values = [obj.value(x) for x in runs]
            metrics = mean_metrics(runs)
            if last:
                t.set_user_attr("fidelity", 1.0)
                t.set_user_attr("metrics", metrics)
                t.set_user_attr("seed_values", values)
                for name, v in obj.constraints.values(metrics).items():
                    t.set_constraint(name, v)
                # As a full-fidelity trial: the objective of the seeds' mean metrics.
                self.study.tell(t, obj.value(metrics))
                continue
            value = float(np.mean(values))
            batch.reached.setdefault(t.number, []).append(value)
            t.set_user_attr("fidelity_values", batch.reached[t.number])
            t.report(value, step=s.reduction_factor**batch.rung)
            scored.append((t, value, metrics))
        if last:
            return True
        _, share = self.evaluator.sample(frac)
        cons = obj.constraints
        if cons.budget_usd is not None:
            cons = replace(cons, budget_usd=cons.budget_usd * share)
        # Feasible on the sample first, then the value, then the earlier trial.
        order = sorted(scored, key=lambda x: (not cons.feasible(x[2]), -x[1], x[0].number))
        n_keep = kept(len(scored), s.reduction_factor)
        promoted: list[Any] = []
        seen: set[str] = set()
        for t, _, _ in order:
            key = batch.keys[t.number]
            if len(promoted) < n_keep and key not in seen:
                promoted.append(t)
                seen.add(key)
        for t, _, metrics in scored:
            if t in promoted:
                continue
            t.set_user_attr("fidelity", frac)
            # A sample's metrics: only ever shown for this pruned trial, never ranked.
            t.set_user_attr("metrics", metrics)
            self.study.tell(t, state=optuna.trial.TrialState.PRUNED)
        batch.alive = sorted(promoted, key=lambda t: t.number)
        batch.rung += 1
        self._submit(batch)
        return False

    def _report(self) -> None:
        if self.progress is not None:
            from optimize.study import _progress

            self.progress(_progress(self.study, self.s))

    def run(self, slots: int) -> None:
        """Ask and climb batches until ``slots`` simulated trials have finished."""
        last = len(self.rungs) - 1
        active: list[_Batch] = []
        try:
            while True:
                # Ask the next batch once the current one is at its last rung and the
                # one before it has finished: every ask then sees the same trials.
                if slots > 0 and (not active or (len(active) == 1 and active[0].rung == last)):
                    batch, used = self.ask(slots)
                    slots -= used
                    if batch is not None:
                        active.append(batch)
                        continue
                if not active:
                    return
                moved = False
                for batch in list(active):
                    if self._ready(batch):
                        moved = True
                        if self.advance(batch):
                            active.remove(batch)
                        self._report()
                        break
                if not moved:
                    self._wait(active)
        except BaseException:
            self.replays.close(terminate=True)
            raise
        self.replays.close()

    def _wait(self, active: list[_Batch]) -> None:
        """Block until a pending replay of an active batch finishes (or 50 ms pass)."""
        for batch in active:
            frac = self.rungs[batch.rung]
            for t in batch.alive:
                for seed in self.seeds:
                    key = batch.keys[t.number]
                    if not self.replays.ready(key, seed, frac):
                        self.replays.wait(key, seed, frac, 0.05)
                        return


def run_halving(
    settings: StudySettings,
    space: SearchSpace,
    evaluator: Evaluator,
    study: Any,
    remaining: int,
    progress: Callable[[Progress], None] | None = None,
) -> int:
    """Run ``remaining`` simulated trials of ``study`` by synchronous successive halving.

    Returns the number of replays simulated (each (config, seed, fraction) once).
    """
    import gc

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gc.freeze()  # the traces: keep them out of the simulator's full collections
    h = _Halving(settings, space, evaluator, study, progress)
    h.run(remaining)
    return h.replays.simulated


__all__ = ["batch_size", "kept", "run_halving"]
