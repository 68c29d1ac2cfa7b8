"""The gateway's HTTP overhead and throughput, against LiteLLM's proxy in the same run.

Three processes on loopback, as deployed: a zero-latency upstream (a raw asyncio
server answering every ``POST`` with the same chat completion), the server under test
(``costroute serve`` with a two-model fallback route over that upstream; or LiteLLM's
proxy with an equivalent two-model fallback config), and this script as the load
generator (raw keep-alive HTTP/1.1 connections on uvloop, so the generator itself is
never the limit).

For context, the HTTP stack's floor is measured the same way at 100 and 300 req/s: a bare
Starlette + uvicorn app passing requests through one aiohttp session (no routing): what
any gateway built on that stack costs here at least (``floor_*`` keys).

For each server: a warm-up; the saturation throughput (closed loop, the better of 16
and 64 connections, every answer a 200) = max sustained requests/s; then fixed request
rates (10, 25, 50, 100, 300, 1,000 per second; open loop: request i is due at
``t0 + i/rate`` and its latency is counted from then, so a server that falls behind is
charged for it) wherever the rate is below 90% of the server's saturation. The same
rate straight at the upstream, run in 2 s slices alternating with the server's, is the
baseline; *added latency* at a rate is the server's p50/p99 minus the baseline's. CPU
per request is the server process tree's CPU time (the scheduler's count, all threads)
over the fixed-rate phases per request served; RSS its resident memory at the end.

LiteLLM runs from its own venv (default ``/tmp/costroute-bench-litellm``), never the
project's; ``--install-litellm`` builds it there when missing (and removes it again if
the install fails or is interrupted). Without it the LiteLLM figures are ``null``, with
a line saying why. LiteLLM is run offline (local cost map, telemetry
off) with a ``master_key``.

Last line: ``{"overhead_p50_ms", "overhead_p99_ms" (at 300 req/s), "max_rps",
"litellm_overhead_p50_ms" (at the highest listed rate up to 100 req/s that it sustains),
"litellm_max_rps", "rps_ratio"}`` then extra keys. Targets: added p50 <= 1 ms and p99
<= 5 ms at 300 req/s; ``rps_ratio`` >= 3.

    python bench/gateway.py [--duration 6] [--install-litellm] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = Path("/tmp/costroute-bench-litellm")
# LiteLLM 1.110.2's proxy extra pins litellm-proxy / -extras / -enterprise versions the
# registry does not have; the working set (see DESIGN.md) is litellm itself, these two,
# and the proxy extra's other requirements.
LITELLM_REQUIREMENTS = [
    "litellm==1.110.2",
    "litellm-proxy-extras==0.4.110",
    "litellm-enterprise==0.1.83",
    "gunicorn>=23.0.0,<24.0",
    "uvicorn>=0.33.0,<1.0",
    "uvloop>=0.22.1,<1.0",
    "fastapi>=0.136.3,<1.0",
    "starlette>=1.0.1,<2.0",
    "backoff>=2.2.1,<3.0",
    "pyyaml>=6.0.3,<7.0",
    "rq>=2.7.0,<3.0",
    "orjson>=3.11.6,<4.0",
    "apscheduler>=3.11.2,<4.0",
    "fastapi-sso>=0.19.0,<1.0",
    "pyjwt>=2.13.0,<3.0",
    "python-multipart>=0.0.27,<1.0",
    "cryptography>=49.0.0,<51.0",
    "pynacl>=1.6.2,<2.0",
    "websockets>=15.0.1,<16.0",
    "boto3>=1.43.117,<2.0",
    "azure-identity>=1.25.2,<2.0",
    "azure-storage-blob>=12.28.0,<13.0",
    "mcp>=2.3.0,<3",
    "httpx2>=2.10.0,<3",
    "restrictedpython>=8.5,<9.0",
    "rich>=13.9.4,<14.0",
    "inquirerpy>=0.3.4,<1.0",
    "tomlkit>=0.13.3,<1.0",
    "polars>=1.38.1,<2.0",
    "soundfile>=0.12.1,<1.0",
    "expression>=5.6.0,<6.0",
    "backports-zstd>=1.0.0,<2.0",
    "semver>=3.0.4,<4",
]
LITELLM_KEY = "sk-bench-master-key"


RATES = (10, 25, 50, 100, 300, 1000)
#: The floor's fixed rates: the target's, and a low one (added latency is higher when
#: requests arrive at an idle process, whatever serves them).
FLOOR_RATES = (100, 300)
#: Seconds of one slice of a fixed-rate phase (server and baseline alternate by slice).
SLICE_S = 2.0
#: Closed-loop client counts tried for saturation; the best throughput counts.
SATURATION_CONNECTIONS = (16, 64)

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the bench upstream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
}
REQUEST_BODY = json.dumps(
    {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}
).encode()


# -- the zero-latency upstream (run as `python bench/gateway.py --upstream PORT`) ---------


def run_upstream(port_file: str) -> None:
    """Answer every request on a keep-alive connection with the same completion."""
    body = json.dumps(ANSWER).encode()
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = bytearray()
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer
            buffer += data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                match = re.search(rb"(?i)content-length:\s*(\d+)", buffer[:end])
                total = end + 4 + (int(match.group(1)) if match else 0)
                if len(buffer) < total:
                    return
                del buffer[:total]
                self.transport.write(response)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        Path(port_file).write_text(str(port))
        await asyncio.Event().wait()

    _run(main())


def run_floor(upstream_port: int, port: int) -> None:
    """The HTTP stack's floor: a bare Starlette + uvicorn app passing every request to
    the upstream through one aiohttp session, with no routing at all."""
    import aiohttp
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    class PassThrough:
        async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
            if not sessions:
                sessions.append(aiohttp.ClientSession())
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = {"content-type": "application/json"}
            async with sessions[0].post(url, data=body, headers=headers) as response:
                data = await response.read()
            length = str(len(data)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", length),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})

    async def health(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [
        Route("/v1/chat/completions", PassThrough(), methods=["POST"]),
        Route("/health", health),
    ]
    uvicorn.run(
        Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def _run(coro: object) -> object:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


# -- the load generator -------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: send a request, await its status."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        match = re.search(rb"content-length:\s*(\d+)", head)
        if match:
            total = end + 4 + int(match.group(1))
        elif b"transfer-encoding: chunked" in head:
            tail = buffer.find(b"\r\n0\r\n\r\n", end)
            if tail < 0:
                return
            total = tail + 7
        else:
            total = end + 4
        if len(buffer) < total:
            return
        del buffer[:total]
        self.waiter = None
        waiter.set_result(int(head[9:12]))

    async def request(self, data: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await self.waiter


@dataclass
class Phase:
    """What one load phase measured."""

    rate: float | None  # requests/s asked for (None: closed loop)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0

    @property
    def served(self) -> int:
        return len(self.latencies_ms)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


class Target:
    """A server to load: where it listens and how its requests look."""

    def __init__(self, name: str, port: int, path: str, headers: dict[str, str], pid: int | None):
        self.name = name
        self.port = port
        self.pid = pid
        body = REQUEST_BODY if name != "litellm" else REQUEST_BODY.replace(b'"auto"', b'"primary"')
        lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"content-length: {len(body)}")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.idle: list[_Client] = []

    async def connection(self) -> _Client:
        loop = asyncio.get_running_loop()
        if self.idle and self.idle[-1].loop is not loop:
            self.idle.clear()  # connections of an earlier event loop (an earlier phase)
        while self.idle:
            client = self.idle.pop()
            if not client.lost:
                return client
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(_Client, "127.0.0.1", self.port)
        return client

    async def one(self) -> int:
        client = await self.connection()
        status = await client.request(self.request)
        self.idle.append(client)
        return status

    def close(self) -> None:
        for client in self.idle:
            if client.transport is not None:
                client.transport.close()
        self.idle.clear()


async def fixed_rate(target: Target, rate: float, seconds: float) -> Phase:
    """Open loop: request i is due at t0 + i / rate; latency counts from then."""
    phase = Phase(rate)
    n = int(rate * seconds)
    cpu0 = process_cpu(target.pid)

    async def one(due: float) -> None:
        try:
            status = await target.one()
        except (OSError, ConnectionError):
            phase.errors += 1
            return
        if status == 200:
            phase.latencies_ms.append((clock() - due) * 1000.0)
        else:
            phase.errors += 1

    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    clock = time.perf_counter
    t0 = clock() + 0.05
    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    phase.seconds = clock() - t0
    phase.cpu_s = process_cpu(target.pid) - cpu0
    return phase


async def saturation(target: Target, seconds: float, connections: int) -> Phase:
    """Closed loop: ``connections`` clients each send their next request at once."""
    loop = asyncio.get_running_loop()
    phase = Phase(None)
    stop = loop.time() + seconds
    cpu0 = process_cpu(target.pid)

    async def worker() -> None:
        while loop.time() < stop:
            t = time.perf_counter()
            try:
                status = await target.one()
            except (OSError, ConnectionError):
                phase.errors += 1
                continue
            if status == 200:
                phase.latencies_ms.append((time.perf_counter() - t) * 1000.0)
            else:
                phase.errors += 1

    t0 = loop.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    phase.seconds = loop.time() - t0
    phase.cpu_s = process_cpu(target.pid) - cpu0
    return phase


# -- processes -------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def process_cpu(pid: int | None) -> float:
    """CPU seconds used so far by ``pid``, its threads and its descendants: the
    scheduler's own nanosecond count (``/proc/PID/task/TID/schedstat``), not the
    tick-sampled utime/stime, which mischarges a process that runs in short bursts."""
    if pid is None:
        return 0.0
    total = 0
    for p in _tree(pid):
        try:
            threads = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in threads:  # every thread: a server may work off its main thread
            try:
                total += int(Path(f"/proc/{p}/task/{t}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def process_rss_mib(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024.0


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes], path: str = "/") -> None:
    """Wait until ``GET path`` on ``port`` answers (any status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(
                    f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
                )
                if sock.recv(16).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port} within {timeout_s:g} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_upstream(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "upstream.port"
    proc = subprocess.Popen([sys.executable, __file__, "--upstream", str(port_file)])
    deadline = time.monotonic() + 15
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the bench upstream did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def start_floor(upstream: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--floor", str(upstream), str(port)])
    wait_port(port, 30, proc, "/health")
    return proc, port


def start_gateway(tmp: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int]:
    from router import config_from_dict
    from router.config import dump_config

    endpoint = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{upstream}/v1",
        "api_key_env": None,
    }
    config = config_from_dict(
        {
            "models": [
                {
                    "id": m,
                    "provider": m,
                    "cost_per_task": 0.0001,
                    "avg_latency_ms": 10,
                    "endpoint": {**endpoint, "model": m},
                }
                for m in ("primary", "fallback")
            ],
            "routes": {
                "default": {
                    "chain": ["primary", "fallback"],
                    "max_cost_per_task": 1.0,
                    "max_latency_ms": 30000,
                    "attempt_timeout_ms": 10000,
                }
            },
            "default_route": "default",
        }
    )
    path = tmp / "gateway.yaml"
    path.write_text(dump_config(config, "yaml"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COSTROUTE_GATEWAY_KEY", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.gateway.cli",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            "--no-access-log",
            "--no-watch",
            "--log-level",
            "warning",
            "--max-concurrency",
            "4096",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, 30, proc, "/health")
    return proc, port


def litellm_python(venv: Path) -> Path | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    check = subprocess.run(
        [str(python), "-c", "import litellm.proxy.proxy_server"],
        capture_output=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        timeout=300,
    )
    return python if check.returncode == 0 else None


def install_litellm(venv: Path) -> str | None:
    """Build LiteLLM's proxy into ``venv`` (never the project's); ``None`` or why not.

    A venv cannot be moved once built (its scripts name its path), so it is built in
    place and removed again on any failure or interruption: what is left is either a
    proxy that imports or nothing.
    """
    done = False
    try:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        res = subprocess.run(
            [*pip, *LITELLM_REQUIREMENTS], capture_output=True, text=True, timeout=1800
        )
        if res.returncode != 0:
            return "pip could not install it: " + (res.stderr.strip().splitlines() or ["?"])[-1]
        if litellm_python(venv) is None:
            return "the installed proxy does not import"
        done = True
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if not done:
            shutil.rmtree(venv, ignore_errors=True)


def start_litellm(tmp: Path, upstream: int, python: Path) -> tuple[subprocess.Popen[bytes], int]:
    base = f"http://127.0.0.1:{upstream}/v1"
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/{name}", "api_base": base, "api_key": "sk-up"},
            }
            for name in ("primary", "fallback")
        ],
        "router_settings": {"fallbacks": [{"primary": ["fallback"]}], "num_retries": 0},
        "litellm_settings": {"num_retries": 0, "telemetry": False, "drop_params": True},
        "general_settings": {"master_key": LITELLM_KEY},
    }
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_LOG": "ERROR",
    }
    litellm = python.parent / "litellm"
    proc = subprocess.Popen(
        [str(litellm), "--config", str(path), "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    wait_port(port, 180, proc, "/health/liveliness")
    return proc, port


# -- the run -------------------------------------------------------------------------------


async def measure(
    target: Target,
    direct: Target,
    duration: float,
    rates: tuple[int, ...],
    log: Callable[[str], None],
) -> dict[str, object]:
    """Warm up, saturate, then each fixed rate it sustains, in slices alternating with
    the same rate straight at the upstream (so that the baseline it is compared with
    was taken under the same conditions: on a shared machine, minutes apart is not)."""
    # Warm-up in a closed loop: a slow server is never handed a backlog to start with.
    await saturation(target, 1.5, 4)
    await saturation(direct, 0.5, 4)
    max_rps, errors = 0.0, 0
    for connections in SATURATION_CONNECTIONS:
        sat = await saturation(target, duration, connections)
        rps = sat.served / sat.seconds
        errors += sat.errors
        max_rps = max(max_rps, rps)
        log(
            f"{target.name:>8}: saturation {rps:8,.0f} req/s ({connections} connections, "
            f"{sat.errors} errors), p50 {sat.pct(50):.2f} ms"
        )
    out: dict[str, object] = {"max_rps": max_rps, "saturation_errors": errors}
    pairs: dict[int, tuple[Phase, Phase]] = {}
    cpu, served = 0.0, 0
    for rate in rates:
        if rate > 0.9 * max_rps:
            log(f"{target.name:>8}: {rate:>5} req/s skipped (above 90% of its saturation)")
            continue
        # Interleaved slices (direct, server, direct, server...), pooled: on a shared
        # machine a burst of someone else's work then lands on both sides alike.
        base, phase = Phase(rate), Phase(rate)
        slices = max(1, round(duration / SLICE_S))
        for _ in range(slices):
            for side, server in ((base, direct), (phase, target)):
                part = await fixed_rate(server, rate, duration / slices)
                side.latencies_ms += part.latencies_ms
                side.errors += part.errors
                side.seconds += part.seconds
                side.cpu_s += part.cpu_s
        pairs[rate] = (phase, base)
        cpu += phase.cpu_s
        served += phase.served
        log(
            f"{target.name:>8}: {rate:>5} req/s  p50 {phase.pct(50):7.3f} ms  p99 "
            f"{phase.pct(99):7.3f} ms ({phase.served} ok, {phase.errors} errors; CPU "
            f"{1000 * phase.cpu_s / max(1, phase.served):.2f} ms/request) | direct p50 "
            f"{base.pct(50):.3f} ms  p99 {base.pct(99):.3f} ms | added p50 "
            f"{phase.pct(50) - base.pct(50):+.3f} ms  p99 {phase.pct(99) - base.pct(99):+.3f} ms"
        )
    out["pairs"] = pairs
    out["cpu_ms_per_request"] = 1000 * cpu / served if served else None
    target.close()
    direct.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per phase")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument("--install-litellm", action="store_true", help="build the venv if missing")
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return
    if args.floor:
        run_floor(*args.floor)
        return

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="costroute-bench-") as tmpdir:
        tmp = Path(tmpdir)
        upstream, up_port = start_upstream(tmp)
        procs = [upstream]
        results: dict[str, dict[str, object]] = {}
        litellm_note = None
        try:
            direct = Target("direct", up_port, "/v1/chat/completions", {}, None)
            sat = _run(saturation(direct, args.duration, SATURATION_CONNECTIONS[-1]))
            log(f"  direct: saturation {sat.served / sat.seconds:8,.0f} req/s (the upstream alone)")

            gateway, gw_port = start_gateway(tmp, up_port)
            procs.append(gateway)
            target = Target("gateway", gw_port, "/v1/chat/completions", {}, gateway.pid)
            results["gateway"] = _run(measure(target, direct, args.duration, RATES, log))  # type: ignore[assignment]
            results["gateway"]["rss_mib"] = process_rss_mib(gateway.pid)
            stop(gateway)

            floor, fl_port = start_floor(up_port)
            procs.append(floor)
            target = Target("floor", fl_port, "/v1/chat/completions", {}, floor.pid)
            results["floor"] = _run(measure(target, direct, args.duration, FLOOR_RATES, log))  # type: ignore[assignment]
            stop(floor)

            python = None
            if args.skip_litellm:
                litellm_note = "skipped (--skip-litellm)"
            else:
                python = litellm_python(args.litellm_venv)
                if python is None and args.install_litellm:
                    log(f"installing LiteLLM's proxy into {args.litellm_venv} (a few minutes)...")
                    why = install_litellm(args.litellm_venv)
                    python = None if why else litellm_python(args.litellm_venv)
                    litellm_note = why
                if python is None and litellm_note is None:
                    litellm_note = (
                        f"no LiteLLM proxy in {args.litellm_venv}; rerun with --install-litellm"
                    )
            if python is not None:
                proxy, ll_port = start_litellm(tmp, up_port, python)
                procs.append(proxy)
                headers = {"authorization": f"Bearer {LITELLM_KEY}"}
                target = Target("litellm", ll_port, "/v1/chat/completions", headers, proxy.pid)
                results["litellm"] = _run(measure(target, direct, args.duration, RATES, log))  # type: ignore[assignment]
                results["litellm"]["rss_mib"] = process_rss_mib(proxy.pid)
            else:
                log(f"LiteLLM figures: none ({litellm_note})")
        finally:
            for proc in procs:
                stop(proc)

    def added(name: str, rate: int | None, q: float) -> float | None:
        pair = results.get(name, {}).get("pairs", {}).get(rate)  # type: ignore[union-attr]
        if pair is None:
            return None
        phase, base = pair
        return round(phase.pct(q) - base.pct(q), 3)

    gw = results["gateway"]
    ll = results.get("litellm")
    # LiteLLM's added latency at the highest listed rate (up to 100/s) it sustains here.
    ll_rate = max((r for r in (ll or {}).get("pairs", {}) if r <= 100), default=None)  # type: ignore[union-attr]
    max_rps = round(float(gw["max_rps"]), 1)  # type: ignore[arg-type]
    ll_max = round(float(ll["max_rps"]), 1) if ll else None  # type: ignore[arg-type]
    summary: dict[str, object] = {
        "overhead_p50_ms": added("gateway", 300, 50),
        "overhead_p99_ms": added("gateway", 300, 99),
        "max_rps": max_rps,
        "litellm_overhead_p50_ms": added("litellm", ll_rate, 50) if ll_rate else None,
        "litellm_max_rps": ll_max,
        "rps_ratio": round(max_rps / ll_max, 2) if ll_max else None,
        "overhead_p50_ms_100": added("gateway", 100, 50),
        "overhead_p99_ms_100": added("gateway", 100, 99),
        "overhead_p50_ms_1000": added("gateway", 1000, 50),
        "overhead_p99_ms_1000": added("gateway", 1000, 99),
        "litellm_overhead_p99_ms": added("litellm", ll_rate, 99) if ll_rate else None,
        "litellm_overhead_rate": ll_rate,
        "cpu_ms_per_request": _round(gw.get("cpu_ms_per_request")),
        "rss_mib": _round(gw.get("rss_mib")),
        "litellm_cpu_ms_per_request": _round(ll.get("cpu_ms_per_request")) if ll else None,
        "litellm_rss_mib": _round(ll.get("rss_mib")) if ll else None,
        "floor_overhead_p50_ms": added("floor", 300, 50),
        "floor_overhead_p99_ms": added("floor", 300, 99),
        "floor_overhead_p50_ms_100": added("floor", 100, 50),
        "floor_overhead_p99_ms_100": added("floor", 100, 99),
        "floor_max_rps": round(float(results["floor"]["max_rps"]), 1),  # type: ignore[arg-type]
        "floor_cpu_ms_per_request": _round(results["floor"].get("cpu_ms_per_request")),
    }
    ok300 = summary["overhead_p50_ms"] is not None and summary["overhead_p50_ms"] <= 1.0  # type: ignore[operator]
    ok99 = summary["overhead_p99_ms"] is not None and summary["overhead_p99_ms"] <= 5.0  # type: ignore[operator]
    ratio = summary["rps_ratio"]
    log(
        f"targets: added p50 <= 1 ms at 300 req/s: {'met' if ok300 else 'MISSED'}; added p99 "
        f"<= 5 ms: {'met' if ok99 else 'MISSED'}; max req/s >= 3x LiteLLM's: "
        + ("n/a" if ratio is None else ("met" if ratio >= 3 else "MISSED"))
    )
    print(json.dumps(summary))


def _round(value: object) -> float | None:
    return None if value is None else round(float(value), 2)  # type: ignore[arg-type]


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
