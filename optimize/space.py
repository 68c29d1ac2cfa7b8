"""The search space: which router settings a study may change, and how.

A :class:`SearchSpace` is derived from a base :class:`~router.RouterConfig` and
the scenario's models. Every parameter has a dotted name:

``<route>.key.<model>`` (float in [0, 1])
    One *random key* per candidate model of a route. The chain is the
    candidates sorted by key, cut to ``<route>.length`` models. Sorting keys
    (rather than a categorical over permutations) gives the sampler a smooth,
    low-dimensional encoding of order and membership.
``<route>.length`` (int)
    How many candidates the chain keeps.
``<route>.max_cost_per_task``, ``<route>.max_latency_ms``, ``<route>.attempt_timeout_ms``,
``<route>.backoff_base_s`` (floats, log scale); ``<route>.attempts_per_model`` (int);
``<route>.ordering`` (``chain`` | ``score``)
    The route's limits and retry settings.
``breaker.consecutive_failures`` (int), ``breaker.failure_rate`` (float),
``breaker.open_base_s`` (float, log)
    The circuit breaker shared by every model.

A study file (:func:`load_space_spec`) may *freeze* any parameter to a value or
*narrow* its range; keys may be shell-style globs (``"*.ordering": [chain]``).
:meth:`SearchSpace.build` turns a parameter dict (a trial's ``params``) into a
validated ``RouterConfig``: a parameter that is absent takes its frozen value,
else the base config's value, so any trial can be rebuilt from its params alone.
Its settings are rounded as an export rounds them
(:func:`optimize.export.round_settings`: whole milliseconds, 4 significant
digits of a cost), so the config a trial scored is the config that is exported.

:func:`param_label` names a parameter for a reader ("bug_patch: position of
gpt-5.4", "breaker: open time (s)").
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from optimize.export import round_settings
from router import RouterConfig, config_from_dict
from router.errors import InputError
from router.task import TASK_TYPES
from sim.world.scenario import Scenario

#: Typical task size used only to rank candidate models (the median Azure code request).
_RANK_PROMPT_TOKENS = 2048
_RANK_COMPLETION_TOKENS = 28


#: What each parameter suffix means, for :func:`param_label`.
_LABELS: dict[str, str] = {
    "length": "chain length",
    "max_cost_per_task": "cost limit per task ($)",
    "max_latency_ms": "latency limit (ms)",
    "attempt_timeout_ms": "attempt timeout (ms)",
    "attempts_per_model": "attempts per model",
    "backoff_base_s": "backoff base (s)",
    "ordering": "ordering (chain or score)",
    "consecutive_failures": "consecutive failures to open",
    "failure_rate": "failure rate to open",
    "open_base_s": "open time (s)",
}


def param_label(name: str) -> str:
    """A parameter's name for a reader: ``<route>.key.<model>`` is "<route>: position of
    <model>" (a smaller key puts the model earlier in the chain), ``breaker.open_base_s``
    is "breaker: open time (s)". Unknown names are returned unchanged."""
    scope, _, rest = name.partition(".")
    if rest.startswith("key."):
        return f"{scope}: position of {rest[len('key.') :]}"
    if rest in _LABELS:
        return f"{scope}: {_LABELS[rest]}"
    return name


@dataclass(frozen=True)
class FloatParam:
    """A float in [low, high], sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def clamp(self, v: float) -> float:
        return min(max(float(v), self.low), self.high)


@dataclass(frozen=True)
class IntParam:
    """An integer in [low, high]."""

    low: int
    high: int

    def clamp(self, v: float) -> int:
        return int(min(max(round(v), self.low), self.high))


@dataclass(frozen=True)
class ChoiceParam:
    """One of ``choices``."""

    choices: tuple[str, ...]

    def clamp(self, v: Any) -> Any:
        return v if v in self.choices else self.choices[0]


Param = FloatParam | IntParam | ChoiceParam


@dataclass
class SpaceSpec:
    """What a study file says about the space (all optional).

    ``routes``: the routes to tune (others keep the base config's settings);
    ``candidates``: per route, the models that may join its chain;
    ``max_candidates``: how many models a route considers when not listed
    (default 5: the base chain plus the best others by expected value);
    ``freeze``: parameter (or glob) → fixed value;
    ``ranges``: parameter (or glob) → ``[low, high]`` or a list of choices.
    """

    routes: list[str] | None = None
    candidates: dict[str, list[str]] = field(default_factory=dict)
    max_candidates: int = 5
    freeze: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "routes": self.routes,
            "candidates": self.candidates,
            "max_candidates": self.max_candidates,
            "freeze": self.freeze,
            "ranges": self.ranges,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<space>") -> SpaceSpec:
        """Parse a ``space:`` mapping; raises a one-line :class:`InputError` naming the key."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: space: expected a mapping, got {type(data).__name__}")
        known = {"routes", "candidates", "max_candidates", "freeze", "ranges"}
        for key in data:
            if key not in known:
                raise InputError(
                    f"{source}: space.{key}: unknown key "
                    f"(expected one of {', '.join(sorted(known))})"
                )
        routes = data.get("routes")
        if routes is not None and (
            not isinstance(routes, list) or not all(isinstance(r, str) for r in routes)
        ):
            raise InputError(f"{source}: space.routes: expected a list of route names")
        cands = data.get("candidates") or {}
        if not isinstance(cands, Mapping) or not all(
            isinstance(v, list) and v and all(isinstance(m, str) for m in v) for v in cands.values()
        ):
            raise InputError(
                f"{source}: space.candidates: expected route -> non-empty list of model ids"
            )
        mc = data.get("max_candidates", 5)
        if not isinstance(mc, int) or isinstance(mc, bool) or mc < 1:
            raise InputError(
                f"{source}: space.max_candidates: expected an integer >= 1, got {mc!r}"
            )
        freeze = data.get("freeze") or {}
        ranges = data.get("ranges") or {}
        if not isinstance(freeze, Mapping):
            raise InputError(f"{source}: space.freeze: expected a mapping of parameter -> value")
        if not isinstance(ranges, Mapping) or not all(
            isinstance(v, list) and v for v in ranges.values()
        ):
            raise InputError(
                f"{source}: space.ranges: expected parameter -> [low, high] or a list of choices"
            )
        return cls(
            routes=list(routes) if routes is not None else None,
            candidates={str(k): list(v) for k, v in cands.items()},
            max_candidates=mc,
            freeze=dict(freeze),
            ranges={str(k): list(v) for k, v in ranges.items()},
        )


def load_space_spec(path: str | Path) -> tuple[SpaceSpec, dict[str, Any]]:
    """Read a YAML study file: its ``space`` section and the rest (objective settings)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(f"{p}: cannot read study file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{p}:{where}: not valid YAML") from None
    if not isinstance(data, Mapping):
        raise InputError(f"{p}: expected a mapping at the top level")
    spec = SpaceSpec.from_dict(data.get("space") or {}, str(p))
    rest = {k: v for k, v in data.items() if k != "space"}
    return spec, rest


def _route_types(config: RouterConfig, route: str) -> list[str]:
    """The task types a route serves (through the aliases or by its own name)."""
    types = [t for t, r in config.aliases.items() if r == route and t in TASK_TYPES]
    if route in TASK_TYPES:
        types.append(route)
    return types


class SearchSpace:
    """The parameters a study samples and how they map onto a ``RouterConfig``.

    ``value_per_success`` and ``latency_cost_per_s`` only rank the candidate
    models of a route that the study file does not list (by expected net value
    of one call in the scenario); they do not enter the objective here.
    """

    def __init__(
        self,
        base: RouterConfig,
        scenario: Scenario | None,
        spec: SpaceSpec | None = None,
        *,
        value_per_success: float = 0.05,
        latency_cost_per_s: float = 0.002,
    ) -> None:
        self.base = base
        self.spec = spec or SpaceSpec()
        known_models = {m.id for m in base.models}
        in_scenario = set(scenario.models) if scenario is not None else known_models
        routes = self.spec.routes if self.spec.routes is not None else list(base.routes)
        for r in routes:
            if r not in base.routes:
                raise InputError(
                    f"space.routes: unknown route {r!r} (the config has {', '.join(base.routes)})"
                )
        for r, models in self.spec.candidates.items():
            if r not in base.routes:
                raise InputError(f"space.candidates.{r}: unknown route {r!r}")
            for m in models:
                if m not in known_models:
                    raise InputError(
                        f"space.candidates.{r}: unknown model {m!r} (not in the config)"
                    )
                if m not in in_scenario:
                    raise InputError(
                        f"space.candidates.{r}: model {m!r} has no stochastic model in the scenario"
                    )
        self.routes: list[str] = routes
        self.candidates: dict[str, list[str]] = {
            r: self._candidates(r, scenario, value_per_success, latency_cost_per_s) for r in routes
        }
        self.params: dict[str, Param] = self._default_params()
        self._apply_ranges()
        self.frozen: dict[str, Any] = self._resolve_frozen()

    # ------------------------------------------------------------------ candidates
    def _candidates(
        self, route: str, scenario: Scenario | None, value: float, latency_cost: float
    ) -> list[str]:
        if route in self.spec.candidates:
            return list(dict.fromkeys(self.spec.candidates[route]))
        if scenario is None:
            raise InputError(f"space.candidates.{route}: needed when no scenario is given")
        production = self.base.environment == "production"
        usable = [
            m
            for m in self.base.models
            if m.id in scenario.models and not (production and m.status != "stable")
        ]
        chain = [m for m in self.base.routes[route].chain if any(u.id == m for u in usable)]
        types = _route_types(self.base, route) or list(TASK_TYPES)
        spec_of = scenario.models
        world = scenario.without_uncertainty().realize(0, 1.0, [m.id for m in usable])

        def expected_value(model_id: str) -> float:
            i = world.index(model_id)
            p = sum(spec_of[model_id].completion.probability(t) for t in types) / len(types)
            cost = world.cost(i, _RANK_PROMPT_TOKENS, _RANK_COMPLETION_TOKENS)
            lat = world.mean_latency_s(i, _RANK_PROMPT_TOKENS, _RANK_COMPLETION_TOKENS)
            return p * value - cost - latency_cost * lat

        others = sorted(
            (m.id for m in usable if m.id not in chain), key=lambda mid: -expected_value(mid)
        )
        want = max(self.spec.max_candidates, len(chain))
        return (chain + others)[:want]

    # ------------------------------------------------------------------ parameters
    def _default_params(self) -> dict[str, Param]:
        params: dict[str, Param] = {}
        for r in self.routes:
            cands = self.candidates[r]
            for m in cands:
                params[f"{r}.key.{m}"] = FloatParam(0.0, 1.0)
            params[f"{r}.length"] = IntParam(1, len(cands))
            params[f"{r}.max_cost_per_task"] = FloatParam(1e-4, 0.1, log=True)
            params[f"{r}.max_latency_ms"] = FloatParam(2000.0, 30000.0, log=True)
            params[f"{r}.attempt_timeout_ms"] = FloatParam(500.0, 15000.0, log=True)
            params[f"{r}.attempts_per_model"] = IntParam(1, 3)
            params[f"{r}.backoff_base_s"] = FloatParam(0.05, 2.0, log=True)
            params[f"{r}.ordering"] = ChoiceParam(("chain", "score"))
        params["breaker.consecutive_failures"] = IntParam(2, 20)
        params["breaker.failure_rate"] = FloatParam(0.3, 1.0)
        params["breaker.open_base_s"] = FloatParam(5.0, 300.0, log=True)
        return params

    def _match(self, pattern: str, what: str) -> list[str]:
        names = [n for n in self.params if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise InputError(f"space.{what}.{pattern}: matches no parameter of this space")
        return names

    def _apply_ranges(self) -> None:
        for pattern, bounds in self.spec.ranges.items():
            for name in self._match(pattern, "ranges"):
                old = self.params[name]
                where = f"space.ranges.{pattern}"
                if isinstance(old, ChoiceParam):
                    bad = [c for c in bounds if c not in old.choices]
                    if bad:
                        raise InputError(
                            f"{where}: {bad[0]!r} is not one of {', '.join(old.choices)}"
                        )
                    self.params[name] = ChoiceParam(tuple(bounds))
                    continue
                if len(bounds) != 2 or not all(
                    isinstance(b, int | float) and not isinstance(b, bool) for b in bounds
                ):
                    raise InputError(f"{where}: expected [low, high] numbers, got {bounds!r}")
                lo, hi = bounds
                if lo > hi:
                    raise InputError(f"{where}: low {lo} is above high {hi}")
                if isinstance(old, IntParam):
                    if lo != int(lo) or hi != int(hi) or lo < old.low or hi > old.high:
                        raise InputError(
                            f"{where}: expected integers within [{old.low}, {old.high}], "
                            f"got {bounds!r}"
                        )
                    self.params[name] = IntParam(int(lo), int(hi))
                else:
                    if old.log and lo <= 0:
                        raise InputError(f"{where}: expected positive bounds (log scale), got {lo}")
                    if lo < 0:
                        raise InputError(f"{where}: expected bounds >= 0, got {lo}")
                    self.params[name] = FloatParam(float(lo), float(hi), old.log)

    def _resolve_frozen(self) -> dict[str, Any]:
        frozen: dict[str, Any] = {}
        for pattern, value in self.spec.freeze.items():
            for name in self._match(pattern, "freeze"):
                p = self.params[name]
                where = f"space.freeze.{pattern}"
                if isinstance(p, ChoiceParam):
                    if value not in p.choices:
                        raise InputError(
                            f"{where}: expected one of {', '.join(p.choices)}, got {value!r}"
                        )
                elif isinstance(value, bool) or not isinstance(value, int | float):
                    raise InputError(f"{where}: expected a number, got {value!r}")
                elif value < 0 or (isinstance(p, FloatParam) and p.log and value <= 0):
                    raise InputError(f"{where}: expected a positive number, got {value!r}")
                elif isinstance(p, IntParam) and value != int(value):
                    raise InputError(f"{where}: expected an integer, got {value!r}")
                frozen[name] = int(value) if isinstance(p, IntParam) else value
        for name in frozen:
            del self.params[name]
        return frozen

    # ------------------------------------------------------------------ sampling
    def suggest(self, trial: Any) -> RouterConfig:
        """Draw every free parameter from an Optuna trial; return the config they give."""
        values: dict[str, Any] = {}
        for name, p in self.params.items():
            if isinstance(p, FloatParam):
                values[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
            elif isinstance(p, IntParam):
                values[name] = trial.suggest_int(name, p.low, p.high)
            else:
                values[name] = trial.suggest_categorical(name, list(p.choices))
        return self.build(values)

    def base_params(self) -> dict[str, Any]:
        """The free parameters that reproduce the base config (clamped into the ranges).

        Enqueued as a study's first trial, so every study evaluates the base config
        on the same seeds as its other trials.
        """
        out: dict[str, Any] = {}
        for r in self.routes:
            route = self.base.routes[r]
            cands = self.candidates[r]
            order = [m for m in route.chain if m in cands]
            rest = [m for m in cands if m not in order]
            n = len(cands)
            # Keys in (0, 1): chain members first in chain order, the rest after them.
            for pos, m in enumerate(order + rest):
                out[f"{r}.key.{m}"] = (pos + 0.5) / n
            out[f"{r}.length"] = max(1, len(order))
            out[f"{r}.max_cost_per_task"] = route.max_cost_per_task
            out[f"{r}.max_latency_ms"] = route.max_latency_ms
            out[f"{r}.attempt_timeout_ms"] = route.attempt_timeout_ms or route.max_latency_ms
            out[f"{r}.attempts_per_model"] = route.attempts_per_model
            out[f"{r}.backoff_base_s"] = route.backoff.base_s
            out[f"{r}.ordering"] = route.ordering
        b = self.base.breaker
        out["breaker.consecutive_failures"] = b.consecutive_failures
        out["breaker.failure_rate"] = b.failure_rate
        out["breaker.open_base_s"] = b.open_base_s
        return {k: self.params[k].clamp(v) for k, v in out.items() if k in self.params}

    def neighbours(self) -> list[dict[str, Any]]:
        """One-step variations of the base parameters, each differing in one discrete
        setting: per route the other ordering, one more model in the chain, one
        attempt fewer; for the breaker its most tolerant thresholds.

        A study enqueues them after the base config: with dozens of parameters,
        random start-up points are almost all far worse than the base, while these
        tell the sampler which single changes pay (and TPE then combines them).
        Variations that equal the base (a frozen or out-of-range setting) are dropped.
        """
        base = self.base_params()
        out: list[dict[str, Any]] = []

        def add(name: str, value: Any) -> None:
            p = self.params.get(name)
            if p is None or p.clamp(value) == base[name]:
                return
            out.append({**base, name: p.clamp(value)})

        for r in self.routes:
            ordering = self.params.get(f"{r}.ordering")
            if isinstance(ordering, ChoiceParam):
                for choice in ordering.choices:
                    if choice != base[f"{r}.ordering"]:
                        add(f"{r}.ordering", choice)
                        break
            if f"{r}.length" in base:
                add(f"{r}.length", base[f"{r}.length"] + 1)
            if f"{r}.attempts_per_model" in base:
                add(f"{r}.attempts_per_model", base[f"{r}.attempts_per_model"] - 1)
        for name in ("breaker.failure_rate", "breaker.consecutive_failures"):
            p = self.params.get(name)
            if isinstance(p, FloatParam | IntParam):
                add(name, p.high)
        return out

    # ------------------------------------------------------------------ building
    def chain(self, route: str, values: Mapping[str, Any]) -> list[str]:
        """The chain a parameter dict gives for ``route`` (random keys sorted, cut)."""
        cands = self.candidates[route]
        defaults = self._fallback_values(route)

        def get(name: str) -> Any:
            if name in values:
                return values[name]
            if name in self.frozen:
                return self.frozen[name]
            return defaults[name]

        keyed = sorted(range(len(cands)), key=lambda i: (float(get(f"{route}.key.{cands[i]}")), i))
        length = int(get(f"{route}.length"))
        return [cands[i] for i in keyed[: max(1, min(length, len(cands)))]]

    def _fallback_values(self, route: str) -> dict[str, Any]:
        """Base-config values for a route's parameters (unclamped), for absent params."""
        r = self.base.routes[route]
        cands = self.candidates[route]
        order = [m for m in r.chain if m in cands]
        rest = [m for m in cands if m not in order]
        vals: dict[str, Any] = {
            f"{route}.key.{m}": (pos + 0.5) / len(cands) for pos, m in enumerate(order + rest)
        }
        vals[f"{route}.length"] = max(1, len(order))
        return vals

    def build(self, values: Mapping[str, Any]) -> RouterConfig:
        """The validated config for a parameter dict (absent: frozen, else base value)."""
        data = self.base.model_dump(mode="json", exclude_none=False)

        def get(name: str, default: Any) -> Any:
            if name in values:
                return values[name]
            return self.frozen.get(name, default)

        for r in self.routes:
            route = data["routes"][r]
            route["chain"] = self.chain(r, values)
            route["max_cost_per_task"] = float(
                get(f"{r}.max_cost_per_task", route["max_cost_per_task"])
            )
            route["max_latency_ms"] = float(get(f"{r}.max_latency_ms", route["max_latency_ms"]))
            timeout = get(f"{r}.attempt_timeout_ms", route["attempt_timeout_ms"])
            route["attempt_timeout_ms"] = None if timeout is None else float(timeout)
            route["attempts_per_model"] = int(
                get(f"{r}.attempts_per_model", route["attempts_per_model"])
            )
            route["backoff"]["base_s"] = float(
                get(f"{r}.backoff_base_s", route["backoff"]["base_s"])
            )
            # Keep the cap above the base so a larger base is not silently clipped away.
            route["backoff"]["cap_s"] = max(route["backoff"]["cap_s"], route["backoff"]["base_s"])
            route["ordering"] = get(f"{r}.ordering", route["ordering"])
        br = data["breaker"]
        br["consecutive_failures"] = int(
            get("breaker.consecutive_failures", br["consecutive_failures"])
        )
        br["failure_rate"] = float(get("breaker.failure_rate", br["failure_rate"]))
        br["open_base_s"] = float(get("breaker.open_base_s", br["open_base_s"]))
        br["open_cap_s"] = max(br["open_cap_s"], br["open_base_s"])
        # Rounded as an export rounds it: the config scored is the config exported.
        return config_from_dict(round_settings(data), source="study parameters")

    # ------------------------------------------------------------------ exhaustive
    def grid(self) -> Iterator[dict[str, Any]]:
        """Every distinct configuration of a space whose free parameters are all discrete.

        Chains are enumerated as ordered selections of the candidates (one
        parameter dict per distinct chain, not per key vector); a route whose keys are
        all frozen has one chain per length. Raises
        :class:`InputError` when a free float other than a random key remains:
        freeze it (or narrow it to a list of choices is not possible for floats).
        """
        floats = [
            n for n, p in self.params.items() if isinstance(p, FloatParam) and ".key." not in n
        ]
        if floats:
            raise InputError(
                f"exhaustive search: parameter {floats[0]!r} is continuous; "
                "freeze it in the study file"
            )
        per_route: list[list[dict[str, Any]]] = []
        for r in self.routes:
            cands = self.candidates[r]
            lp = self.params.get(f"{r}.length")
            lengths = (
                range(lp.low, lp.high + 1)
                if isinstance(lp, IntParam)
                else [int(self.frozen.get(f"{r}.length", self._fallback_values(r)[f"{r}.length"]))]
            )
            options: list[dict[str, Any]] = []
            if not any(f"{r}.key.{m}" in self.params for m in cands):
                # Every key frozen: the order is fixed, only the length can vary.
                per_route.append(
                    [{f"{r}.length": n} for n in lengths] if isinstance(lp, IntParam) else [{}]
                )
                continue
            for length in lengths:
                for chain in itertools.permutations(cands, length):
                    vals: dict[str, Any] = (
                        {f"{r}.length": length} if isinstance(lp, IntParam) else {}
                    )
                    rest = [m for m in cands if m not in chain]
                    for pos, m in enumerate(list(chain) + rest):
                        if f"{r}.key.{m}" in self.params:
                            vals[f"{r}.key.{m}"] = (pos + 0.5) / len(cands)
                    options.append(vals)
            per_route.append(options)
        discrete = [
            (n, p)
            for n, p in self.params.items()
            if not isinstance(p, FloatParam) and not n.endswith(".length")
        ]
        axes = [
            list(p.choices) if isinstance(p, ChoiceParam) else list(range(p.low, p.high + 1))
            for _, p in discrete
        ]
        for chains in itertools.product(*per_route):
            for combo in itertools.product(*axes):
                vals = {}
                for c in chains:
                    vals.update(c)
                vals.update({n: v for (n, _), v in zip(discrete, combo, strict=True)})
                yield vals

    def grid_size(self) -> int:
        """How many configurations :meth:`grid` yields."""
        total = 1
        for r in self.routes:
            n = len(self.candidates[r])
            lp = self.params.get(f"{r}.length")
            lengths = (
                range(lp.low, lp.high + 1)
                if isinstance(lp, IntParam)
                else [int(self.frozen.get(f"{r}.length", self._fallback_values(r)[f"{r}.length"]))]
            )
            if any(f"{r}.key.{m}" in self.params for m in self.candidates[r]):
                total *= sum(math.perm(n, k) for k in lengths)
            else:  # every key frozen: one chain per length
                total *= len(lengths)
        for n, p in self.params.items():
            if isinstance(p, ChoiceParam):
                total *= len(p.choices)
            elif isinstance(p, IntParam) and not n.endswith(".length"):
                total *= p.high - p.low + 1
        return total

    def resolved_spec(self) -> SpaceSpec:
        """The spec with every route and its candidates spelled out.

        Stored with a study, so the space (and any trial's config) can be rebuilt
        later without the scenario the candidates were ranked on.
        """
        return SpaceSpec(
            routes=list(self.routes),
            candidates={r: list(c) for r, c in self.candidates.items()},
            max_candidates=self.spec.max_candidates,
            freeze=dict(self.spec.freeze),
            ranges=dict(self.spec.ranges),
        )

    def describe(self) -> list[tuple[str, str]]:
        """(parameter, range or frozen value) rows for display."""
        rows: list[tuple[str, str]] = []
        for n, p in self.params.items():
            if isinstance(p, FloatParam):
                rows.append((n, f"[{p.low:g}, {p.high:g}]{' log' if p.log else ''}"))
            elif isinstance(p, IntParam):
                rows.append((n, f"{{{p.low}..{p.high}}}"))
            else:
                rows.append((n, "|".join(p.choices)))
        rows.extend((n, f"= {v}") for n, v in self.frozen.items())
        return rows
