"""In-process overhead of the live router per routed call, import time and memory.

Routes calls through :class:`router.live.Router` against ``httpx.MockTransport``
(an in-process transport: no sockets), so what is measured is our own cost:
policy, provider request building and response parsing, JSON validation of the
answer, and the asyncio plumbing. ``import router`` time and resident memory are
measured in a fresh subprocess (best of three).

Where LiteLLM is installed, its ``Router`` is measured in the same run on the
same number of calls after the same warm-up: one deployment whose
``litellm_params`` carry ``mock_response`` (LiteLLM's own mock: no HTTP client is
involved at all, which if anything flatters LiteLLM, since ours still builds and
parses a real httpx request/response). LiteLLM runs offline
(``LITELLM_OFFLINE_MODE``, ``LITELLM_LOCAL_MODEL_COST_MAP``): it never fetches
its cost map or anything else. Its ``from litellm import Router`` time and
resident memory are measured in a fresh subprocess too.

Time to land on a fallback is measured for both: ours with a primary whose
MockTransport answers 500 (one attempt per model, breaker kept closed), LiteLLM's
with a primary deployment whose mock raises ``InternalServerError`` and
``fallbacks=[{primary: [fallback]}]`` (``num_retries=0``, cooldowns off).

Last line: ``{"us_p50": ..., "us_p99": ..., "import_s": ..., "rss_mib": ...,
"litellm_us_p50": ..., "ratio": ..., ...}`` (``ratio`` = LiteLLM p50 / our p50;
extra keys follow the required ones).

    python bench/live_overhead.py [--calls 5000] [--fallback-calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np

from router import Task, config_from_dict
from router.live import Router

WARMUP = 200
MESSAGES = [{"role": "user", "content": "{}"}]
ANSWER = '{"ok": true}'
BODY = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}
# LiteLLM must never reach the network (cost map, blog posts, beta headers...).
LITELLM_ENV = {
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
}


def _model(mid: str) -> dict:
    return {
        "id": mid,
        "provider": mid,
        "cost_per_task": 0.0001,
        "avg_latency_ms": 100,
        "endpoint": {
            "kind": "openai",
            "base_url": f"http://{mid}.mock.local/v1",
            "model": mid,
            "api_key_env": "BENCH_KEY",
        },
    }


def config(*chain: str):
    return config_from_dict(
        {
            "models": [_model(mid) for mid in chain],
            "routes": {
                "json": {
                    "chain": list(chain),
                    "max_cost_per_task": 1,
                    "max_latency_ms": 10_000,
                    "attempts_per_model": 1,
                }
            },
            "default_route": "json",
            # Keep the primary's breaker closed so every fallback call really tries it.
            "breaker": {
                "consecutive_failures": 10**6,
                "window": 10**6,
                "min_requests": 10**6,
            },
        }
    )


# The mock server's bodies are encoded once: serialising them is the server's cost,
# not the router's (LiteLLM's mock_response likewise costs it no JSON encoding).
_JSON = {"content-type": "application/json"}
_OK = json.dumps(BODY).encode()
_OUTAGE = json.dumps({"error": {"message": "mock outage", "type": "server_error"}}).encode()


def _handler(request: httpx.Request) -> httpx.Response:
    if request.url.host.startswith("primary."):
        return httpx.Response(500, content=_OUTAGE, headers=_JSON)
    return httpx.Response(200, content=_OK, headers=_JSON)


async def _time(call, calls: int) -> np.ndarray:  # noqa: ANN001 - an async callable
    for _ in range(WARMUP):
        await call()
    samples = np.empty(calls)
    perf = time.perf_counter
    for i in range(calls):
        t0 = perf()
        await call()
        samples[i] = perf() - t0
    return samples * 1e6


async def ours(calls: int, *chain: str) -> np.ndarray:
    os.environ.setdefault("BENCH_KEY", "bench-key")
    transport = httpx.MockTransport(_handler)
    async with Router(config(*chain), transport=transport) as router:
        n = 0

        async def call() -> None:
            nonlocal n
            n += 1
            result = await router.route(Task(f"t{n}", "json", payload="{}"))
            assert result.model == chain[-1] and result.output == ANSWER

        return await _time(call, calls)


def litellm_available() -> bool:
    return importlib.util.find_spec("litellm") is not None


async def litellm_router(calls: int, *, fallback: bool) -> np.ndarray:
    os.environ.update(LITELLM_ENV)
    import litellm
    from litellm import Router as LRouter

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    deployments = [
        {
            "model_name": "fallback" if fallback else "m",
            "litellm_params": {"model": "openai/m", "api_key": "x", "mock_response": ANSWER},
        }
    ]
    kwargs: dict = {"num_retries": 0}
    if fallback:
        deployments.append(
            {
                "model_name": "primary",
                "litellm_params": {
                    "model": "openai/p",
                    "api_key": "x",
                    "mock_response": "litellm.InternalServerError",
                },
            }
        )
        kwargs |= {"fallbacks": [{"primary": ["fallback"]}], "disable_cooldowns": True}
    router = LRouter(model_list=deployments, **kwargs)
    model = "primary" if fallback else "m"

    async def call() -> None:
        response = await router.acompletion(model=model, messages=MESSAGES)
        assert response.choices[0].message.content == ANSWER

    return await _time(call, calls)


def import_cost(statement: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Best-of-3 (seconds, MiB resident after) of ``statement`` in a fresh interpreter."""
    code = (
        f"import time,resource;t=time.perf_counter();{statement};"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    best: tuple[float, float] | None = None
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **(env or {})},
        ).stdout.split()
        pair = (float(out[-2]), float(out[-1]))
        best = pair if best is None or pair[0] < best[0] else best
    assert best is not None
    return best


def p(samples: np.ndarray, q: float) -> float:
    return round(float(np.percentile(samples, q)), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000, help="timed calls per router")
    ap.add_argument("--fallback-calls", type=int, default=500, help="timed fallback calls")
    args = ap.parse_args()

    us = asyncio.run(ours(args.calls, "m"))
    us_fb = asyncio.run(ours(args.fallback_calls, "primary", "fallback"))
    imp, rss = import_cost("import router")
    out = {"us_p50": p(us, 50), "us_p99": p(us, 99), "import_s": round(imp, 3)}
    out["rss_mib"] = round(rss, 1)
    print(
        f"router: p50 {out['us_p50']} us, p99 {out['us_p99']} us per routed call "
        f"(MockTransport, {args.calls} calls)"
    )
    print(f"router: p50 {p(us_fb, 50)} us to land on the fallback after a 500")
    print(f"import router: {imp:.3f} s, {rss:.1f} MiB resident")

    lite = lite_fb = None
    if litellm_available():
        lite = asyncio.run(litellm_router(args.calls, fallback=False))
        lite_fb = asyncio.run(litellm_router(args.fallback_calls, fallback=True))
        limp, lrss = import_cost("from litellm import Router", LITELLM_ENV)
        import litellm

        version = getattr(litellm, "__version__", None)
        if version is None:
            from importlib.metadata import version as dist_version

            version = dist_version("litellm")
        print(
            f"LiteLLM {version} Router: p50 {p(lite, 50)} us, p99 {p(lite, 99)} us per "
            f"mocked call; ratio {p(lite, 50) / out['us_p50']:.1f}x"
        )
        print(f"LiteLLM Router: p50 {p(lite_fb, 50)} us to land on the fallback deployment")
        print(f"from litellm import Router: {limp:.3f} s, {lrss:.1f} MiB resident")
    else:
        print("LiteLLM not installed: pip install -e '.[litellm]' to measure it in the same run")

    out["litellm_us_p50"] = p(lite, 50) if lite is not None else None
    out["ratio"] = round(p(lite, 50) / out["us_p50"], 1) if lite is not None else None
    out["us_fallback_p50"] = p(us_fb, 50)
    out["litellm_fallback_us_p50"] = p(lite_fb, 50) if lite_fb is not None else None
    if lite is not None:
        out["litellm_us_p99"] = p(lite, 99)
        out["litellm_import_s"] = round(limp, 3)
        out["litellm_rss_mib"] = round(lrss, 1)
        out["litellm_version"] = version
    print(json.dumps(out))


if __name__ == "__main__":
    main()
