"""The router's configuration: model profiles, routes, breaker, budget.

One schema serves hand-written configs, the shipped seed config and the
optimizer's exports. Load and save YAML, JSON or TOML with :func:`load_config`
and :func:`save_config`; :func:`json_schema` publishes the schema. Every
validation failure becomes a one-line :class:`~router.errors.ConfigError` that
names the field path and the bad value.

Units follow the source article: latencies in milliseconds, prices in USD.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.errors import ConfigError
from router.providers.endpoint import Endpoint
from router.task import ROUTE_ALIASES

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False)


class ModelProfile(_Strict):
    """What the router knows about one model before it calls it.

    ``completion_rate`` is the overall share of tasks completed;
    ``completion_by_type`` refines it per task type. ``cost_per_task`` is the
    expected cost of one task; when ``input_per_mtok``/``output_per_mtok`` are
    given the router projects a task's cost from its token sizes instead.
    ``None`` means the source gives no figure (the router then neither filters
    nor scores on it, see :mod:`router.scoring`).
    """

    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    completion_rate: Probability | None = None
    completion_by_type: dict[str, Probability] = Field(default_factory=dict)
    cost_per_task: NonNegativeFloat | None = None
    input_per_mtok: NonNegativeFloat | None = None
    output_per_mtok: NonNegativeFloat | None = None
    avg_latency_ms: PositiveFloat | None = None
    p95_latency_ms: PositiveFloat | None = None
    status: Literal["stable", "preview", "deprecated"] = "stable"
    tags: list[str] = Field(default_factory=list)
    endpoint: Endpoint | None = None
    note: str | None = None

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Projected USD cost of one attempt: token prices when known, else per task."""
        if self.input_per_mtok is not None and self.output_per_mtok is not None:
            return (
                prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
            ) / 1e6
        return self.cost_per_task

    def completion_for(self, task_type: str) -> float | None:
        """Completion probability for a task type (per-type figure, else overall)."""
        return self.completion_by_type.get(task_type, self.completion_rate)


class Backoff(_Strict):
    """Exponential backoff between attempts on the same model.

    Attempt ``n`` (1-based retry count) waits ``min(cap_s, base_s * 2**(n-1))``
    scaled by the jitter: ``full`` draws uniformly in [0, that], ``equal`` in
    [that/2, that], ``none`` waits exactly that.
    """

    base_s: PositiveFloat = 0.25
    cap_s: PositiveFloat = 8.0
    jitter: Literal["full", "equal", "none"] = "full"


class Route(_Strict):
    """How one task type is routed: the chain and the task's limits.

    ``max_latency_ms`` is the SLA of the whole task, failover included: no
    attempt is started that could not end before it. ``attempt_timeout_ms`` caps
    each single attempt. ``ordering="score"`` re-orders the chain's candidates by
    the routing score instead of the written order.
    """

    chain: list[str] = Field(min_length=1)
    max_cost_per_task: PositiveFloat
    max_latency_ms: PositiveFloat
    attempt_timeout_ms: PositiveFloat | None = None
    attempts_per_model: int = Field(default=2, ge=1, le=10)
    backoff: Backoff = Field(default_factory=Backoff)
    ordering: Literal["chain", "score"] = "chain"
    fallback_on_refusal: bool = False

    @model_validator(mode="after")
    def _chain_is_unique(self) -> Route:
        seen: set[str] = set()
        for i, model in enumerate(self.chain):
            if model in seen:
                raise ValueError(f"chain[{i}]: model {model!r} appears twice in one chain")
            seen.add(model)
        return self


class Breaker(_Strict):
    """Circuit breaker settings, one breaker per model.

    Closed → open when ``consecutive_failures`` failures follow each other, or
    when the failure share over the last ``window`` requests reaches
    ``failure_rate`` (once at least ``min_requests`` were seen). The n-th
    consecutive trip stays open ``min(open_cap_s, open_base_s * growth**(n-1))``
    scaled by a uniform jitter in [1 - jitter, 1 + jitter]; then half-open admits
    ``half_open_probes`` calls; a success closes it, a failure re-opens it.
    """

    consecutive_failures: int = Field(default=5, ge=1)
    failure_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    window: int = Field(default=20, ge=1)
    min_requests: int = Field(default=10, ge=1)
    open_base_s: PositiveFloat = 30.0
    growth: Annotated[float, Field(ge=1.0)] = 2.0
    open_cap_s: PositiveFloat = 600.0
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    half_open_probes: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _window_holds_min_requests(self) -> Breaker:
        if self.min_requests > self.window:
            raise ValueError(
                f"min_requests: {self.min_requests} exceeds window {self.window} "
                "(the failure-rate rule could never fire)"
            )
        return self


class Budget(_Strict):
    """Daily spend caps (USD) and the fractions of a cap at which to alert."""

    daily_cap_usd: PositiveFloat | None = None
    per_model_usd: dict[str, PositiveFloat] = Field(default_factory=dict)
    per_provider_usd: dict[str, PositiveFloat] = Field(default_factory=dict)
    alert_fractions: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.5, 0.8, 1.0]
    )


class Health(_Strict):
    """Health statistics: latency EWMA weight and the error-rate window."""

    ewma_alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    error_window: int = Field(default=50, ge=1)


class Scoring(_Strict):
    """Routing score settings.

    ``zero_cost_floor_usd`` replaces a zero (or unknown) cost in the score's
    denominator, so a free model's score is finite: it ranks above paid models of
    similar quality and, among free models, by completion / latency.
    """

    zero_cost_floor_usd: PositiveFloat = 1e-6


class RouterConfig(_Strict):
    """The whole router configuration."""

    version: Literal[1] = 1
    environment: Literal["production", "staging"] = "production"
    models: list[ModelProfile] = Field(min_length=1)
    routes: dict[str, Route] = Field(min_length=1)
    default_route: str
    aliases: dict[str, str] = Field(default_factory=lambda: dict(ROUTE_ALIASES))
    breaker: Breaker = Field(default_factory=Breaker)
    budget: Budget = Field(default_factory=Budget)
    health: Health = Field(default_factory=Health)
    scoring: Scoring = Field(default_factory=Scoring)

    @model_validator(mode="after")
    def _references_resolve(self) -> RouterConfig:
        ids: dict[str, int] = {}
        for i, m in enumerate(self.models):
            if m.id in ids:
                raise ValueError(f"models[{i}].id: model {m.id!r} is defined twice")
            ids[m.id] = i
        known = ", ".join(sorted(ids))
        for name, route in self.routes.items():
            for j, model in enumerate(route.chain):
                if model not in ids:
                    raise ValueError(
                        f"routes.{name}.chain[{j}]: unknown model {model!r} (known: {known})"
                    )
        if self.default_route not in self.routes:
            raise ValueError(
                f"default_route: {self.default_route!r} is not a route "
                f"(routes: {', '.join(sorted(self.routes))})"
            )
        for key in self.budget.per_model_usd:
            if key not in ids:
                raise ValueError(f"budget.per_model_usd.{key}: unknown model {key!r}")
        providers = {m.provider for m in self.models}
        for key in self.budget.per_provider_usd:
            if key not in providers:
                raise ValueError(f"budget.per_provider_usd.{key}: unknown provider {key!r}")
        return self

    def model(self, model_id: str) -> ModelProfile:
        """The profile of ``model_id`` (KeyError if unknown)."""
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(model_id)

    def route_for(self, task_type: str) -> tuple[str, Route]:
        """The route name and route for a task type (alias, then default)."""
        if task_type in self.routes:
            return task_type, self.routes[task_type]
        alias = self.aliases.get(task_type)
        if alias is not None and alias in self.routes:
            return alias, self.routes[alias]
        return self.default_route, self.routes[self.default_route]


# ----------------------------------------------------------------------------- I/O


def _format_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming the first failing field path, the problem and the bad value."""
    err = exc.errors(include_url=False)[0]
    path = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    where = f"{source}: " if source else ""
    if path:
        bad = err.get("input")
        shown = "" if isinstance(bad, dict | list) else f" (got {bad!r})"
        more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
        return f"{where}{path}: {msg}{shown}{more}"
    return f"{where}{msg}"


def config_from_dict(data: Mapping[str, Any], source: str = "") -> RouterConfig:
    """Validate a mapping into a :class:`RouterConfig` or raise a one-line ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return RouterConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def _parse(text: str, suffix: str, source: str) -> Any:
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{source}: not valid {suffix[1:].upper()}: {first}") from exc
    raise ConfigError(
        f"{source}: unknown config format {suffix!r} (expected .yaml, .json or .toml)"
    )


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Load a config from a YAML, JSON or TOML file (by extension)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from exc
    return config_from_dict(_parse(text, p.suffix.lower(), str(p)) or {}, str(p))


def dump_config(config: RouterConfig, fmt: str) -> str:
    """Serialise a config to ``yaml``, ``json`` or ``toml`` text (None fields dropped)."""
    data = config.model_dump(mode="json", exclude_none=True)
    if fmt in ("yaml", "yml"):
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "toml":
        return _to_toml(data)
    raise ConfigError(f"unknown config format {fmt!r} (expected yaml, json or toml)")


def save_config(config: RouterConfig, path: str | os.PathLike[str]) -> Path:
    """Write a config atomically (temp file + rename); the format follows the extension."""
    p = Path(path)
    text = dump_config(config, p.suffix.lower().lstrip("."))
    atomic_write_text(p, text)
    return p


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of :class:`RouterConfig`."""
    return RouterConfig.model_json_schema()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ConfigError(f"cannot write {type(v).__name__} to TOML")


def _to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A small TOML writer for this schema (stdlib has a reader only)."""
    scalars: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        qkey = json.dumps(key) if not key.replace("_", "").replace("-", "").isalnum() else key
        full = f"{prefix}.{qkey}" if prefix else qkey
        if isinstance(value, dict) and value and all(isinstance(x, dict) for x in value.values()):
            tables.append(_to_toml(value, full))
        elif isinstance(value, dict):
            tables.append(
                f"[{full}]\n" + "".join(f"{_k(k)} = {_toml_value(x)}\n" for k, x in value.items())
            )
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                tables.append(f"[[{full}]]\n" + _inline_table_body(item))
        else:
            scalars.append(f"{qkey} = {_toml_value(value)}\n")
    head = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(scalars)
    return head + "\n".join(tables)


def _k(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _inline_table_body(item: Mapping[str, Any]) -> str:
    return "".join(f"{_k(k)} = {_toml_value(v)}\n" for k, v in item.items())
