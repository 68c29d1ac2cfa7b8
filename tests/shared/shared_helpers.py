"""Helpers of the shared-state tests: a restartable Redis, gateway replica processes.

(Imported by tests/shared/conftest.py and its test modules; a unique module name, so
it never clashes with another directory's helpers.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def redis_server_binary() -> str | None:
    import shutil

    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None


REDIS_SERVER = redis_server_binary()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of one test's own that can be SIGKILLed and restarted on the same
    port with its data (append-only file, fsynced on every write)."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", "", "--appendonly", "yes"]
        args += ["--appendfsync", "always", "--protected-mode", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None


def redis_hash(url: str, key: str) -> dict[str, float]:
    """A Redis hash of numbers, read synchronously (the tests' view of the store)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {k.decode(): float(v) for k, v in client.hgetall(key).items()}
    finally:
        client.close()


COSTROUTE = str(Path(sys.executable).parent / "costroute")


class GatewayProcess:
    """A ``costroute serve --config CONFIG --port 0`` process: one gateway replica.

    Its stderr goes to a file (a pipe nobody reads would fill and block the server);
    :attr:`url` is read from its "listening on" line. Access lines are off (they cost
    CPU and the tests read outcomes from the responses and the shared ledger).
    """

    def __init__(self, config: dict[str, Any], directory: Path, name: str) -> None:
        self.name = name
        path = directory / f"{name}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        self.stderr_path = directory / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        args = [COSTROUTE, "serve", "--config", str(path), "--port", "0"]
        args += ["--no-watch", "--no-access-log", "--drain-timeout", "2"]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        self.url = ""

    def wait_listening(self, timeout: float = 60.0) -> str:
        """The gateway's base URL, once it listens (raises if it exits first)."""
        deadline = time.monotonic() + timeout
        while not self.url:
            match = re.search(r"listening on (http://\S+)", self.stderr())
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway {self.name} exited: {self.stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {self.name} did not listen: {self.stderr()}")
            time.sleep(0.02)
        return self.url

    def ready(self) -> dict[str, Any]:
        """Its ``/ready`` body (``shared``: the replica's shared-state status)."""
        import httpx

        response = httpx.get(self.url + "/ready", timeout=10)
        response.raise_for_status()
        return response.json()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stderr.close()


def start_gateways(gateways: list[GatewayProcess], timeout: float = 60.0) -> None:
    """Wait until every gateway listens and its shared state answers (they start in
    parallel: each process was spawned by its constructor)."""
    for g in gateways:
        g.wait_listening(timeout)
    deadline = time.monotonic() + timeout
    for g in gateways:
        while not g.ready()["shared"]["connected"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {g.name}: shared state never connected")
            time.sleep(0.05)


def wait_settled(gateways: list[GatewayProcess], timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every gateway's shared status once all are connected with nothing queued or
    being sent to the store (so the shared ledger holds everything they booked)."""
    deadline = time.monotonic() + timeout
    while True:
        states = [g.ready()["shared"] for g in gateways]
        if all(s["connected"] and s["pending_ops"] == 0 for s in states):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"gateways did not settle with the store: {states}")
        time.sleep(0.05)
