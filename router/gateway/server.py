"""Running the gateway: :func:`serve` (the CLI's, blocking, signal-aware) and
:class:`GatewayServer` (in a background thread, for tests and embedding).

Both bind the listening socket themselves before uvicorn starts, so a port in use is
a :class:`~router.gateway.app.GatewayError` with one clear line rather than uvicorn's
log and ``sys.exit``. uvicorn uses uvloop and httptools where installed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import uvicorn

from router.config import RouterConfig
from router.gateway.app import Gateway, GatewayError, GatewaySettings
from router.providers import ModelProvider

__all__ = ["GatewayServer", "bind", "serve"]

T = TypeVar("T")
#: Seconds GatewayServer waits for its thread to start or stop.
_WAIT_S = 10.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: any free port).

    Raises :class:`GatewayError` naming the address when it cannot be bound (in use,
    not an address of this machine, no permission).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GatewayError(f"--host {host}: not a resolvable address ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        if exc.errno in (98, 48):  # EADDRINUSE on Linux / macOS
            why = "the address is already in use (another server on that port?)"
        raise GatewayError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def _uvicorn_config(gateway: Gateway, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        gateway.app,
        lifespan="on",
        access_log=False,  # the gateway writes its own JSON access line
        log_config=None,  # keep the process's logging setup (the CLI's)
        log_level=log_level,
        timeout_graceful_shutdown=gateway.settings.drain_timeout_s,
        server_header=False,
        # Agents keep connections open between turns.
        timeout_keep_alive=30,
        backlog=2048,
    )


def serve(
    config: RouterConfig | str | os.PathLike[str],
    settings: GatewaySettings,
    *,
    log_level: str = "warning",
    on_listen: Callable[[str], None] | None = None,
) -> None:
    """Serve the gateway until SIGINT or SIGTERM, then drain requests in flight for up
    to ``settings.drain_timeout_s`` (uvicorn's graceful shutdown) and return.

    ``on_listen`` is called with the base URL once the socket is bound. Raises
    :class:`~router.errors.ConfigError` / :class:`GatewayError` before serving.
    """
    gateway = Gateway(config, settings)
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    if on_listen is not None:
        on_listen(f"http://{host}:{port}")
    server = uvicorn.Server(_uvicorn_config(gateway, log_level))
    # The process is ours: everything built so far (modules, the config, compiled
    # routes) lives as long as it does. Out of the collector's sight, it is no longer
    # walked by the full collections that requests' garbage triggers.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class GatewayServer:
    """A gateway served by uvicorn in a background thread (its own event loop).

    ::

        with GatewayServer(config, GatewaySettings(port=0, watch=False)) as gw:
            client = OpenAI(base_url=gw.url + "/v1", api_key="x")

    :attr:`url` is ``http://127.0.0.1:<port>``; :attr:`gateway` the
    :class:`~router.gateway.app.Gateway` (its router, policy and ledger live in the
    server's loop: read them with :meth:`call` for a consistent view). Leaving the
    block shuts the server down gracefully (requests in flight may finish within
    ``settings.drain_timeout_s``).
    """

    def __init__(
        self,
        config: RouterConfig | str | os.PathLike[str],
        settings: GatewaySettings | None = None,
        *,
        providers: Mapping[str, ModelProvider] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        key: str | None = None,
        log_level: str = "warning",
    ) -> None:
        settings = settings or GatewaySettings(port=0)
        self.gateway = Gateway(config, settings, providers=providers, transport=transport, key=key)
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.gateway.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and start serving (returns once the server accepts connections)."""
        settings = self.gateway.settings
        sock = self._sock = bind(settings.host, settings.port)
        self.port = sock.getsockname()[1]
        server = self._server = uvicorn.Server(_uvicorn_config(self.gateway, self._log_level))
        thread = self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="costroute-gateway", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _WAIT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("GatewayServer: the server did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Shut down gracefully and wait for the thread (idempotent)."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(self.gateway.settings.drain_timeout_s + _WAIT_S)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in the server's event loop and return its result (for reading
        the router's state from a test without racing the loop)."""
        loop = self.gateway.loop
        if loop is None:
            raise RuntimeError("GatewayServer: not started")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(_WAIT_S)

    def run_coroutine(self, coro: Any) -> Any:
        """Run a coroutine in the server's loop and wait for it."""
        loop = self.gateway.loop
        if loop is None:
            raise RuntimeError("GatewayServer: not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_WAIT_S)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
