"""The scenario: stochastic models of each provider, as the simulator sees them.

A scenario is a YAML (or JSON) document validated by :class:`Scenario`::

    name: demo
    difficulty: {sigma: 1.4, unsolvable: 0.10, retry_correlation: 0.5}   # optional
    providers:                       # shared outage processes, one per provider
      openai:
        outage:
          time_between: {dist: exponential, mean_s: 468190}
          duration: {dist: lognormal, median_s: 4320, p90_s: 18000}
          mode: fail_fast
    models:
      gpt-5.4:
        provider: openai
        completion: {default: 0.766, per_type: {sql: 0.8}, beta_concentration: 60}
        latency: {mean_s: 2.5, sigma: 0.09, per_1k_completion_tokens_s: 0}
        # or built from tokens:
        # latency: {ttft: {median_s: 0.5, sigma: 0.3}, per_output_token_s: 0.02}
        context_window: 400000
        outage: {shared: true}
        capacity: 64
        rate_limit_rpm: 500
        retry_after_s: 2
        fail_fast_latency_s: 0.5
        malformed_rate: 0.01
        server_error_rate: 0.002
        cost_per_task: 0.01          # or input_per_mtok + output_per_mtok

Semantics of one answered attempt (what :meth:`sim.world.providers.World.attempt` draws):

* a task whose ``prompt_tokens`` exceed the model's ``context_window`` is turned away
  (``context_length``, after ``fail_fast_latency_s``, not billed) before anything else;
* with probability ``server_error_rate`` a plain 5xx after ``fail_fast_latency_s``;
* otherwise an answer after the latency draw, which is *completed* ("ok") with the
  task type's completion probability ``p``, *malformed* with ``malformed_rate`` and
  *wrong* (well-formed, task not done) with the rest. So ``p`` is the share of answers
  that complete the task, as a benchmark would report it, and ``p + malformed_rate``
  must not exceed 1. These are the *marginal* rates of each model whatever the
  ``difficulty`` section says; difficulty only decides *which* tasks fail together.

Task difficulty (``difficulty``; every field defaults to 0, which is the independent
world: each attempt succeeds with probability ``p`` on its own): each task has a latent
difficulty ``d ~ N(0, sigma^2)`` shared by every model and attempt, and is unsolvable by
every model with probability ``unsolvable`` (``u``). A model's ability for a task type
is ``a = sqrt(1 + sigma^2) * Phi^-1(p / (1 - u))``, so its completion stays exactly
``p``; attempt ``k`` of model ``m`` succeeds iff
``sqrt(rho) eta(task, m) + sqrt(1 - rho) eps(task, m, k) < a - d`` (``rho`` =
``retry_correlation``: how much a retry of the same model repeats its first answer).
Among failures an answer is malformed with the share that keeps the marginal malformed
rate exactly ``malformed_rate``. ``p`` may not exceed ``1 - u``.

Latency has two forms: a distribution plus linear size terms (``per_1k_*_tokens_s``),
or ``{ttft: <distribution>, per_output_token_s: <seconds or distribution>,
per_input_token_s: <...>}``, i.e. time to first token plus a per-token time drawn per
attempt times the task's tokens. Price: ``input_per_mtok`` and ``output_per_mtok``
(both, or neither) price a call by its tokens, as the router's config does; otherwise
``cost_per_task`` is the price of an answered call.

Outages, rate limits and capacity are carried out by the driver using the values
:class:`~sim.world.providers.World` exposes. Loading errors are :class:`~sim.errors.ScenarioError`
with one line: ``file: field.path: what was expected, got value``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from router.config import UniqueKeyLoader
from router.task import TASK_TYPES
from sim.errors import ScenarioError
from sim.world.distributions import (
    DIST_TAGS,
    Empirical,
    Exponential,
    Fixed,
    Gamma,
    Lognormal,
    LognormalMixture,
    NonNegativeFloat,
    PositiveFloat,
    Probability,
    Weibull,
    distribution_union,
)

if TYPE_CHECKING:
    from sim.world.providers import World

__all__ = [
    "CompletionSpec",
    "DifficultyLevels",
    "DifficultySpec",
    "ModelSpec",
    "OutageSpec",
    "ProviderSpec",
    "Scenario",
    "TokenLatency",
    "load_scenario",
    "load_seed_scenario",
    "parse_scenario",
    "scenario_json_schema",
]

_DIST_CLASSES: dict[str, type[BaseModel]] = {
    "lognormal": Lognormal,
    "gamma": Gamma,
    "weibull": Weibull,
    "exponential": Exponential,
    "empirical": Empirical,
    "fixed": Fixed,
    "lognormal_mixture": LognormalMixture,
}


class _LocatedError(ValueError):
    """A cross-field error raised inside a validator that knows the exact sub-path.

    Pydantic wraps it in a ``value_error`` located at the validating model; the
    formatter appends :attr:`loc` so the message names the offending field.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


# ------------------------------------------------------------------------ latency
class _TokenTerms(BaseModel):
    """Seconds added per 1,000 prompt / completion tokens of the task (linear in size)."""

    per_1k_prompt_tokens_s: NonNegativeFloat = 0.0
    per_1k_completion_tokens_s: NonNegativeFloat = 0.0

    def expected_s(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Mean latency of an answer of this size: the distribution's mean plus the terms."""
        return (
            self.mean()  # type: ignore[attr-defined]  # the distribution of the subclass
            + prompt_tokens * self.per_1k_prompt_tokens_s / 1000.0
            + completion_tokens * self.per_1k_completion_tokens_s / 1000.0
        )


# A latency is a distribution plus the size terms, written flat in YAML
# (``latency: {median_s: 1, p95_s: 2, per_1k_completion_tokens_s: 5}``). Multiple
# inheritance keeps the published JSON Schema exactly the shape people write.
class LognormalLatency(Lognormal, _TokenTerms):
    """Lognormal base latency plus size terms (the default ``dist``)."""


class GammaLatency(Gamma, _TokenTerms):
    """Gamma base latency plus size terms."""


class WeibullLatency(Weibull, _TokenTerms):
    """Weibull base latency plus size terms."""


class ExponentialLatency(Exponential, _TokenTerms):
    """Exponential base latency plus size terms."""


class EmpiricalLatency(Empirical, _TokenTerms):
    """Empirical base latency (observed samples) plus size terms."""


class FixedLatency(Fixed, _TokenTerms):
    """Constant base latency plus size terms."""


class LognormalMixtureLatency(LognormalMixture, _TokenTerms):
    """Lognormal-mixture base latency (what ``sim calibrate`` fits to a multi-modal
    latency) plus size terms."""


# Each field type below is a pydantic union built at runtime, which type checkers (and
# the compiled build's mypyc, which trusts annotations) cannot read: statically it is
# Any (pydantic checks the values).
#: A time to first token (``dist`` defaults to lognormal, as a flat latency's does).
if TYPE_CHECKING:
    FirstToken = Any
else:
    FirstToken = distribution_union(_DIST_CLASSES, default="lognormal")


def _seconds_per_token(value: Any) -> Any:
    """A plain number of seconds per token is the point mass at it (``dist: fixed``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (math.isfinite(value) and value >= 0):
            raise _LocatedError(
                (), f"expected seconds per token >= 0 or a distribution mapping, got {value}"
            )
        return {"dist": "fixed", "value_s": float(value)}
    return value


#: Seconds per token: a number (a constant) or a distribution, drawn once per attempt.
if TYPE_CHECKING:
    TokenTime = Any
else:
    TokenTime = Annotated[
        distribution_union(_DIST_CLASSES, default="lognormal"),
        BeforeValidator(
            _seconds_per_token,
            json_schema_input_type=Union[  # noqa: UP007 - a runtime type expression
                NonNegativeFloat, distribution_union(_DIST_CLASSES, default="lognormal")
            ],
        ),
    ]


class TokenLatency(BaseModel):
    """Latency built from tokens (issue 10): ``ttft + completion_tokens x
    per_output_token_s + prompt_tokens x per_input_token_s``.

    ``ttft`` (time to first token) is a distribution of any family. Each per-token time
    is a number of seconds (a constant) or a distribution; a distribution is drawn once
    per attempt, independently of the TTFT (one attempt's decoding speed), from the
    world's common random numbers. A term left out is 0. The TTFT draw uses the same
    uniform a flat latency would, so rewriting a flat latency in this form keeps the
    draws paired.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft: FirstToken
    per_output_token_s: TokenTime | None = None
    per_input_token_s: TokenTime | None = None

    def expected_s(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Mean latency of an answer of this size."""
        out = self.per_output_token_s.mean() if self.per_output_token_s is not None else 0.0
        inp = self.per_input_token_s.mean() if self.per_input_token_s is not None else 0.0
        return self.ttft.mean() + completion_tokens * out + prompt_tokens * inp


_FLAT_LATENCY: dict[str, type[BaseModel]] = {
    "lognormal": LognormalLatency,
    "gamma": GammaLatency,
    "weibull": WeibullLatency,
    "exponential": ExponentialLatency,
    "empirical": EmpiricalLatency,
    "fixed": FixedLatency,
    "lognormal_mixture": LognormalMixtureLatency,
}


def _latency_tag(value: Any) -> str | None:
    # A mapping with ``ttft`` is the token form; any other is a flat distribution whose
    # ``dist`` defaults to lognormal (so the flat form written before stays valid).
    if isinstance(value, dict):
        if "ttft" in value:
            return "tokens"
        tag = value.get("dist", "lognormal")
        return tag if isinstance(tag, str) else repr(tag)
    if isinstance(value, TokenLatency):
        return "tokens"
    if isinstance(value, BaseModel):
        return getattr(value, "dist", None)
    return None


#: A model's latency: a flat distribution plus size terms, or the token form.
if TYPE_CHECKING:
    Latency = Any
else:
    Latency = Annotated[
        Union[  # noqa: UP007 - members are Annotated with their tags
            tuple(Annotated[cls, Tag(tag)] for tag, cls in _FLAT_LATENCY.items())
            + (Annotated[TokenLatency, Tag("tokens")],)
        ],
        Discriminator(_latency_tag),
    ]
#: Up-time between outages (``dist`` defaults to exponential: a Poisson incident stream).
if TYPE_CHECKING:
    TimeBetween = Any
else:
    TimeBetween = distribution_union(_DIST_CLASSES, default="exponential")
#: Outage length (``dist`` defaults to lognormal: heavy-tailed incident durations).
if TYPE_CHECKING:
    Duration = Any
else:
    Duration = distribution_union(_DIST_CLASSES, default="lognormal")


# ------------------------------------------------------------------------- outage
class OutageSpec(BaseModel):
    """An alternating renewal process of up and down periods.

    Either an own process (``time_between`` = up-time between outages, ``duration`` =
    outage length, ``mode``) or ``shared: true``, which means the model uses its
    provider's process from the ``providers`` section, so all models of that provider
    go down together. In ``fail_fast`` mode a call during an outage gets a 5xx after
    the model's ``fail_fast_latency_s``; in ``hang`` mode it gets no answer until the
    caller's timeout.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shared: bool = False
    time_between: TimeBetween | None = None
    duration: Duration | None = None
    mode: Literal["fail_fast", "hang"] = "fail_fast"

    @model_validator(mode="after")
    def _complete(self) -> OutageSpec:
        if self.shared:
            for name in ("time_between", "duration", "mode"):
                if name in self.model_fields_set:
                    raise _LocatedError(
                        (name,), "not allowed with shared: true (the provider's process applies)"
                    )
            return self
        for name in ("time_between", "duration"):
            dist = getattr(self, name)
            if dist is None:
                raise _LocatedError((name,), "required field is missing (or set shared: true)")
            if not dist.mean() > 0:
                raise _LocatedError(
                    (name,), f"expected a distribution with a positive mean, got {dist.mean()}"
                )
        return self


class ProviderSpec(BaseModel):
    """What all models of one provider share: for now, the outage process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outage: OutageSpec | None = None

    @field_validator("outage", mode="before")
    @classmethod
    def _not_shared(cls, v: Any) -> Any:
        # Checked before OutageSpec's own rules, which would complain about the rest.
        if isinstance(v, dict) and v.get("shared") is True:
            raise _LocatedError(
                ("shared",), "a provider's outage is itself the shared process; remove shared"
            )
        return v


# --------------------------------------------------------------------- completion
class CompletionSpec(BaseModel):
    """Probability that an answered attempt completes the task, per task type.

    ``per_type`` overrides ``default`` for the canonical task types. With
    ``beta_concentration`` k set, each replication seed draws each probability once
    from Beta(k p, k (1 - p)) (mean p, variance p (1 - p) / (k + 1)) to express that
    the figure is an estimate; types without a ``per_type`` entry share the single
    draw for ``default`` (the uncertainty is about the one published figure).
    Probabilities of exactly 0 or 1 are kept as they are.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Probability
    per_type: dict[str, Probability] = Field(default_factory=dict)
    beta_concentration: PositiveFloat | None = None

    @field_validator("per_type")
    @classmethod
    def _known_types(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            if key not in TASK_TYPES:
                raise _LocatedError(
                    (key,), f"unknown task type {key!r}; expected one of {', '.join(TASK_TYPES)}"
                )
        return v

    def probability(self, task_type: str) -> float:
        """The nominal (not Beta-drawn) probability for ``task_type``."""
        return self.per_type.get(task_type, self.default)


# --------------------------------------------------------------------- difficulty
def _check_below_one(spec: BaseModel) -> None:
    # A share of 1 is degenerate: u = 1 leaves no task solvable (every p would have to
    # be 0) and rho = 1 divides by sqrt(1 - rho) = 0.
    for name in ("unsolvable", "retry_correlation"):
        value = getattr(spec, name)
        if value is not None and not value < 1.0:
            raise _LocatedError((name,), f"expected a share in [0, 1), got {value}")


class DifficultyLevels(BaseModel):
    """The difficulty of one task type; a field left out inherits the top level's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma: NonNegativeFloat | None = None
    unsolvable: Probability | None = None
    retry_correlation: Probability | None = None

    @model_validator(mode="after")
    def _shares(self) -> DifficultyLevels:
        _check_below_one(self)
        return self


class DifficultySpec(BaseModel):
    """Correlated task difficulty (see the module docstring for the model).

    ``sigma``: standard deviation of the latent difficulty ``d`` of a task, shared by
    every model and attempt (0: tasks are alike, failures of different models are
    independent). ``unsolvable``: share of tasks no model solves (a flag drawn per
    task). ``retry_correlation`` (rho, in [0, 1)): correlation of a model's latent
    noise between its own attempts at one task (0: a retry is a fresh draw given the
    task's difficulty). ``per_type`` overrides any of them for a canonical task type.
    All 0 (the default) is the independent world, draw for draw.

    The draws belong to the task, never to the config or the model: ``d`` and the
    unsolvable flag depend on (seed, trace, task) only, and a model's persistent noise
    ``eta`` on (seed, trace, task, model) only (see :mod:`sim.world.providers`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma: NonNegativeFloat = 0.0
    unsolvable: Probability = 0.0
    retry_correlation: Probability = 0.0
    per_type: dict[str, DifficultyLevels] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shares(self) -> DifficultySpec:
        _check_below_one(self)
        return self

    @field_validator("per_type")
    @classmethod
    def _known_types(cls, v: dict[str, DifficultyLevels]) -> dict[str, DifficultyLevels]:
        for key in v:
            if key not in TASK_TYPES:
                raise _LocatedError(
                    (key,), f"unknown task type {key!r}; expected one of {', '.join(TASK_TYPES)}"
                )
        return v

    def levels(self, task_type: str) -> tuple[float, float, float]:
        """``(sigma, unsolvable, retry_correlation)`` for ``task_type`` (unknown types:
        the top level)."""
        over = self.per_type.get(task_type)
        top = (self.sigma, self.unsolvable, self.retry_correlation)
        if over is None:
            return top
        mine = (over.sigma, over.unsolvable, over.retry_correlation)
        return tuple(m if m is not None else t for m, t in zip(mine, top, strict=True))  # type: ignore[return-value]

    def is_independent(self) -> bool:
        """True when every task type has sigma = unsolvable = rho = 0 (the independent
        world: each attempt succeeds with its model's probability on its own)."""
        zero = (0.0, 0.0, 0.0)
        return self.levels("") == zero and all(self.levels(t) == zero for t in self.per_type)


# -------------------------------------------------------------------------- model
class ModelSpec(BaseModel):
    """The stochastic model of one LLM endpoint (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Annotated[str, Field(min_length=1)]
    completion: CompletionSpec
    latency: Latency
    context_window: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description=(
            "Most prompt tokens the model accepts; a task with more is answered "
            "context_length (None: no limit)."
        ),
    )
    outage: OutageSpec | None = None
    capacity: Annotated[int, Field(gt=0)] | None = None
    rate_limit_rpm: PositiveFloat | None = None
    retry_after_s: NonNegativeFloat = 1.0
    fail_fast_latency_s: NonNegativeFloat = 0.5
    malformed_rate: Probability = 0.0
    server_error_rate: Probability = 0.0
    cost_per_task: NonNegativeFloat | None = None
    input_per_mtok: NonNegativeFloat | None = None
    output_per_mtok: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if (
            self.cost_per_task is None
            and self.input_per_mtok is None
            and (self.output_per_mtok is None)
        ):
            raise _LocatedError(
                ("cost_per_task",),
                "a price is required: cost_per_task and/or input_per_mtok/output_per_mtok "
                "(0 for a free model)",
            )
        if (self.input_per_mtok is None) != (self.output_per_mtok is None):
            given, missing = (
                ("input_per_mtok", "output_per_mtok")
                if self.output_per_mtok is None
                else ("output_per_mtok", "input_per_mtok")
            )
            # The router prices by tokens only when both are set; a lone token price would
            # be charged here and ignored there.
            raise _LocatedError(
                (missing,),
                f"required with {given} (token prices come in pairs; 0 for a free direction)",
            )
        probs = {"completion.default": self.completion.default}
        probs.update({f"completion.per_type.{k}": p for k, p in self.completion.per_type.items()})
        for where, p in probs.items():
            if p + self.malformed_rate > 1.0 + 1e-12:
                raise _LocatedError(
                    ("malformed_rate",),
                    f"{where} {p} + malformed_rate {self.malformed_rate} exceeds 1 "
                    "(both are shares of the same answers)",
                )
        return self

    @property
    def token_priced(self) -> bool:
        """True when both token prices are set (then they, not cost_per_task, apply)."""
        return self.input_per_mtok is not None and self.output_per_mtok is not None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one answered call: its tokens at the token prices when both are set,
        else ``cost_per_task`` (the router's :meth:`ModelProfile.estimate_cost
        <router.config.ModelProfile.estimate_cost>` rule, so the two never disagree on
        which price applies)."""
        if self.input_per_mtok is not None and self.output_per_mtok is not None:
            return (
                prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
            ) / 1e6
        return self.cost_per_task or 0.0


# ----------------------------------------------------------------------- scenario
class Scenario(BaseModel):
    """A whole scenario: providers' shared outage processes and one model per id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "scenario"
    description: str = ""
    difficulty: DifficultySpec = Field(default_factory=DifficultySpec)
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    models: Annotated[dict[str, ModelSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _shared_outages_exist(self) -> Scenario:
        for mid, spec in self.models.items():
            if spec.outage is not None and spec.outage.shared:
                prov = self.providers.get(spec.provider)
                if prov is None or prov.outage is None:
                    raise _LocatedError(
                        ("models", mid, "outage", "shared"),
                        f"provider {spec.provider!r} has no outage in the providers section",
                    )
        return self

    @model_validator(mode="after")
    def _solvable(self) -> Scenario:
        # a = sqrt(1 + sigma^2) Phi^-1(p / (1 - u)) exists only for p <= 1 - u: no model
        # completes more than the solvable share of tasks.
        diff = self.difficulty

        def source(task_type: str | None) -> str:
            over = diff.per_type.get(task_type) if task_type else None
            if over is not None and over.unsolvable is not None:
                return f"difficulty.per_type.{task_type}.unsolvable"
            return "difficulty.unsolvable"

        for mid, spec in self.models.items():
            comp = spec.completion
            # The default applies to unknown types (top level) and to every canonical
            # type without its own figure; a per-type figure to its type.
            checks: list[tuple[tuple[str, ...], float, str | None]] = [
                (("default",), comp.default, None)
            ]
            checks += [
                (("default",), comp.default, t) for t in TASK_TYPES if t not in comp.per_type
            ]
            checks += [(("per_type", t), p, t) for t, p in comp.per_type.items()]
            for where, p, task_type in checks:
                u = diff.levels(task_type or "")[1]
                if p > 1.0 - u + 1e-12:
                    raise _LocatedError(
                        ("models", mid, "completion", *where),
                        f"{p} exceeds 1 - {source(task_type)} = {1.0 - u:g}; no model "
                        "completes a task no model can solve",
                    )
        return self

    def model(self, model_id: str) -> ModelSpec:
        """The spec of ``model_id``; :class:`ScenarioError` naming the known ids if absent."""
        try:
            return self.models[model_id]
        except KeyError:
            raise ScenarioError(
                f"scenario {self.name!r} has no model {model_id!r}; "
                f"it has: {', '.join(self.models)}"
            ) from None

    def outage_of(self, model_id: str) -> tuple[str | None, OutageSpec | None]:
        """``(process key, spec)`` of the outage process that covers ``model_id``.

        The key names whose timeline it is (``provider:<name>`` or ``model:<id>``) and
        keys the random stream, so shared models meet the very same outages.
        """
        spec = self.model(model_id)
        if spec.outage is None:
            return None, None
        if spec.outage.shared:
            return f"provider:{spec.provider}", self.providers[spec.provider].outage
        return f"model:{model_id}", spec.outage

    def without_uncertainty(self) -> Scenario:
        """A copy with every ``beta_concentration`` removed (nominal probabilities)."""
        models = {
            mid: m.model_copy(
                update={"completion": m.completion.model_copy(update={"beta_concentration": None})}
            )
            for mid, m in self.models.items()
        }
        return self.model_copy(update={"models": models})

    def realize(
        self,
        seed: int,
        horizon_s: float,
        model_ids: Sequence[str] | None = None,
        *,
        trace_key: int | None = None,
        max_cached_blocks: int = 512,
    ) -> World:
        """The scenario's randomness for replication ``seed`` (see
        :class:`sim.world.providers.World`).

        ``model_ids`` fixes the order of model indices (default: the file's order);
        each must be in the scenario. ``horizon_s`` is how far outage timelines are
        drawn up front (they extend lazily past it, identically). ``trace_key``
        identifies the traffic (:func:`sim.engine.replays.trace_key`) and is mixed into every
        per-task draw, so two traces never share draws; None keeps the draws of a world
        keyed by the seed alone (the layout before traces were keyed).
        """
        from sim.world.providers import World

        ids = list(self.models) if model_ids is None else list(model_ids)
        return World(
            self, seed, horizon_s, ids, trace_key=trace_key, max_cached_blocks=max_cached_blocks
        )


# ------------------------------------------------------------------------ loading
# Elements of a pydantic error location that are union tags, not fields.
_DIST_FIELDS = frozenset({"latency", "time_between", "duration"})


# The PydanticCustomError types of sim.world.distributions: their messages are complete.
_CUSTOM_ERROR_TYPES = frozenset(
    {
        "finite_number",
        "positive_number",
        "non_negative_number",
        "probability",
        "lognormal_params",
        "gamma_params",
        "empirical_empty",
        "mixture_params",
    }
)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _members(tp: Any) -> list[tuple[str | None, Any]]:
    """``tp`` without ``Annotated`` wrappers and ``None``: its union members, each with
    its discriminator tag (None for an untagged type)."""
    import types
    import typing

    tag: str | None = None
    while typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        tag = next((m.tag for m in args[1:] if isinstance(m, Tag)), tag)
        tp = args[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) if a is not type(None) for m in _members(a)]
    return [(tag, tp)]


def _walk(loc: Sequence[str | int]) -> tuple[str, list[str]]:
    """The path of ``loc`` as the user wrote it, and the field names known at its last
    element's parent (the candidates for a did-you-mean).

    Walks the types from :class:`Scenario` so that a discriminated union's tag
    (``lognormal``, ``tokens``) is recognised as a tag, not a field, and left out of the
    path. Where the types are lost (a custom validator's location), falls back to
    leaving out the distribution tags after a distribution field.
    """
    import typing

    current: list[tuple[str | None, Any]] | None = [(None, Scenario)]
    parent_fields: list[str] = []
    parts: list[str] = []
    prev: str | int | None = None
    for item in loc:
        if item == "[key]":
            continue
        if current is None:  # types lost: the old heuristic
            if not (prev in _DIST_FIELDS and item in DIST_TAGS):
                parts.append(str(item))
            prev = item
            continue
        models = [
            (t, tp) for t, tp in current if isinstance(tp, type) and issubclass(tp, BaseModel)
        ]
        tagged = [(t, tp) for t, tp in current if t is not None and t == item]
        fields = [n for _, tp in models for n in tp.model_fields]
        parent_fields = list(dict.fromkeys(fields))
        if isinstance(item, str) and item in fields:
            following: list[tuple[str | None, Any]] = []
            for _, tp in models:
                field = tp.model_fields.get(item)
                if field is not None:
                    following += _members(field.annotation)
            current = following
            parts.append(item)
        elif tagged and len(tagged) < len(current):
            current = tagged  # the union member chosen by its tag: not a field
        else:
            following = []
            for _, tp in current:
                origin = typing.get_origin(tp)
                if origin is dict:
                    following += _members(typing.get_args(tp)[1])
                elif origin in (list, tuple) and typing.get_args(tp):
                    following += _members(typing.get_args(tp)[0])
            current = following or None
            parts.append(str(item))
        prev = item
    return ".".join(parts) or "<top level>", parent_fields


def _path(loc: Sequence[str | int]) -> str:
    return _walk(loc)[0]


def _describe(err: Any) -> str:
    """One ``path: message`` for one pydantic error dict."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _LocatedError):
        return f"{_path(loc + cause.loc)}: {cause.message}"
    msg = str(err.get("msg", "invalid"))
    if kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "extra_forbidden":
        import difflib

        path, known = _walk(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6) if loc else []
        if close:
            return f"{path}: unknown field (did you mean {close[0]!r}?)"
        if known:
            return f"{path}: unknown field (expected one of: {', '.join(known)})"
        return f"{path}: unknown field"
    if kind == "missing":
        return f"{_path(loc)}: required field is missing"
    if kind == "union_tag_invalid":
        given = err.get("input")
        tag = given.get("dist") if isinstance(given, dict) else ctx.get("tag")
        return (
            f"{_path(loc)}.dist: unknown distribution {_short(tag)}; "
            f"expected one of {', '.join(DIST_TAGS)}"
        )
    if kind == "union_tag_not_found":
        return f"{_path(loc)}: expected a distribution mapping, got {_short(err.get('input'))}"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"{_path(loc)}: expected a mapping, got {_short(err.get('input'))}"
    # Our own PydanticCustomErrors already say what they got; pydantic's own don't.
    if kind not in _CUSTOM_ERROR_TYPES:
        msg = f"{msg[:1].lower()}{msg[1:]}, got {_short(err.get('input'))}"
    return f"{_path(loc)}: {msg}"


def _format_validation_error(source: str, exc: ValidationError) -> str:
    """One line: the first problem (unknown fields first), and the paths of the others.

    ``my.yaml: models.m1.latncy: unknown field (did you mean 'latency'?) [+1 more:
    models.m1.latency]``. Unknown fields come first because a typo also makes the
    intended field "missing", and the typo is the thing to fix.
    """
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    first = _describe(errors[0])
    if len(errors) == 1:
        return f"{source}: {first}"
    others = [_describe(e).split(": ", 1)[0] for e in errors[1:]]
    shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    return f"{source}: {first} [+{len(others)} more: {shown}]"


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate an already-parsed mapping; errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format_validation_error(source, exc)) from exc


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file (YAML, or JSON by a ``.json`` suffix).

    Every failure (missing file, YAML syntax, duplicate key, schema) is a
    :class:`ScenarioError` with one line that starts with the file name.
    """
    p = Path(path)
    source = p.name if p.name else str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: cannot read the scenario file: {exc}") from exc
    return _parse_text(text, source, json_=p.suffix.lower() == ".json")


def _parse_text(text: str, source: str, *, json_: bool = False) -> Scenario:
    if json_:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
    else:
        try:
            data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = exc.problem or exc.context or "syntax error"
            raise ScenarioError(f"{source}: invalid YAML{where}: {what}") from exc
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{source}: invalid YAML: {exc}") from exc
    return parse_scenario(data, source)


def load_seed_scenario() -> Scenario:
    """The shipped ``seed`` scenario (``sim/data/seed_scenario.yaml``)."""
    text = (resources.files("sim") / "data" / "seed_scenario.yaml").read_text(encoding="utf-8")
    return _parse_text(text, "seed_scenario.yaml")


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (pydantic's validation schema)."""
    return Scenario.model_json_schema()
