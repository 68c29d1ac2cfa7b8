"""Helpers of the shared-state tests: a restartable Redis, replica processes.

(Imported by tests/shared/conftest.py and its test modules; a unique module name, so
it never clashes with another directory's helpers.)
"""

from __future__ import annotations

import json
import os
import selectors
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


class ReplicaProcess:
    """A live router in its own OS process (tests/shared/replica_proc.py)."""

    def __init__(self, config: dict[str, Any], directory: Path, name: str) -> None:
        self.name = name
        path = directory / f"{name}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        self.stderr_path = directory / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "replica_proc.py"), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=ROOT,
        )
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        if not self._sel.select(timeout):
            raise TimeoutError(f"replica {self.name} did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"replica {self.name} exited: {self.stderr()}")
        return json.loads(line)

    def ask(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self.send(cmd)
        return self.receive(timeout)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"op": "quit"}, timeout=10)
                self.proc.wait(10)
            except Exception:
                self.kill()
        self._sel.close()
        self._stderr.close()


def start_all(procs: list[ReplicaProcess], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Send ``start`` to every replica, then wait for all (they import in parallel)."""
    for p in procs:
        p.send({"op": "start"})
    return [p.receive(timeout) for p in procs]
