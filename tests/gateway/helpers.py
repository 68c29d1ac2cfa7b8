"""Helpers of the gateway tests (configs, polling, reading metrics and the ledger)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from router import RouterConfig, config_from_dict
from router.gateway import GatewayServer
from router.testing_http import Json, openai_completion

#: The provider key every upstream endpoint of these tests reads (never to be leaked).
PROVIDER_KEY_ENV = "COSTROUTE_TEST_PROVIDER_KEY"
PROVIDER_KEY = "sk-test-PROVIDER-SECRET-5e1f0a9c7b3d"

OK = Json(openai_completion('{"ok": true}', prompt_tokens=11, completion_tokens=7, model="up-m"))


def endpoint(url: str, kind: str = "openai", **kw: Any) -> dict[str, Any]:
    """An endpoint of a ScriptedServer ``url`` (its own base, no /v1 for anthropic)."""
    base = f"{url}/v1" if kind == "openai" else url
    return {"kind": kind, "base_url": base, "model": "up-m", "api_key_env": PROVIDER_KEY_ENV, **kw}


def make_config(
    models: dict[str, dict[str, Any]],
    routes: dict[str, list[str]] | None = None,
    *,
    default: str | None = None,
    route: dict[str, Any] | None = None,
    **top: Any,
) -> RouterConfig:
    """A config with one model per entry of ``models`` (id -> endpoint dict) costing
    $0.01 a task, and ``routes`` (name -> chain; default: one route ``default`` over
    every model in order). ``route`` adds settings to every route."""
    routes = routes or {"default": list(models)}
    data: dict[str, Any] = {
        "models": [
            {
                "id": mid,
                "provider": f"prov-{mid}",
                "cost_per_task": 0.01,
                "avg_latency_ms": 50,
                "endpoint": ep,
            }
            for mid, ep in models.items()
        ],
        "routes": {
            name: {
                "chain": chain,
                "max_cost_per_task": 1.0,
                "max_latency_ms": 8000,
                "attempt_timeout_ms": 5000,
                "attempts_per_model": 1,
                **(route or {}),
            }
            for name, chain in routes.items()
        },
        "default_route": default or next(iter(routes)),
        **top,
    }
    return config_from_dict(data)


def wait_for(check: Callable[[], bool], timeout_s: float = 3.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def ledger_state(gw: GatewayServer) -> tuple[float, dict[int, Any]]:
    """(reserved_total, holds) of the gateway's ledger, read in its loop."""
    ledger = gw.gateway.router.policy.ledger
    return gw.call(lambda: (ledger.reserved_total, dict(ledger.holds)))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, rest = head.partition("{")
        if sample != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return 0.0


def scrape(gw: GatewayServer, name: str, expected: float, **labels: str) -> str:
    """The /metrics text once sample ``name{labels}`` reads ``expected`` (the request
    counters are bumped after the response is out, so they may trail the client)."""
    import httpx

    text = ""

    def done() -> bool:
        nonlocal text
        text = httpx.get(gw.url + "/metrics").text
        return metric(text, name, **labels) == expected

    wait_for(done, what=f"{name}{labels} == {expected}")
    return text
