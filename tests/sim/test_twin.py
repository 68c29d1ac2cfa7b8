"""The provider twin over real loopback HTTP: faults, determinism, the router, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from router import Task, TaskResult, config_from_dict
from router.live import Router, RoutingError
from router.outcome import ErrorKind
from router.providers import ProviderError
from router.providers.endpoint import Endpoint
from router.providers.openai import OpenAIProvider
from router.task import TASK_TYPES
from router.validation import validate
from sim.cli import app
from sim.twin.server import TwinServer, answer_text, twin_tag
from sim.world.scenario import Scenario, load_seed_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]

# An outage process that is down from t = 0 for ~1e9 s (up-times of 1 µs between).
ALWAYS_DOWN = {
    "time_between": {"dist": "fixed", "value_s": 1e-6},
    "duration": {"dist": "fixed", "value_s": 1e9},
}


def one_model(**overrides: Any) -> Scenario:
    """A scenario of one model ``m``: completes everything, fixed 0.5 s latency."""
    model = {
        "provider": "p",
        "completion": {"default": 1.0},
        "latency": {"dist": "fixed", "value_s": 0.5},
        "fail_fast_latency_s": 0.5,
        "cost_per_task": 0.001,
        **overrides,
    }
    return parse_scenario({"name": "twin-test", "models": {"m": model}})


def chat(task: int | None = None, text: str = "Return a JSON object.", **body: Any) -> dict:
    content = f"{twin_tag(task, 'json')} {text}" if task is not None else text
    return {"model": "m", "messages": [{"role": "user", "content": content}], **body}


def content(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


async def complete(url: str, **endpoint: Any) -> str:
    """One attempt through the router's own OpenAI provider (its failure kinds)."""
    provider = OpenAIProvider(Endpoint(base_url=url, model="m", **endpoint))
    try:
        done = await provider.complete(
            [{"role": "user", "content": f"{twin_tag(0, 'json')} json please"}], timeout_s=2.0
        )
        return done.text
    finally:
        await provider.aclose()


# ---------------------------------------------------------------------------- faults
def test_rate_limit_answers_429_with_scaled_retry_after_and_resets_each_minute() -> None:
    scn = one_model(rate_limit_rpm=2, retry_after_s=10, latency={"dist": "fixed", "value_s": 0.1})
    with TwinServer(scn, time_scale=0.01) as twin, httpx.Client() as client:
        twin.reset()  # a scenario minute is 0.6 s of wall time from here
        replies = [client.post(f"{twin.url}/chat/completions", json=chat(i)) for i in range(3)]
        assert [r.status_code for r in replies] == [200, 200, 429]
        limited = replies[2]
        assert limited.headers["retry-after"] == "0.1"
        assert limited.headers["retry-after-ms"] == "100"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        time.sleep(0.65)  # the next scenario minute
        assert client.post(f"{twin.url}/chat/completions", json=chat(3)).status_code == 200
        assert twin.served == {"ok": 3, "rate_limited": 1}


def test_rate_limited_attempt_is_waited_by_the_provider_kind() -> None:
    scn = one_model(rate_limit_rpm=1, retry_after_s=2)
    with TwinServer(scn, time_scale=0.01) as twin:
        twin.reset()
        assert asyncio.run(complete(twin.url)) == answer_text("ok", "json")
        with pytest.raises(ProviderError) as info:
            asyncio.run(complete(twin.url))
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.retry_after_s == pytest.approx(0.02)


def test_fail_fast_outage_is_a_503_after_the_fail_fast_latency() -> None:
    scn = one_model(outage={**ALWAYS_DOWN, "mode": "fail_fast"}, fail_fast_latency_s=2.0)
    with TwinServer(scn, time_scale=0.01) as twin, httpx.Client() as client:
        t0 = time.perf_counter()
        reply = client.post(f"{twin.url}/chat/completions", json=chat(0))
        elapsed = time.perf_counter() - t0
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "service_unavailable"
        assert elapsed >= 0.02
        assert twin.served == {"outage_fail_fast": 1}


def test_hang_outage_accepts_and_never_answers() -> None:
    scn = one_model(outage={**ALWAYS_DOWN, "mode": "hang"})
    with TwinServer(scn, time_scale=0.01) as twin, httpx.Client() as client:
        t0 = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{twin.url}/chat/completions", json=chat(0), timeout=0.3)
        assert time.perf_counter() - t0 >= 0.3
        assert twin.served == {"outage_hang": 1}


def test_server_errors_are_500s_and_malformed_bodies_are_not_json() -> None:
    with TwinServer(one_model(server_error_rate=1.0), time_scale=0.01) as twin:
        with pytest.raises(ProviderError) as info:
            asyncio.run(complete(twin.url))
        assert info.value.kind is ErrorKind.SERVER_ERROR and info.value.status == 500
    malformed = one_model(completion={"default": 0.0}, malformed_rate=1.0)
    with TwinServer(malformed, time_scale=0.01) as twin, httpx.Client() as client:
        reply = client.post(f"{twin.url}/chat/completions", json=chat(0))
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            reply.json()
        with pytest.raises(ProviderError) as info:
            asyncio.run(complete(twin.url))
        assert info.value.kind is ErrorKind.MALFORMED


def test_streams_answer_in_chunks_and_are_cut_stalled_or_malformed_as_the_draws_say() -> None:
    with TwinServer(one_model(), time_scale=0.01) as twin:
        assert asyncio.run(complete(twin.url, stream=True)) == answer_text("ok", "json")
    # A server error mid-stream: a first token, then the connection closes.
    with TwinServer(one_model(server_error_rate=1.0), time_scale=0.01) as twin:
        with pytest.raises(ProviderError) as info:
            asyncio.run(complete(twin.url, stream=True))
        assert info.value.kind is ErrorKind.CONNECTION
        assert "partial answer discarded" in str(info.value)
    # A hang outage on a stream: a first token, then nothing (the stall timeout fires).
    hang = one_model(outage={**ALWAYS_DOWN, "mode": "hang"})
    with TwinServer(hang, time_scale=0.01) as twin:
        t0 = time.perf_counter()
        with pytest.raises(ProviderError) as info:
            asyncio.run(complete(twin.url, stream=True, stall_timeout_s=0.2))
        assert info.value.kind is ErrorKind.TIMEOUT
        assert "stalled for more than 0.2 s" in str(info.value)
        assert 0.2 <= time.perf_counter() - t0 < 1.5
    # Malformed: the stream ends with a data line that is not JSON.
    malformed = one_model(completion={"default": 0.0}, malformed_rate=1.0)
    with TwinServer(malformed, time_scale=0.01) as twin:
        with pytest.raises(ProviderError) as info:
            asyncio.run(complete(twin.url, stream=True))
        assert info.value.kind is ErrorKind.MALFORMED


def test_capacity_queues_requests_in_fifo_order() -> None:
    scn = one_model(capacity=1, latency={"dist": "fixed", "value_s": 2.0})
    with TwinServer(scn, time_scale=0.01) as twin:

        async def main() -> list[float]:
            async with httpx.AsyncClient() as client:
                t0 = time.perf_counter()

                async def one(i: int) -> float:
                    await asyncio.sleep(0.002 * i)  # arrive in index order
                    reply = await client.post(f"{twin.url}/chat/completions", json=chat(i))
                    assert reply.status_code == 200
                    return time.perf_counter() - t0

                return await asyncio.gather(*(one(i) for i in range(3)))

        done = asyncio.run(main())
    # One slot, 20 ms each: the third request ends after three services, in order.
    assert done == sorted(done)
    assert done[2] >= 0.06


def test_unknown_model_is_a_404_and_models_are_listed() -> None:
    with TwinServer(one_model(), time_scale=0.01) as twin, httpx.Client() as client:
        reply = client.post(f"{twin.url}/chat/completions", json={**chat(0), "model": "gpt-9"})
        assert reply.status_code == 404
        error = reply.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert error["type"] == "invalid_request_error"
        assert "gpt-9" in error["message"]
        listed = client.get(f"{twin.url}/models").json()
        assert listed == {
            "object": "list",
            "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "p"}],
        }
        bad = client.post(f"{twin.url}/chat/completions", content=b"not json")
        assert bad.status_code == 400


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="time_scale: expected a positive number, got 0"):
        TwinServer(one_model(), time_scale=0)
    with pytest.raises(ValueError, match="port: expected an integer in 0..65535, got 70000"):
        TwinServer(one_model(), port=70000)


# ---------------------------------------------------------------- common random numbers
MIXED = {
    "completion": {"default": 0.5},
    "malformed_rate": 0.2,
    "server_error_rate": 0.2,
    "latency": {"dist": "fixed", "value_s": 0.1},
    "fail_fast_latency_s": 0.1,
}


def kind_of(reply: httpx.Response) -> str:
    if reply.status_code == 500:
        return "server_error"
    try:
        text = content(reply)
    except json.JSONDecodeError:
        return "malformed"
    return {answer_text("ok", "json"): "ok", answer_text("wrong", "json"): "wrong"}[text]


def kinds(seed: int, requests: list[tuple[int, dict[str, str]]]) -> list[str]:
    with TwinServer(one_model(**MIXED), seed=seed, time_scale=0.01) as twin:
        with httpx.Client() as client:
            return [
                kind_of(client.post(f"{twin.url}/chat/completions", json=chat(i), headers=h))
                for i, h in requests
            ]


def test_same_seed_same_answers_and_the_simulators_draws() -> None:
    tasks = [(i, {}) for i in range(40)]
    first = kinds(7, tasks)
    assert first == kinds(7, tasks)
    assert first != kinds(8, tasks)
    world = one_model(**MIXED).realize(7, 3600.0)
    # The same (seed, model, task, attempt) as the simulator: the twin's answers are
    # World.attempt's kinds, and all four kinds occur.
    assert first == [world.attempt(0, i, 1, "json", 0, 0)[0] for i in range(40)]
    assert set(first) == {"ok", "wrong", "malformed", "server_error"}


def test_retries_of_a_task_draw_its_later_attempts() -> None:
    world = one_model(**MIXED).realize(3, 3600.0)
    # Task 5 three times (attempts 1, 2, 3 counted by the twin), then an explicit
    # X-Attempt header and an explicit X-Task-Index header that override the tag.
    got = kinds(
        3, [(5, {}), (5, {}), (5, {}), (5, {"X-Attempt": "9"}), (0, {"X-Task-Index": "11"})]
    )
    want = [world.attempt(0, 5, k, "json", 0, 0)[0] for k in (1, 2, 3, 9)]
    want.append(world.attempt(0, 11, 1, "json", 0, 0)[0])
    assert got == want


def test_a_rate_limited_request_still_counts_as_an_attempt() -> None:
    scn = one_model(**MIXED, rate_limit_rpm=1)
    world = scn.realize(0, 3600.0)
    # Seed 0 draws task 5's attempts 2 and 3 differently (wrong, then ok), so the
    # answer shows which attempt the twin counted.
    assert [world.attempt(0, 5, k, "json", 0, 0)[0] for k in (2, 3)] == ["wrong", "ok"]
    with TwinServer(scn, seed=0, time_scale=0.01) as twin, httpx.Client() as client:
        twin.reset()
        first = client.post(f"{twin.url}/chat/completions", json=chat(5))
        limited = client.post(f"{twin.url}/chat/completions", json=chat(5))
        time.sleep(0.65)  # the next scenario minute
        third = client.post(f"{twin.url}/chat/completions", json=chat(5))
    # As in the simulator, whose policy numbers the 429'd call as attempt 2.
    assert limited.status_code == 429
    assert [kind_of(first), kind_of(third)] == [
        world.attempt(0, 5, k, "json", 0, 0)[0] for k in (1, 3)
    ]


# ------------------------------------------------------------------ through the router
def router_config(url: str, completion_ms: float = 5.0) -> Any:
    return config_from_dict(
        {
            "models": [
                {
                    "id": "m",
                    "provider": "p",
                    "completion_rate": 0.9,
                    "cost_per_task": 0.001,
                    "avg_latency_ms": completion_ms,
                    "endpoint": {"kind": "openai", "base_url": url, "model": "m"},
                }
            ],
            "routes": {"any": {"chain": ["m"], "max_cost_per_task": 1, "max_latency_ms": 2000}},
            "default_route": "any",
            # Every task is judged on its own: the breaker must not skip later ones.
            "breaker": {"consecutive_failures": 100, "min_requests": 100, "window": 100},
        }
    )


def route_every_type(url: str) -> list[TaskResult | RoutingError]:
    async def main() -> list[TaskResult | RoutingError]:
        out: list[TaskResult | RoutingError] = []
        async with Router(router_config(url)) as router:
            for i, task_type in enumerate(TASK_TYPES):
                spec = {"source": "x = 1\n"} if task_type == "bug_patch" else None
                task = Task(f"t{i}", task_type, f"{twin_tag(i, task_type)} do it", spec=spec)
                try:
                    out.append(await router.route(task, raise_on_failure=True))
                except RoutingError as exc:
                    out.append(exc)
        return out

    return asyncio.run(main())


def test_ok_answers_pass_and_wrong_answers_fail_the_routers_validation() -> None:
    with TwinServer(one_model(latency={"dist": "fixed", "value_s": 0.05}), time_scale=0.01) as tw:
        results = route_every_type(tw.url)
    assert all(isinstance(r, TaskResult) and r.success for r in results)
    wrong = one_model(completion={"default": 0.0}, latency={"dist": "fixed", "value_s": 0.05})
    with TwinServer(wrong, time_scale=0.01) as tw:
        failures = route_every_type(tw.url)
    assert all(isinstance(f, RoutingError) for f in failures)
    assert [[a.kind for a in f.result.attempts] for f in failures] == [  # type: ignore[union-attr]
        ["validation", "validation"]
    ] * len(TASK_TYPES)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_answer_text_contract_against_specs(task_type: str) -> None:
    prompt = "Fix calc.py; handle ValueError and KeyError."
    spec: dict[str, Any] = {
        "bug_patch": {"source": {"calc.py": "def f():\n    return 1\n"}},
        "error_handling": {"must_handle": ["ValueError", "KeyError"]},
        "json": {"schema": {"type": "object"}},
        "regex": {"matches": ["anything"]},
        "sql": {"sqlite_schema": "CREATE TABLE t (x INT);"},
    }[task_type]
    assert validate(task_type, answer_text("ok", task_type, prompt), spec).ok
    assert not validate(task_type, answer_text("wrong", task_type, prompt), spec).ok


# --------------------------------------------------------------------------------- CLI
def test_serve_has_help() -> None:
    res = CliRunner().invoke(app, ["serve", "--help"])
    assert res.exit_code == 0 and "--time-scale" in res.output and "--scenario" in res.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--time-scale", "-1"], "error: --time-scale: expected a positive number, got -1\n"),
        (["--time-scale", "0"], "error: --time-scale: expected a positive number, got 0\n"),
        (["--port", "70000"], "error: --port: expected 0..65535, got 70000\n"),
        (
            ["--scenario", "no/such.yaml"],
            "error: --scenario: no/such.yaml: no such file; "
            "`sim init DIR` writes editable copies of the seed config and scenario\n",
        ),
    ],
    ids=["negative-scale", "zero-scale", "bad-port", "missing-scenario"],
)
def test_serve_bad_input_is_one_line_and_exit_2(args: list[str], line: str) -> None:
    res = CliRunner().invoke(app, ["serve", *args])
    assert res.exit_code == 2 and res.stderr == line and res.stdout == ""


def test_serve_on_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: --port: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "try --port 0 (any free port)\n"
    )


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    return line[0] if line else ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_prints_its_url_answers_and_stops_on_a_signal(sig: signal.Signals) -> None:
    seed_world = load_seed_scenario().realize(0, 3600.0)
    m = seed_world.index("grok-4.20")
    # Preconditions of the exact answer below (fixed by seed 0): no xAI outage in the
    # first scenario minutes, and task 0's first attempt on grok-4.20 completes.
    assert seed_world.outage(m, 0.0) is None and seed_world.outage_end(m, 0.0) is None
    ok_task = next(i for i in range(100) if seed_world.attempt(m, i, 1, "json", 0, 0)[0] == "ok")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "serve", "--port", "0", "--time-scale", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        url = _first_line(proc, 30.0).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url), url
        reply = httpx.post(
            f"{url}/chat/completions",
            json={"model": "grok-4.20", "messages": [{"role": "user", "content": "json"}]},
            headers={"X-Task-Index": str(ok_task), "X-Task-Type": "json", "X-Prompt-Tokens": "0"},
            timeout=10,
        )
        assert reply.status_code == 200 and content(reply) == answer_text("ok", "json")
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        # One access-log line for the one request, nothing else (no traceback on exit).
        logged = proc.stderr.read().splitlines()  # type: ignore[union-attr]
        assert len(logged) == 1, logged
        assert re.fullmatch(
            r"POST /v1/chat/completions model=grok-4\.20 status=200 \d+\.\d ms", logged[0]
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
