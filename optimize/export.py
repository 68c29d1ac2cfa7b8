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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from router import RouterConfig, dump_config
from router.config import ModelProfile, atomic_write_text
from router.errors import InputError

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
    """The text of an export in ``fmt`` (router: YAML/JSON/TOML by ``suffix``)."""
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
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
