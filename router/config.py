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

from router.endpoint import Endpoint
from router.errors import ConfigError
from router.outcome import AVAILABILITY_FAILURES, DEFAULT_RETRY_ON, ErrorKind
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
    context_window: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Most prompt tokens the model accepts; a task whose prompt_tokens exceed it is "
            "skipped with reason 'context' (None: no limit known)."
        ),
    )
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
    retry_on: list[ErrorKind] = Field(
        default_factory=lambda: sorted(DEFAULT_RETRY_ON),
        description=(
            "Failure kinds retried on the same model (up to attempts_per_model); any other "
            "kind falls back at once. Default: stalls/total timeouts, 429 (after its "
            "Retry-After), 5xx, resets, malformed bodies and validation failures; not a "
            "first-token timeout or a refused connection."
        ),
    )
    min_observed_completion: Probability | None = Field(
        default=None,
        description=(
            "Skip a model (reason 'quality') whose observed completion for this route, once "
            "quality.min_observations are in, is below this; it is re-admitted after "
            "quality.cooldown_s so that the estimate can recover."
        ),
    )
    buffer: bool = Field(
        default=False,
        description=(
            "Gateway only (`costroute serve`): wait for a model's whole answer and validate "
            "it for the task type before sending any of it, so that a wrong answer can still "
            "be retried or fall back, streamed requests included (for structured task types "
            "such as JSON or SQL). Unbuffered routes stream as the answer arrives and are not "
            "validated."
        ),
    )

    @model_validator(mode="after")
    def _chain_is_unique(self) -> Route:
        seen: set[str] = set()
        for i, model in enumerate(self.chain):
            if model in seen:
                raise ValueError(f"chain[{i}]: model {model!r} appears twice in one chain")
            seen.add(model)
        return self


class Breaker(_Strict):
    """Circuit breaker settings, one breaker per model: an *availability* guard.

    Only the failure kinds in ``count`` feed it (default: first-token timeouts,
    timeouts, 5xx, refused and reset connections, malformed bodies). Wrong answers
    (validation failures, and in the simulator tasks a model did not complete) are a
    *quality* statistic and never open a breaker unless ``validation`` is added here.

    Closed → open when ``consecutive_failures`` counted failures follow each other,
    or when their share over the last ``window`` requests reaches ``failure_rate``
    (once at least ``min_requests`` were seen). A trip from closed stays open
    ``open_base_s``; then half-open admits ``half_open_probes`` calls; a success
    closes it. A failed probe re-opens it for ``reprobe_s`` (a short fixed interval,
    so a recovered provider is noticed soon) or, with ``reprobe_s`` unset, for
    ``min(open_cap_s, open_base_s * growth**(n-1))`` on the n-th consecutive trip.
    Every open time is scaled by a uniform jitter in [1 - jitter, 1 + jitter]. A
    probe whose outcome never arrives frees its slot after ``probe_timeout_s``.

    The defaults: a provider down 30–120 s is probed at ~28 s and then every ~12 s,
    so it is back in use within ~13 s of recovering, while a 60 s outage costs at
    most 3 tripping calls plus 3 probes.
    """

    count: list[ErrorKind] = Field(
        default_factory=lambda: sorted(AVAILABILITY_FAILURES),
        description="Failure kinds that count against a model's availability.",
    )
    consecutive_failures: int = Field(default=3, ge=1)
    failure_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    window: int = Field(default=20, ge=1)
    min_requests: int = Field(default=10, ge=1)
    open_base_s: PositiveFloat = 28.0
    reprobe_s: PositiveFloat | None = 12.0
    growth: Annotated[float, Field(ge=1.0)] = 2.0
    open_cap_s: PositiveFloat = 600.0
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    half_open_probes: int = Field(default=1, ge=1)
    probe_timeout_s: PositiveFloat = 120.0

    @model_validator(mode="after")
    def _window_holds_min_requests(self) -> Breaker:
        if self.min_requests > self.window:
            raise ValueError(
                f"min_requests: {self.min_requests} exceeds window {self.window} "
                "(the failure-rate rule could never fire)"
            )
        bad = [k.value for k in self.count if k in (ErrorKind.OK,)]
        if bad:
            raise ValueError("count: 'ok' is not a failure kind")
        return self


class Budget(_Strict):
    """Daily spend caps (USD) and the fractions of a cap at which to alert.

    A call is planned only if it fits every cap that applies to it: the global
    ``daily_cap_usd``, its model's (``per_model_usd``), its provider's
    (``per_provider_usd``) and its task type's (``per_task_type_usd``, keyed by a
    task type or route name the config knows). With ``shared:`` the caps hold across
    every replica.
    """

    daily_cap_usd: PositiveFloat | None = None
    per_model_usd: dict[str, PositiveFloat] = Field(default_factory=dict)
    per_provider_usd: dict[str, PositiveFloat] = Field(default_factory=dict)
    per_task_type_usd: dict[str, PositiveFloat] = Field(default_factory=dict)
    alert_fractions: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.5, 0.8, 1.0]
    )


class Health(_Strict):
    """Health statistics.

    ``ewma_alpha`` weighs each new latency sample in the EWMA kept per (model,
    route); ``error_window`` is the rolling error-rate window per model. A model
    skipped because its *observed* latency exceeds a route's limit is re-admitted
    after ``latency_cooldown_s`` with its estimate reset to the profile's, so one
    slow sample can never exclude it for good.
    """

    ewma_alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    error_window: int = Field(default=50, ge=1)
    latency_cooldown_s: PositiveFloat = 60.0


class Quality(_Strict):
    """Observed completion per (model, route): how often a model's answers pass.

    A Beta posterior whose prior is the profile's completion figure for the route's
    task type (worth ``prior_weight`` observations; 0.5 when the profile has none),
    with exponential forgetting over about ``window`` observations so that it follows
    a model that changes. It is used once ``min_observations`` are in: by
    ``ordering: score`` in place of the profile's figure, and by a route's
    ``min_observed_completion``; a model skipped for quality is re-admitted after
    ``cooldown_s`` with its observations forgotten.
    """

    prior_weight: NonNegativeFloat = 10.0
    min_observations: int = Field(default=20, ge=1)
    window: int = Field(default=200, ge=2)
    cooldown_s: PositiveFloat = 300.0


class Scoring(_Strict):
    """Routing score settings.

    ``zero_cost_floor_usd`` replaces a zero (or unknown) cost in the score's
    denominator, so a free model's score is finite: it ranks above paid models of
    similar quality and, among free models, by completion / latency.
    """

    zero_cost_floor_usd: PositiveFloat = 1e-6


class Shared(_Strict):
    """State shared by several replicas of the router (gateways, live routers):
    breakers, spend against the caps and quality statistics, in Redis.

    ``url`` is a ``redis://`` (or ``rediss://``, ``unix://``) URL *without* a password;
    the password, when the server needs one, is read from the environment variable
    ``password_env`` and never written, logged or shown (URLs are shown masked). Keys
    are prefixed with ``namespace`` (several deployments can share one server).

    While the store is unreachable every replica keeps routing on its own state and
    spends at most ``local_fraction`` of what was left under each cap when it lost the
    store (set it to 1/replicas or less to keep the caps through an outage); on
    reconnect its spend is added to the shared ledger. A reservation whose replica
    stopped renewing it (a crash) expires after ``lease_s``. Quality and latency
    statistics are merged every ``stats_interval_s``; breaker states are also re-read
    every ``sync_interval_s`` (transitions are pushed at once). ``timeout_s`` bounds
    each store operation on the request path; ``retry_s`` is how often a lost store is
    tried again.
    """

    url: str = Field(min_length=1)
    password_env: str | None = None
    namespace: str = Field(default="costroute", pattern=r"^[A-Za-z0-9_.:-]+$")
    local_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25
    lease_s: PositiveFloat = 120.0
    sync_interval_s: PositiveFloat = 1.0
    stats_interval_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 0.25
    retry_s: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _no_password_in_url(self) -> Shared:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"url: expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}"
            )
        if parts.password:
            raise ValueError(
                "url: contains a password; put it in an environment variable and name it "
                "in password_env"
            )
        return self


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
    quality: Quality = Field(default_factory=Quality)
    scoring: Scoring = Field(default_factory=Scoring)
    shared: Shared | None = Field(
        default=None,
        description=(
            "State shared by several replicas (Redis); None: each process keeps its own "
            "(the default, and the reference behaviour)."
        ),
    )

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
        task_types = set(self.routes) | set(self.aliases)
        for key in self.budget.per_task_type_usd:
            if key not in task_types:
                raise ValueError(
                    f"budget.per_task_type_usd.{key}: unknown task type {key!r} "
                    "(expected a route name or an alias)"
                )
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
    """One line: the first problem (unknown fields first), its path, the bad value, and
    where the other problems are (``[+2 more: models[3].id, breaker.window]``).

    An unknown field gets the closest known field name as a hint, so a typo such as
    ``chian:`` reads ``routes.default.chian: unknown field (did you mean 'chain'?)``.
    """
    import difflib
    import types
    import typing

    def path_of(loc: tuple[Any, ...]) -> str:
        text = ""
        for item in loc:
            text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else item)
        return text

    def concrete(tp: Any) -> list[Any]:
        """``tp`` without ``Annotated`` and ``None``, a union split into its members."""
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            return [c for a in typing.get_args(tp) if a is not type(None) for c in concrete(a)]
        return [tp]

    def fields_at(loc: tuple[Any, ...]) -> list[str]:
        """The field names of the model that holds ``loc`` (walked from RouterConfig)."""
        current: list[Any] = [RouterConfig]
        for item in loc:
            following: list[Any] = []
            for tp in (c for t in current for c in concrete(t)):
                origin = typing.get_origin(tp)
                if origin is dict:
                    following.append(typing.get_args(tp)[1])
                elif origin is list:
                    following.append(typing.get_args(tp)[0])
                elif isinstance(tp, type) and issubclass(tp, BaseModel):
                    field = tp.model_fields.get(item) if isinstance(item, str) else None
                    if field is not None:
                        following.append(field.annotation)
            current = following
        names: list[str] = []
        for tp in (c for t in current for c in concrete(t)):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                names += [n for n in tp.model_fields if n not in names]
        return names

    def describe(err: Any) -> tuple[str, str]:
        loc = tuple(err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            known = fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            if close:
                msg = f"unknown field (did you mean {close[0]!r}?)"
            elif known:
                msg = f"unknown field (expected one of: {', '.join(known)})"
            else:
                msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg += f" (got {err['input']!r})"
        # A model validator's message names its own sub-path first ("chain[1]: ...").
        return path_of(loc), msg

    errors = exc.errors(include_url=False)
    # Unknown fields first: a typo also makes the intended field "missing", and the
    # typo is the thing to fix.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    where = f"{source}: " if source else ""
    path, msg = describe(errors[0])
    first = f"{where}{path}: {msg}" if path else f"{where}{msg}"
    if len(errors) == 1:
        return first
    others = []
    for err in errors[1:]:
        p, m = describe(err)
        others.append(p or m.split(":", 1)[0])
    shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    return f"{first} [+{len(others)} more: {shown}]"


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


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate mapping keys: PyYAML keeps the last
    of two equal keys silently (a route or a model defined twice would quietly lose
    one). Shared by the config and scenario loaders."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,  # type: ignore[arg-type]
)


def _parse(text: str, suffix: str, source: str) -> Any:
    """Parse config text by format; a syntax error names the line and column."""
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{source}: not valid YAML{at}: {what}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        # TOML's message already ends with "(at line L, column C)".
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
