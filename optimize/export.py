"""Exporting a trial: the router's own config format, or a LiteLLM proxy ``config.yaml``.

The router format is exactly what :func:`router.load_config` and
:meth:`router.live.Router.from_config` read, so a tuned config goes live unchanged.

The LiteLLM format maps each route to a model group named after the route: the
chain's first model is the group's deployment and each fallback is a group of
its own (``<route>/fallback-<n>``) listed in ``router_settings.fallbacks`` (and
in ``context_window_fallbacks``, since the router falls back on a prompt too
long for a model), so an agent that calls ``model="sql_query"`` through a
LiteLLM proxy gets the tuned chain. What LiteLLM can express is carried
(:func:`to_litellm`): per-deployment timeouts (the route's attempt timeout),
cooldown and budget (``max_budget``/``budget_duration`` from
``budget.per_model_usd``), context windows (``model_info.max_input_tokens`` with
``enable_pre_call_checks``), retries per route and error class
(``model_group_retry_policy`` from ``attempts_per_model`` and ``retry_on``), the
breaker's ``allowed_fails``/``cooldown_time``, provider budgets
(``provider_budget_config``) and the daily cap (``litellm_settings.max_budget``).
What it cannot express (per-task cost caps, latency limits, validation, preview
filtering, score ordering, the quality filter, the breaker's rate window and
counted kinds, ...) is listed by :func:`litellm_losses`, written as the file's
header comment and printed by ``optimize export``. API keys are written as
``os.environ/NAME`` references, never as values.

A header (``header=``) is written as ``#`` comment lines at the top of a YAML or
TOML file; JSON has no comments and the router's schema accepts no extra key, so
a header cannot go into a JSON router config (:class:`InputError`).

Both formats round the tuned settings to a precision a person would write
(:func:`round_config`): milliseconds to whole numbers, costs to 4 significant
digits, rates and seconds to 3. The search space rounds every config it builds
the same way, so the exported file is exactly the config the study scored.

Endpoints (how to reach each model) are the base config's, and
:func:`merge_endpoints` adds or replaces them from a mapping of model id to
:class:`~router.providers.endpoint.Endpoint` (``--endpoints FILE``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router import RouterConfig, config_from_dict, dump_config
from router.config import ModelProfile, atomic_write_text
from router.errors import InputError
from router.providers.endpoint import Endpoint

FORMATS: tuple[str, ...] = ("router", "litellm")

#: LiteLLM's provider prefixes for the providers our catalog names.
_LITELLM_PREFIX = {
    "openai": "openai",
    "anthropic": "anthropic",
    "xai": "xai",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "google": "gemini",
    "openrouter": "openrouter",
    "qwen": "dashscope",
    "alibaba": "dashscope",
}


# ----------------------------------------------------------------- precision
def _significant(v: float, digits: int) -> float:
    """``v`` rounded to ``digits`` significant digits (0 and non-finite values unchanged)."""
    if v == 0 or not math.isfinite(v):
        return v
    return float(f"{v:.{digits}g}")


def round_setting(key: str, v: float) -> float:
    """One setting rounded by what it measures (its name's suffix).

    ``*_ms``: whole milliseconds (3 significant digits below 100 ms); ``*_usd``
    and ``max_cost_*``: 4 significant digits; ``*_s``, rates and everything
    else: 3 significant digits. Rounding is monotone, so ``cap >= base`` and
    ``timeout <= limit`` relations between settings of one kind survive it, and
    idempotent, so a rounded config rounds to itself.
    """
    if key.endswith("_ms"):
        return float(round(v)) if abs(v) >= 100 else _significant(v, 3)
    if key.endswith("_usd") or key.startswith("max_cost"):
        return _significant(v, 4)
    return _significant(v, 3)


def _round_floats(data: Any, key: str = "") -> Any:
    if isinstance(data, float):
        return round_setting(key, data)
    if isinstance(data, dict):
        # A mapping of names to amounts (budget.per_model_usd) takes its own unit.
        amounts = key.endswith("_usd")
        return {k: _round_floats(v, key if amounts else k) for k, v in data.items()}
    if isinstance(data, list):
        return [_round_floats(v, key) for v in data]
    return data


def round_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict (``model_dump(mode="json")``) with its tunable settings rounded.

    Rounded: every float of ``routes``, ``breaker`` and ``budget``. Model
    profiles (prices, measured rates) and the other sections are data the user
    wrote and are left as they are.
    """
    out = dict(data)
    for section in ("routes", "breaker", "budget"):
        if isinstance(out.get(section), dict):
            out[section] = _round_floats(out[section], section)
    return out


def round_config(config: RouterConfig) -> RouterConfig:
    """The config with its tuned settings rounded (see :func:`round_settings`)."""
    data = round_settings(config.model_dump(mode="json"))
    return config_from_dict(data, source="rounded config")


# ----------------------------------------------------------------- endpoints
def load_endpoints(path: str | Path) -> dict[str, Endpoint]:
    """Read a YAML (or JSON) mapping of model id → endpoint; one-line errors name the entry."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--endpoints: {p}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise InputError(f"--endpoints: {p}:{where} not valid YAML") from None
    if not isinstance(data, Mapping) or not data:
        raise InputError(
            f"--endpoints: {p}: expected a mapping of model id -> endpoint "
            "(base_url, model, api_key_env, ...)"
        )
    out: dict[str, Endpoint] = {}
    for model_id, spec in data.items():
        try:
            out[str(model_id)] = Endpoint.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            where = f"{model_id}.{loc}" if loc else str(model_id)
            raise InputError(f"--endpoints: {p}: {where}: {first['msg']}") from None
    return out


def merge_endpoints(config: RouterConfig, endpoints: Mapping[str, Endpoint]) -> RouterConfig:
    """The config with these models' endpoints added or replaced (the others kept)."""
    known = [m.id for m in config.models]
    for model_id in endpoints:
        if model_id not in known:
            raise InputError(
                f"--endpoints: unknown model {model_id!r} (the config has {', '.join(known)})"
            )
    data = config.model_dump(mode="json")
    for m in data["models"]:
        if m["id"] in endpoints:
            m["endpoint"] = json.loads(endpoints[m["id"]].model_dump_json())
    return config_from_dict(data, source="config with endpoints")


# ----------------------------------------------------------------- LiteLLM
def _litellm_params(m: ModelProfile) -> dict[str, Any]:
    ep = m.endpoint
    if ep is not None and ep.kind == "openai":
        params: dict[str, Any] = {"model": f"openai/{ep.model}", "api_base": ep.base_url}
    elif ep is not None and ep.kind == "anthropic":
        params = {"model": f"anthropic/{ep.model}"}
        if ep.base_url:
            params["api_base"] = ep.base_url
    elif ep is not None:  # litellm: the endpoint's model is already a LiteLLM model string
        params = {"model": ep.model}
        if ep.base_url:
            params["api_base"] = ep.base_url
    else:
        prefix = _LITELLM_PREFIX.get(m.provider, m.provider)
        params = {"model": f"{prefix}/{m.id}"}
    if ep is not None and ep.api_key_env:
        params["api_key"] = f"os.environ/{ep.api_key_env}"
    elif ep is None:
        params["api_key"] = f"os.environ/{m.provider.upper().replace('-', '_')}_API_KEY"
    return params


#: LiteLLM RetryPolicy fields and the failure kinds (router.outcome.ErrorKind) whose
#: exception class they count. A field is ``attempts_per_model - 1`` when any of its
#: kinds is in the route's ``retry_on``, else 0.
_RETRY_FIELDS: dict[str, tuple[str, ...]] = {
    "TimeoutErrorRetries": ("timeout", "first_token_timeout"),
    "RateLimitErrorRetries": ("rate_limited",),
    "InternalServerErrorRetries": ("server_error",),
    "ServiceUnavailableErrorRetries": ("server_error",),
    "BadRequestErrorRetries": ("bad_request", "context_length"),
    "AuthenticationErrorRetries": ("auth",),
    "ContentPolicyViolationErrorRetries": ("content_filter",),
}


def _groups(name: str, route: Any) -> list[str]:
    return [name if i == 0 else f"{name}/fallback-{i}" for i in range(len(route.chain))]


def to_litellm(config: RouterConfig) -> dict[str, Any]:
    """A LiteLLM proxy config (``model_list``, ``router_settings``, ``litellm_settings``)
    carrying what LiteLLM can express of a router config (module docstring); the rest
    is listed by :func:`litellm_losses`."""
    profiles = {m.id: m for m in config.models}
    per_model = config.budget.per_model_usd
    model_list: list[dict[str, Any]] = []
    fallbacks: list[dict[str, list[str]]] = []
    refusal: list[dict[str, list[str]]] = []
    retry_policy: dict[str, dict[str, int]] = {}
    windows = False
    for name, route in config.routes.items():
        groups = _groups(name, route)
        retry_on = {str(k) for k in route.retry_on}
        policy = {
            field: (route.attempts_per_model - 1) if retry_on & set(kinds) else 0
            for field, kinds in _RETRY_FIELDS.items()
        }
        timeout = (route.attempt_timeout_ms or route.max_latency_ms) / 1000.0
        for group, mid in zip(groups, route.chain, strict=True):
            m = profiles[mid]
            params = _litellm_params(m)
            params["timeout"] = timeout
            if m.input_per_mtok is not None and m.output_per_mtok is not None:
                params["input_cost_per_token"] = m.input_per_mtok / 1e6
                params["output_cost_per_token"] = m.output_per_mtok / 1e6
            if mid in per_model:
                params["max_budget"] = per_model[mid]
                params["budget_duration"] = "1d"
            info: dict[str, Any] = {"id": f"{group}:{mid}", "base_model": mid}
            if m.context_window is not None:
                info["max_input_tokens"] = m.context_window
                windows = True
            model_list.append({"model_name": group, "litellm_params": params, "model_info": info})
            retry_policy[group] = dict(policy)
        if len(groups) > 1:
            fallbacks.append({groups[0]: groups[1:]})
            if route.fallback_on_refusal:
                refusal.append({groups[0]: groups[1:]})
    routes = list(config.routes.values())
    timeouts = [r.attempt_timeout_ms or r.max_latency_ms for r in routes]
    settings: dict[str, Any] = {
        "routing_strategy": "simple-shuffle",
        "fallbacks": fallbacks,
        "context_window_fallbacks": [{k: list(v) for k, v in f.items()} for f in fallbacks],
        "num_retries": max(r.attempts_per_model for r in routes) - 1,
        "model_group_retry_policy": retry_policy,
        "timeout": max(timeouts) / 1000.0,
        "allowed_fails": config.breaker.consecutive_failures,
        "cooldown_time": config.breaker.open_base_s,
        "retry_after": min(r.backoff.base_s for r in routes),
    }
    if refusal:
        settings["content_policy_fallbacks"] = refusal
    if windows:
        settings["enable_pre_call_checks"] = True
    if config.budget.per_provider_usd:
        settings["provider_budget_config"] = {
            _LITELLM_PREFIX.get(p, p): {"budget_limit": usd, "time_period": "1d"}
            for p, usd in config.budget.per_provider_usd.items()
        }
    out: dict[str, Any] = {"model_list": model_list, "router_settings": settings}
    if config.budget.daily_cap_usd is not None:
        out["litellm_settings"] = {
            "max_budget": config.budget.daily_cap_usd,
            "budget_duration": "1d",
        }
    return out


def _named(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )


def litellm_losses(config: RouterConfig) -> list[str]:
    """The settings of ``config`` a LiteLLM export cannot carry, one line each.

    Each line names the setting, its values here, and what LiteLLM does instead.
    Settings at values LiteLLM matches anyway (no score ordering, no quality
    filter, no preview model in a chain) are not listed.
    """
    routes = config.routes
    profiles = {m.id: m for m in config.models}
    out = [
        "routes.*.max_cost_per_task (per-task cost caps: "
        + _named({n: r.max_cost_per_task for n, r in routes.items()})
        + "): LiteLLM has no per-request cost cap; it calls every deployment whatever the "
        "task's tokens would cost",
        "routes.*.max_latency_ms (whole-task SLAs, failover included: "
        + _named({n: r.max_latency_ms for n, r in routes.items()})
        + " ms): only each attempt's timeout is carried; retries and fallbacks can run past "
        "the SLA, and models are not skipped for expected latency (health.ewma_alpha, "
        "latency_cooldown_s)",
        "validation: answers are not checked against the task type (JSON, SQL, regex...), "
        "so a wrong answer is returned instead of retried or fallen back from; "
        "routes.*.buffer has no effect",
        "routes.*.backoff (exponential, base/cap/jitter): LiteLLM waits retry_after "
        f"({min(r.backoff.base_s for r in routes.values()):g} s, the smallest base) then "
        "its own backoff",
    ]
    retry_notes: dict[str, list[str]] = {}
    for name, r in routes.items():
        retry_on = {str(k) for k in r.retry_on}
        notes = []
        lost = sorted(retry_on & {"malformed", "validation"})
        if lost:
            notes.append(f"{', '.join(lost)} retries (LiteLLM does not check answers)")
        timeouts = retry_on & {"timeout", "first_token_timeout"}
        if len(timeouts) == 1:
            notes.append(
                f"retries {timeouts.pop()} only, but LiteLLM's TimeoutErrorRetries covers "
                "both timeout kinds"
            )
        conn = sorted(retry_on & {"connect", "connection"})
        if conn:
            notes.append(
                f"{', '.join(conn)} retries follow num_retries (no retry-policy field for "
                "connection errors)"
            )
        for note in notes:
            retry_notes.setdefault(note, []).append(name)
    for note, names in retry_notes.items():
        out.append(f"routes.*.retry_on ({', '.join(names)}): {note}")
    scored = [n for n, r in routes.items() if r.ordering == "score"]
    if scored:
        out.append(
            f"routes.*.ordering: score ({', '.join(scored)}): LiteLLM keeps the written chain order"
        )
    quality = {n: r.min_observed_completion for n, r in routes.items() if r.min_observed_completion}
    if quality:
        out.append(
            f"routes.*.min_observed_completion ({_named(quality)}): no quality filter; "
            "models are never skipped for a low observed completion"
        )
    no_refusal = [n for n, r in routes.items() if not r.fallback_on_refusal and len(r.chain) > 1]
    if no_refusal:
        out.append(
            "routes.*.fallback_on_refusal: false (" + ", ".join(no_refusal) + "): a "
            "content-filter refusal still goes through LiteLLM's general fallbacks"
        )
    if config.environment == "production":
        preview = sorted(
            {
                f"{m} ({profiles[m].status})"
                for r in routes.values()
                for m in r.chain
                if profiles[m].status != "stable"
            }
        )
        if preview:
            out.append(
                "environment: production skips preview and deprecated models; LiteLLM "
                f"will call {', '.join(preview)}"
            )
    b = config.breaker
    out.append(
        f"breaker (consecutive_failures {b.consecutive_failures}, failure_rate "
        f"{b.failure_rate:g} over window {b.window}, min_requests {b.min_requests}; "
        f"open {b.open_base_s:g} s, reprobe_s {b.reprobe_s}, growth {b.growth:g}, cap "
        f"{b.open_cap_s:g} s, half_open_probes {b.half_open_probes}): LiteLLM cools a "
        f"deployment down for cooldown_time after allowed_fails failures in a minute; "
        "no failure-rate window, re-probe interval, growth or probes"
    )
    out.append(
        "breaker.count ("
        + ", ".join(sorted(str(k) for k in b.count))
        + "): LiteLLM counts every failed call towards allowed_fails, rate limits and "
        "wrong answers included"
    )
    shared = sorted(
        m for m in config.budget.per_model_usd if sum(m in r.chain for r in routes.values()) > 1
    )
    if shared:
        out.append(
            "budget.per_model_usd: LiteLLM counts a deployment's spend, and "
            + ", ".join(shared)
            + " has a deployment in several routes, each with the whole cap"
        )
    if config.budget.alert_fractions:
        out.append(
            "budget.alert_fractions ("
            + ", ".join(f"{f:g}" for f in config.budget.alert_fractions)
            + "): no budget alerts"
        )
    return out


def header_lines(lines: list[str] | tuple[str, ...]) -> str:
    """``lines`` as ``#`` comment lines (a trailing blank comment line when any)."""
    if not lines:
        return ""
    return "".join(f"# {ln}\n" if ln else "#\n" for ln in lines) + "\n"


def render(
    config: RouterConfig, fmt: str, suffix: str = ".yaml", header: Sequence[str] = ()
) -> str:
    """The text of an export in ``fmt`` (router: YAML/JSON/TOML by ``suffix``), rounded.

    ``header`` lines are written as comments at the top; a LiteLLM export always
    starts with the settings it could not carry (:func:`litellm_losses`).
    """
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    config = round_config(config)
    if fmt == "litellm":
        losses = litellm_losses(config)
        lines = [
            *header,
            "LiteLLM proxy config exported by costroute (optimize export).",
            "Not carried (LiteLLM has no equivalent; the costroute router enforces these):",
            *(f"  - {ln}" for ln in losses),
        ]
        return header_lines(lines) + yaml.safe_dump(to_litellm(config), sort_keys=False)
    kind = {".json": "json", ".toml": "toml"}.get(suffix.lower(), "yaml")
    if header and kind == "json":
        raise InputError(
            "--out: a JSON router config cannot carry the export's warning (JSON has no "
            "comments and the config schema accepts no extra key); write .yaml or .toml"
        )
    return header_lines(list(header)) + dump_config(config, kind)


def write_export(
    config: RouterConfig, path: str | Path, fmt: str = "router", header: Sequence[str] = ()
) -> Path:
    """Write an export atomically (temp file, then rename); ``header``: comment lines."""
    p = Path(path)
    text = render(config, fmt, p.suffix, header)
    if p.is_dir():
        raise InputError(f"--out: {p}: is a directory; expected a file path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, text)
    except OSError as exc:
        raise InputError(f"--out: {p}: cannot write: {exc.strerror or exc}") from None
    return p
