"""What a study maximises: cost-adjusted throughput, and the constraints it must hold.

**Cost-adjusted throughput** is measured per task, so that it compares across
traces of any size. The default objective, ``net_value``, is the dollars a
routed task is worth on average::

    net_value = value_per_success × completion_rate
                − cost_per_task
                − latency_cost_per_s × answer_wait_s

    answer_wait_s = latency_mean_s + (1 − completion_rate) × time_to_failure_mean_s

``value_per_success`` (default $0.05) is what one completed task is worth to the
user (an agent step that does not need redoing by hand); ``latency_cost_per_s``
(default $0.002) prices a second of waiting. With these defaults a model that
completes 10 points more tasks is worth $0.005 per task more, five seconds of
extra latency cost $0.01 per task.

**How failures are treated.** The summary's latencies (``latency_mean_s``,
``latency_p95_s``) are over *successful* tasks only: a task that fails fast is not
a fast task. A failed task earns nothing, keeps its spend in ``cost_per_task``,
and is charged, at ``latency_cost_per_s``, its time to failure *on top of* the
wait every task is charged — the mean latency of a successful task, since the
user of a failed task still needs the answer. That is :func:`answer_wait_s`: the
wait for an answer when a failed task is redone and then succeeds in the usual
time. So failing saves no waiting: making tasks fail instantly, whatever their
number, leaves ``answer_wait_s`` unchanged or larger and lowers completion, so
``net_value`` never rises while a success is worth more than its spend
(``value_per_success`` above its ``cost``); a failure that took time only makes it
worse.

The other objectives:

``seed_score``
    the article's score, completion / cost × 1 / latency, with cost and latency
    counted *per answer*: completion_rate / cost_per_success / answer_wait_s
    (``cost_per_success`` includes failed tasks' spend; a cost of 0 becomes
    ``zero_cost_floor_usd``, a wait below 1 ms counts as 1 ms). Counted per task,
    instant free failures would lower cost and wait as fast as completion and
    the score could not see them; per answer, they only lower completion;
``successes_per_dollar``
    completed tasks per dollar spent, failed tasks' spend included (the same
    zero-cost floor). A failure that spent nothing leaves it unchanged, neither
    better nor worse: pair it with ``min_completion_rate`` (the ``prototype``
    preset does);
``multi``
    three objectives at once, a Pareto front: completion_rate ↑,
    cost_per_success ↓, latency_p95_s ↓ (successful tasks). Failing tasks lowers
    the first and cannot improve the other two, so it never moves a config up
    the front; trials are ranked by ``net_value`` where one number is needed.

Constraints are evaluated on the same summary and handed to Optuna with
``trial.set_constraint`` (a value ≤ 0 is feasible): minimum completion rate,
maximum p95 latency (of successful tasks: failed tasks are not timed in it, they
count against ``min_completion_rate``), maximum cost per task, and a budget for
the whole replayed traffic (USD per replication).

What is promised, and what is not: turning successes into instant failures
while the successful tasks' latencies stay what they were (the failures are not
chosen by how slow or costly their task was) never improves an objective or a
constraint value (tests/optimize/test_failing_fast.py). A config that picks its
failures — gives up on exactly the slowest or priciest tasks — lowers the
success-only latency; every objective then still charges the lost completions
(and ``net_value`` the time those tasks took to fail), so it wins only when the
price list says the saved wait or spend is worth more than the tasks lost.
``min_completion_rate`` is the hard guard.

Presets follow the article's decision matrix (:data:`PRESETS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any


def _input_error(message: str) -> Exception:
    """A :class:`router.errors.InputError`, imported on first use: the presets are read
    by ``optimize --help``, which should not pay for importing the router package."""
    from router.errors import InputError as _InputError

    return _InputError(message)


OBJECTIVES: tuple[str, ...] = ("net_value", "seed_score", "successes_per_dollar", "multi")

#: The multi-objective's metrics and their directions.
MULTI_METRICS: tuple[tuple[str, str], ...] = (
    ("completion_rate", "maximize"),
    ("cost_per_success", "minimize"),
    ("latency_p95_s", "minimize"),
)


@dataclass(frozen=True)
class Constraints:
    """Hard limits a trial must hold to count (None: no limit)."""

    min_completion_rate: float | None = None
    max_latency_p95_s: float | None = None
    max_cost_per_task: float | None = None
    budget_usd: float | None = None

    def values(self, summary: Mapping[str, Any]) -> dict[str, float]:
        """Constraint values for Optuna: ≤ 0 when held, the size of the violation when not."""
        out: dict[str, float] = {}
        if self.min_completion_rate is not None:
            out["min_completion_rate"] = self.min_completion_rate - summary["completion_rate"]
        if self.max_latency_p95_s is not None:
            out["max_latency_p95_s"] = summary["latency_p95_s"] - self.max_latency_p95_s
        if self.max_cost_per_task is not None:
            out["max_cost_per_task"] = summary["cost_per_task"] - self.max_cost_per_task
        if self.budget_usd is not None:
            out["budget_usd"] = summary["cost_usd"] - self.budget_usd
        return out

    def feasible(self, summary: Mapping[str, Any]) -> bool:
        return all(v <= 0 for v in self.values(summary).values())


@dataclass(frozen=True)
class Objective:
    """An objective and its settings (see the module docstring for the definitions)."""

    name: str = "net_value"
    value_per_success: float = 0.05
    latency_cost_per_s: float = 0.002
    zero_cost_floor_usd: float = 1e-6
    constraints: Constraints = field(default_factory=Constraints)

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise _input_error(
                f"objective: unknown objective {self.name!r} "
                f"(expected one of {', '.join(OBJECTIVES)})"
            )
        settings = {
            f"objective.{k}": getattr(self, k)
            for k in ("value_per_success", "latency_cost_per_s", "zero_cost_floor_usd")
        }
        settings.update(
            {f"constraints.{k}": v for k, v in asdict(self.constraints).items() if v is not None}
        )
        for where, v in settings.items():
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
            ):
                raise _input_error(f"{where}: expected a number >= 0, got {v!r}")
        if self.name == "seed_score" or self.name == "successes_per_dollar":
            if self.zero_cost_floor_usd <= 0:
                raise _input_error("objective.zero_cost_floor_usd: expected a number > 0")

    @property
    def multi(self) -> bool:
        return self.name == "multi"

    @property
    def directions(self) -> list[str]:
        """Optuna study directions."""
        return [d for _, d in MULTI_METRICS] if self.multi else ["maximize"]

    def value(self, summary: Mapping[str, Any]) -> float:
        """The scalar objective of one summary (``multi``: its net value, for ranking)."""
        name = "net_value" if self.multi else self.name
        completion = float(summary["completion_rate"])
        floor = self.zero_cost_floor_usd
        if name == "net_value":
            return net_value(summary, self.value_per_success, self.latency_cost_per_s)
        if completion <= 0:
            return 0.0
        if name == "seed_score":
            per_success = float(summary["cost_per_success"])
            return completion / max(per_success, floor) / max(answer_wait_s(summary), 1e-3)
        return completion / max(float(summary["cost_per_task"]), floor)

    def values(self, summary: Mapping[str, Any]) -> list[float]:
        """What the Optuna objective returns: one value, or the three of ``multi``."""
        if self.multi:
            return [float(summary[k]) for k, _ in MULTI_METRICS]
        return [self.value(summary)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        d = dict(data)
        d["constraints"] = Constraints(**(d.get("constraints") or {}))
        return cls(**d)


def answer_wait_s(summary: Mapping[str, Any]) -> float:
    """Seconds a task waits for its answer: the mean latency of a successful task,
    plus, for the share of tasks that failed, the time they took to fail (a failed
    task still needs its answer: it is redone and then waits the usual time).

    Failing fast cannot shorten it: an instant failure adds nothing to the failure
    term and leaves the successful tasks' latency as it was. Summaries without
    ``time_to_failure_mean_s`` (written before it existed) count failures as instant.
    """
    failed = 1.0 - float(summary["completion_rate"])
    return float(summary["latency_mean_s"]) + failed * float(
        summary.get("time_to_failure_mean_s", 0.0)
    )


def net_value(
    summary: Mapping[str, Any], value_per_success: float, latency_cost_per_s: float
) -> float:
    """Dollars per task: value of completions minus spend minus the price of waiting
    (:func:`answer_wait_s`; see the module docstring for how failures are charged)."""
    return (
        value_per_success * float(summary["completion_rate"])
        - float(summary["cost_per_task"])
        - latency_cost_per_s * answer_wait_s(summary)
    )


@dataclass(frozen=True)
class Preset:
    """A decision-matrix row: objective settings plus constraints, and why."""

    objective: Objective
    description: str


#: The article's decision matrix as study presets.
PRESETS: dict[str, Preset] = {
    "batch": Preset(
        Objective(
            "net_value",
            value_per_success=0.01,
            latency_cost_per_s=0.0,
            constraints=Constraints(max_cost_per_task=0.001),
        ),
        "High-throughput batch: latency is free, every task is cheap "
        "(< $0.001/task), so maximise completions minus spend.",
    ),
    "prototype": Preset(
        Objective(
            "successes_per_dollar",
            constraints=Constraints(max_cost_per_task=0.0001, min_completion_rate=0.6),
        ),
        "Cost-sensitive prototype: as many completions per dollar as possible, "
        "near-free (≤ $0.0001/task), at least 60% completed (the free tier's level).",
    ),
    "critical": Preset(
        Objective(
            "net_value",
            value_per_success=1.0,
            latency_cost_per_s=0.001,
            constraints=Constraints(min_completion_rate=0.95, max_cost_per_task=0.06),
        ),
        "Mission-critical bug patching: a failed task costs an engineer's time "
        "($1 per completion), at least 95% completed, up to $0.06/task.",
    ),
    "interactive": Preset(
        Objective(
            "net_value",
            value_per_success=0.05,
            latency_cost_per_s=0.02,
            constraints=Constraints(max_latency_p95_s=5.0, max_cost_per_task=0.005),
        ),
        "Low-latency interactive agent: a second of waiting is priced at $0.02, "
        "p95 within 5 s, under $0.005/task.",
    ),
    "compliance": Preset(
        Objective(
            "net_value",
            value_per_success=0.1,
            latency_cost_per_s=0.002,
            constraints=Constraints(min_completion_rate=0.9, max_cost_per_task=0.02),
        ),
        "Enterprise compliance: stable models only (production filters previews), "
        "at least 90% completed and no more than base-model prices ($0.02/task).",
    ),
}


def make_objective(
    name: str | None = None,
    *,
    preset: str | None = None,
    settings: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Objective:
    """An objective from a preset and/or a name, then study-file settings, then overrides.

    ``settings`` is the study file's top level (``objective``, ``value_per_success``,
    ``latency_cost_per_s``, ``zero_cost_floor_usd``, ``constraints``); ``overrides``
    are CLI flags (``None`` values are ignored). Unknown keys raise one-line errors.
    """
    if preset is not None and preset not in PRESETS:
        raise _input_error(
            f"preset: unknown preset {preset!r} (expected one of {', '.join(PRESETS)})"
        )
    obj = PRESETS[preset].objective if preset else Objective()
    settings = dict(settings or {})
    known = {
        "objective",
        "value_per_success",
        "latency_cost_per_s",
        "zero_cost_floor_usd",
        "constraints",
    }
    for key in settings:
        if key not in known:
            raise _input_error(
                f"study file: unknown key {key!r} "
                f"(expected one of {', '.join(sorted(known))}, space)"
            )
    cons = asdict(obj.constraints)
    raw_cons = settings.pop("constraints", None) or {}
    if not isinstance(raw_cons, Mapping):
        raise _input_error("study file: constraints: expected a mapping")
    for key, v in raw_cons.items():
        if key not in cons:
            raise _input_error(
                f"study file: constraints.{key}: unknown constraint "
                f"(expected one of {', '.join(cons)})"
            )
        cons[key] = v
    if "objective" in settings:
        obj = replace(obj, name=settings.pop("objective"))
    fields = {k: v for k, v in settings.items()}
    for key, v in overrides.items():
        if v is None:
            continue
        if key in cons:
            cons[key] = v
        elif key == "name":
            fields["name"] = v
        else:
            fields[key] = v
    if name is not None:
        fields["name"] = name
    return replace(obj, constraints=Constraints(**cons), **fields)
