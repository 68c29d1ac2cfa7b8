"""Exporting a trial: the router's own config format, or a LiteLLM proxy ``config.yaml``.

The router format is exactly what :func:`router.load_config` and
:meth:`router.live.Router.from_config` read, so a tuned config goes live unchanged.

The LiteLLM format maps each route to a model group named after the route: the
chain's first model is the group's deployment and each fallback is a group of
its own (``<route>/fallback-<n>``) listed in ``router_settings.fallbacks``, so an
agent that calls ``model="sql_query"`` through a LiteLLM proxy gets the tuned
chain. LiteLLM has one retry, timeout and cooldown setting for the whole
router, so those are taken from the routes (most attempts, longest attempt
timeout) and the breaker (consecutive failures → ``allowed_fails``, open time →
``cooldown_time``). API keys are written as ``os.environ/NAME`` references,
never as values.

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
from collections.abc import Mapping
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


def to_litellm(config: RouterConfig) -> dict[str, Any]:
    """A LiteLLM proxy config (``model_list``, ``router_settings``) for a router config."""
    profiles = {m.id: m for m in config.models}
    model_list: list[dict[str, Any]] = []
    fallbacks: list[dict[str, list[str]]] = []
    for name, route in config.routes.items():
        groups: list[str] = []
        for i, mid in enumerate(route.chain):
            group = name if i == 0 else f"{name}/fallback-{i}"
            groups.append(group)
            m = profiles[mid]
            entry: dict[str, Any] = {
                "model_name": group,
                "litellm_params": _litellm_params(m),
                "model_info": {"id": f"{group}:{mid}", "base_model": mid},
            }
            if route.attempt_timeout_ms is not None:
                entry["litellm_params"]["timeout"] = route.attempt_timeout_ms / 1000.0
            if m.input_per_mtok is not None and m.output_per_mtok is not None:
                entry["litellm_params"]["input_cost_per_token"] = m.input_per_mtok / 1e6
                entry["litellm_params"]["output_cost_per_token"] = m.output_per_mtok / 1e6
            model_list.append(entry)
        if len(groups) > 1:
            fallbacks.append({groups[0]: groups[1:]})
    routes = list(config.routes.values())
    timeouts = [r.attempt_timeout_ms or r.max_latency_ms for r in routes]
    settings: dict[str, Any] = {
        "routing_strategy": "simple-shuffle",
        "fallbacks": fallbacks,
        "num_retries": max(r.attempts_per_model for r in routes) - 1,
        "timeout": max(timeouts) / 1000.0,
        "allowed_fails": config.breaker.consecutive_failures,
        "cooldown_time": config.breaker.open_base_s,
        "retry_after": min(r.backoff.base_s for r in routes),
    }
    out: dict[str, Any] = {"model_list": model_list, "router_settings": settings}
    if config.budget.daily_cap_usd is not None:
        out["litellm_settings"] = {
            "max_budget": config.budget.daily_cap_usd,
            "budget_duration": "1d",
        }
    return out


def render(config: RouterConfig, fmt: str, suffix: str = ".yaml") -> str:
    """The text of an export in ``fmt`` (router: YAML/JSON/TOML by ``suffix``), rounded."""
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    config = round_config(config)
    if fmt == "litellm":
        return yaml.safe_dump(to_litellm(config), sort_keys=False)
    kind = {".json": "json", ".toml": "toml"}.get(suffix.lower(), "yaml")
    return dump_config(config, kind)


def write_export(config: RouterConfig, path: str | Path, fmt: str = "router") -> Path:
    """Write an export atomically (temp file, then rename)."""
    p = Path(path)
    text = render(config, fmt, p.suffix)
    if p.is_dir():
        raise InputError(f"--out: {p}: is a directory; expected a file path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, text)
    except OSError as exc:
        raise InputError(f"--out: {p}: cannot write: {exc.strerror or exc}") from None
    return p
