"""In-process overhead of the live router per routed call, import time and memory.

Routes calls through :class:`router.live.Router` against ``httpx.MockTransport``
(an in-process transport: no sockets), so what is measured is our own cost:
policy, provider request building and response parsing, validation, and the
asyncio plumbing. ``import router`` time and resident memory are measured in a
fresh subprocess. Where LiteLLM is installed, its Router on a mocked response
is measured in the same run and the ratio reported. Last line:
``{"us_p50": ..., "us_p99": ..., "import_s": ..., "rss_mib": ...,
"litellm_us_p50": ..., "ratio": ...}``

    python bench/live_overhead.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np

from router import Task, config_from_dict
from router.live import Router

BODY = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"ok": true}'},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}


def config():
    return config_from_dict(
        {
            "models": [
                {"id": "m", "provider": "p", "cost_per_task": 0.0001, "avg_latency_ms": 100,
                 "endpoint": {"kind": "openai", "base_url": "http://mock.local/v1", "model": "m",
                              "api_key_env": "BENCH_KEY"}}
            ],
            "routes": {"json": {"chain": ["m"], "max_cost_per_task": 1, "max_latency_ms": 10_000}},
            "default_route": "json",
        }
    )


async def ours(calls: int) -> np.ndarray:
    os.environ.setdefault("BENCH_KEY", "bench-key")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=BODY))
    samples = np.empty(calls)
    async with Router(config(), transport=transport) as router:
        for _ in range(200):  # warm-up
            await router.route(Task("w", "json", payload="{}"))
        for i in range(calls):
            t0 = time.perf_counter()
            await router.route(Task(f"t{i}", "json", payload="{}"))
            samples[i] = time.perf_counter() - t0
    return samples * 1e6


async def litellm_router(calls: int) -> np.ndarray | None:
    try:
        import litellm  # noqa: F401
        from litellm import Router as LRouter
    except ImportError:
        return None
    r = LRouter(model_list=[{"model_name": "m", "litellm_params": {
        "model": "openai/m", "api_key": "x", "mock_response": '{"ok": true}'}}])
    samples = np.empty(calls)
    for _ in range(50):
        await r.acompletion(model="m", messages=[{"role": "user", "content": "{}"}])
    for i in range(calls):
        t0 = time.perf_counter()
        await r.acompletion(model="m", messages=[{"role": "user", "content": "{}"}])
        samples[i] = time.perf_counter() - t0
    return samples * 1e6


def import_cost() -> tuple[float, float]:
    code = (
        "import time,resource;t=time.perf_counter();import router;"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    best = None
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        pair = (float(out[0]), float(out[1]))
        best = pair if best is None or pair[0] < best[0] else best
    return best  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()
    us = asyncio.run(ours(args.calls))
    imp, rss = import_cost()
    lite = asyncio.run(litellm_router(min(args.calls, 1000)))
    p50, p99 = float(np.percentile(us, 50)), float(np.percentile(us, 99))
    print(f"router: p50 {p50:.1f} us, p99 {p99:.1f} us per routed call (MockTransport)")
    print(f"import router: {imp:.3f} s, {rss:.1f} MiB resident")
    lp50 = float(np.percentile(lite, 50)) if lite is not None else None
    if lp50 is not None:
        print(f"LiteLLM Router: p50 {lp50:.1f} us per mocked call; ratio {lp50 / p50:.1f}x")
    else:
        print("LiteLLM not installed: pip install -e '.[litellm]' to measure it in the same run")
    print(json.dumps({
        "us_p50": round(p50, 1), "us_p99": round(p99, 1), "import_s": round(imp, 3),
        "rss_mib": round(rss, 1), "litellm_us_p50": round(lp50, 1) if lp50 else None,
        "ratio": round(lp50 / p50, 1) if lp50 else None,
    }))


if __name__ == "__main__":
    main()
