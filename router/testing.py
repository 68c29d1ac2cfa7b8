"""Testing aids users can import: a fake clock, a scripted provider, a tiny config.

Drive the policy in your own tests and notebooks without I/O::

    from router.testing import FakeClock, ScriptedProvider, drive, tiny_config
    policy = RoutingPolicy(tiny_config(), seed=0)
    provider = ScriptedProvider({"a": ["server_error", "ok"], "b": ["ok"]})
    result = drive(policy, Task("t1", "json"), provider, FakeClock())
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from router.config import RouterConfig, config_from_dict
from router.outcome import ErrorKind, Outcome
from router.policy import RoutingPolicy
from router.result import Call, Finish, TaskResult
from router.task import Task


class FakeClock:
    """A clock that only moves when told to. ``now`` is in seconds."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"cannot move a clock back ({seconds} s)")
        self.now += seconds
        return self.now

    def __call__(self) -> float:
        return self.now


class ScriptedProvider:
    """Answers each model's calls from a script of outcomes, in order.

    A script entry is an :class:`~router.outcome.Outcome`, an ErrorKind, or the
    kind's string value (latency then defaults to ``default_latency_s``). When a
    model's script runs out, ``exhausted`` (default: ``ok``) is answered.
    ``calls`` records every ``(model, timeout_s)`` asked for.
    """

    def __init__(
        self,
        scripts: Mapping[str, Iterable[Outcome | ErrorKind | str]],
        *,
        default_latency_s: float = 0.5,
        exhausted: Outcome | ErrorKind | str = ErrorKind.OK,
    ) -> None:
        self.default_latency_s = default_latency_s
        self._scripts = {m: deque(self._coerce(o) for o in s) for m, s in scripts.items()}
        self._exhausted = self._coerce(exhausted)
        self.calls: list[tuple[str, float]] = []

    def _coerce(self, o: Outcome | ErrorKind | str) -> Outcome:
        if isinstance(o, Outcome):
            return o
        return Outcome(ErrorKind(o), self.default_latency_s)

    def answer(self, call: Call) -> Outcome:
        """The next scripted outcome of ``call.model``; a timeout if it outlasts the call's."""
        self.calls.append((call.model, call.timeout_s))
        script = self._scripts.get(call.model)
        outcome = script.popleft() if script else self._exhausted
        if outcome.latency_s > call.timeout_s:
            return Outcome(ErrorKind.TIMEOUT, call.timeout_s, outcome.cost_usd)
        return outcome


def drive(
    policy: RoutingPolicy, task: Task, provider: ScriptedProvider, clock: FakeClock
) -> TaskResult:
    """Route one task to the end against a scripted provider, moving the fake clock."""
    run = policy.start(task, clock.now)
    action = run.next_action(clock.now)
    while not isinstance(action, Finish):
        if isinstance(action, Call):
            outcome = provider.answer(action)
            clock.advance(outcome.latency_s)
            action = run.record(outcome, clock.now)
        else:
            clock.advance(action.seconds)
            action = run.next_action(clock.now)
    return action.result


def tiny_config(**overrides: object) -> RouterConfig:
    """Two stable models ``a`` (primary) and ``b`` plus a preview ``p``; one route ``json``."""
    data: dict[str, object] = {
        "models": [
            {
                "id": "a",
                "provider": "pa",
                "completion_rate": 0.9,
                "cost_per_task": 0.01,
                "avg_latency_ms": 500,
            },
            {
                "id": "b",
                "provider": "pb",
                "completion_rate": 0.8,
                "cost_per_task": 0.02,
                "avg_latency_ms": 800,
            },
            {
                "id": "p",
                "provider": "pa",
                "completion_rate": 0.5,
                "cost_per_task": 0.0,
                "avg_latency_ms": 300,
                "status": "preview",
            },
        ],
        "routes": {
            "json": {
                "chain": ["p", "a", "b"],
                "max_cost_per_task": 0.1,
                "max_latency_ms": 10_000,
                "attempt_timeout_ms": 2_000,
                "attempts_per_model": 2,
            },
        },
        "default_route": "json",
    }
    data.update(overrides)
    return config_from_dict(data)
