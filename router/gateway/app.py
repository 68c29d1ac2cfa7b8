"""The gateway's ASGI application: OpenAI- and Anthropic-compatible endpoints in front
of the routing policy.

::

    gateway = Gateway("tuned.yaml", GatewaySettings(record=Path("recordings/gw.ndjson")))
    app = gateway.app            # an ASGI app (Starlette behind a fast path); serve it with uvicorn

Endpoints (the chat, messages and models paths also without ``/v1``):

* ``POST /v1/chat/completions``: OpenAI chat completions, plain and streamed, tools;
* ``POST /v1/messages``: Anthropic Messages, plain and streamed, tools;
* ``POST /v1/messages/count_tokens``: an estimate (4 characters a token);
* ``GET /v1/models``: ``auto``, the routes, their aliases and the model ids (in the
  Anthropic shape for a client that sends ``anthropic-version``);
* ``GET /metrics``: Prometheus text format;
* ``GET /health`` (liveness) and ``GET /ready`` (503 until started and once stopping).

Which route serves a request: the ``X-Task-Type`` header when sent (a task type or a
route name); else the body's ``model`` when it names a route or a task type aliased
to one; else the task type classified from the conversation's last user message
(``model`` ``auto``, a model id, or any other name). A ``model`` that is a model id of
the config is tried first, before the route's own chain.

Safe by default: the key in the environment variable ``settings.key_env``, when set,
is required on every ``/v1`` and ``/metrics`` request (``Authorization: Bearer`` or
``x-api-key``, compared in constant time); binding beyond loopback without one is
refused. Bodies over ``max_body_bytes`` get 413, requests beyond ``max_concurrency``
in flight get 429 with ``Retry-After``, and a client that goes away cancels its
upstream call and gives back its budget reservation. Provider keys are never sent to
the client, logged, counted or recorded.

One JSON line per request on the ``costroute.access`` logger (route, model, attempts,
outcome, latency, cost: no payload, no header); one trace record per routed task with
``settings.record`` and one attempt record per provider call with
``settings.record_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from starlette.applications import Starlette
from starlette.routing import Route

from router.config import RouterConfig, load_config
from router.errors import ConfigError, InputError
from router.gateway.dialects import (
    AnthropicEvents,
    ChatRequest,
    ClientError,
    Dialect,
    OpenAIEvents,
    anthropic_body,
    error_body,
    openai_body,
    parse_anthropic,
    parse_openai,
)
from router.gateway.driver import GatewayDriver, Routed
from router.gateway.metrics import GatewayMetrics
from router.ledger import DAY_S, BudgetAlert
from router.live import Router
from router.policy import RoutingPolicy
from router.providers import ModelProvider
from router.providers._http import check_messages, check_tool_choice, check_tools
from router.providers.base import StreamEnd, TextDelta, ToolCallDelta, completion_events
from router.recording import TraceRecorder
from router.result import TaskResult
from router.task import Task, classify

__all__ = ["DEFAULT_KEY_ENV", "Gateway", "GatewayError", "GatewaySettings", "create_app"]

log = logging.getLogger("costroute.gateway")
access_log = logging.getLogger("costroute.access")

#: The environment variable holding the gateway's own key, unless told otherwise.
DEFAULT_KEY_ENV = "COSTROUTE_GATEWAY_KEY"
#: Completion tokens assumed for a request that states no max_tokens (cost projection
#: of token-priced models only).
DEFAULT_COMPLETION_TOKENS = 1024
#: Characters of request body per projected prompt token.
_CHARS_PER_TOKEN = 4
#: Seconds a routed request runs before the gateway starts watching for its client
#: going away (then the upstream call is cancelled and its reservation given back).
_WATCH_AFTER_S = 0.02

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies in front must not hold the stream back
]


class GatewayError(InputError):
    """The gateway cannot start as configured (one line: the CLI prints it, exit 2)."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How a gateway serves (everything but the routing, which is the config's).

    ``host``/``port``: where to listen (``port=0``: any free port). ``key_env``: the
    environment variable holding the gateway key; required when ``host`` is not a
    loopback address. ``max_body_bytes``: larger request bodies get 413.
    ``max_concurrency``: routed requests in flight beyond it get 429 with
    ``Retry-After: overload_retry_after_s``. ``drain_timeout_s``: on SIGTERM, how long
    requests in flight may finish. ``watch``: reload the config file when it changes.
    ``record``: append one trace record per task to this ``.ndjson`` file;
    ``record_attempts``: one attempt record per provider call (the schema of
    :mod:`sim.traces.attempts`, which scenario calibration reads).
    ``upstream``: ``http1`` (:mod:`router.providers.http1`, a lean pooled HTTP/1.1
    client; the fastest), ``aiohttp`` (aiohttp's pooled client) or ``httpx``. ``seed``
    seeds the policy's jitter; ``validate`` turns validation of buffered routes off.
    """

    host: str = "127.0.0.1"
    port: int = 4000
    key_env: str = DEFAULT_KEY_ENV
    max_body_bytes: int = 10 * 1024 * 1024
    max_concurrency: int = 512
    overload_retry_after_s: float = 1.0
    drain_timeout_s: float = 30.0
    watch: bool = True
    record: Path | None = None
    record_attempts: Path | None = None
    upstream: Literal["http1", "aiohttp", "httpx"] = "http1"
    seed: int = 0
    validate: bool = True


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _retry_headers(seconds: float) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` (whole seconds, as RFC 9110 asks) and the SDKs' ``retry-after-ms``."""
    seconds = max(0.001, seconds)
    return [
        (b"retry-after", str(max(1, math.ceil(seconds))).encode()),
        (b"retry-after-ms", str(max(1, round(seconds * 1000))).encode()),
    ]


class _Exchange:
    """What one request did, for the access log and the metrics."""

    __slots__ = (
        "id",
        "path",
        "dialect",
        "status",
        "route",
        "model",
        "outcome",
        "attempts",
        "cost",
        "stream",
        "ttft",
        "started",
    )

    def __init__(self, request_id: str, path: str, dialect: Dialect) -> None:
        self.id = request_id
        self.path = path
        self.dialect = dialect
        self.status = 0
        self.route = "-"
        self.model = "-"
        self.outcome = "-"
        self.attempts = 0
        self.cost = 0.0
        self.stream = False
        self.ttft: float | None = None
        self.started = time.perf_counter()


class _Reply(Exception):
    """An error answer decided before routing (auth, size, parse, overload)."""

    def __init__(
        self,
        status: int,
        message: str,
        outcome: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.code = code
        self.param = param
        self.headers = headers or []


class _Asgi:
    """A bound handler as a plain ASGI app (Starlette then skips its Request object)."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


class _FastPath:
    """The gateway's ASGI app: the routed endpoints straight to their handlers, all else
    through Starlette.

    A routed request is most of the traffic and its handler answers every outcome
    itself, errors included (a bug of ours is a 500 in the client's format), so
    Starlette's error and exception middleware and its route matching have nothing to
    add to it; skipping them is about 3% of the gateway's CPU per request. Other
    methods and paths (and any mounted under a ``root_path``) get Starlette's routing:
    405, 404, redirects and the lifespan as before.
    """

    __slots__ = ("_app", "_hot", "state")

    def __init__(self, app: Starlette, hot: dict[str, _Asgi]) -> None:
        self._app = app
        self._hot = hot
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self._hot.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await self._app(scope, receive, send)


class _StreamOut:
    """The client's side of a streamed answer: the :data:`~router.gateway.driver.Sink`.

    Nothing is sent until the first content delta: until then a failed attempt is
    invisible to the client, and a task that fails outright still gets a proper HTTP
    error status.
    """

    def __init__(
        self,
        gateway: Gateway,
        send: Send,
        exchange: _Exchange,
        events: OpenAIEvents | AnthropicEvents,
        route: str,
    ) -> None:
        self.gateway = gateway
        self.send = send
        self.exchange = exchange
        self.events = events
        self.route = route
        self.started = False

    async def start(self, model: str) -> None:
        self.started = True
        ex = self.exchange
        ex.ttft = time.perf_counter() - ex.started
        self.gateway.metrics.first_token(self.route, ex.ttft)
        headers = [
            *_SSE_HEADERS,
            (b"x-request-id", ex.id.encode()),
            (b"x-costroute-route", self.route.encode()),
            (b"x-costroute-model", model.encode()),
        ]
        ex.status = 200
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def __call__(self, model: str, event: TextDelta | ToolCallDelta) -> bool:
        data = self.events.delta(model, event)
        if not data:
            return False
        if not self.started:
            await self.start(model)
        await self.send({"type": "http.response.body", "body": data, "more_body": True})
        return True

    async def close(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": False})


class Gateway:
    """The routing policy behind HTTP: one :class:`~router.live.Router`, its providers,
    a :class:`~router.gateway.driver.GatewayDriver`, metrics, limits and the ASGI
    :attr:`app`.

    ``config`` is a :class:`~router.config.RouterConfig` or the path of a config file
    (then watched and hot-reloaded when ``settings.watch``). ``providers`` maps model
    ids to ready providers (tests); other models get providers built from their
    endpoints over ``transport`` (default: one shared :class:`Http1Transport
    <router.providers.http1.Http1Transport>` with ``upstream="http1"``, an
    :class:`AiohttpTransport <router.providers.aiohttp_transport.AiohttpTransport>` with
    ``upstream="aiohttp"``, httpx's own with ``upstream="httpx"``).
    ``key`` overrides the key read from ``settings.key_env``.

    Raises :class:`~router.errors.ConfigError` for a config that does not load and
    :class:`GatewayError` for settings it cannot serve safely (no key for a
    non-loopback host, a bad limit, a recording path that cannot be opened).
    """

    def __init__(
        self,
        config: RouterConfig | str | os.PathLike[str],
        settings: GatewaySettings | None = None,
        *,
        providers: Mapping[str, ModelProvider] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        key: str | None = None,
    ) -> None:
        settings = settings or GatewaySettings()
        self.settings = settings
        self.config_path: Path | None = None
        self._config_digest = b""
        if not isinstance(config, RouterConfig):
            self.config_path = Path(config)
            if not self.config_path.exists():
                raise ConfigError(f"--config: {self.config_path}: no such file")
            config = load_config(self.config_path)
            self._config_digest = hashlib.sha256(self.config_path.read_bytes()).digest()
        for name, value in (
            ("max_body_bytes", settings.max_body_bytes),
            ("max_concurrency", settings.max_concurrency),
        ):
            if value < 1:
                raise GatewayError(f"{name}: expected a positive number, got {value}")
        if not (settings.overload_retry_after_s > 0 and settings.drain_timeout_s >= 0):
            raise GatewayError("overload_retry_after_s must be > 0 and drain_timeout_s >= 0")
        if key is None:
            key = os.environ.get(settings.key_env, "").strip() or None
        if key is None and not is_loopback(settings.host):
            raise GatewayError(
                f"--host {settings.host} is reachable beyond this machine: set the gateway "
                f"key in the environment variable {settings.key_env} (clients send it as "
                "'Authorization: Bearer <key>' or 'x-api-key: <key>')"
            )
        self._key = key.encode() if key is not None else None
        recorder = attempts = None
        if settings.record is not None:
            try:
                recorder = TraceRecorder(settings.record)
            except (InputError, OSError) as exc:
                raise GatewayError(f"--record: {exc}") from exc
        if settings.record_attempts is not None:
            from router.recording import AttemptRecorder

            try:
                attempts = AttemptRecorder(settings.record_attempts)
            except (InputError, OSError) as exc:
                if recorder is not None:
                    recorder.close()
                raise GatewayError(f"--record-attempts: {exc}") from exc
        self._attempt_recorder = attempts
        if transport is None and settings.upstream == "http1":
            from router.providers.http1 import Http1Transport

            transport = Http1Transport()
        elif transport is None and settings.upstream == "aiohttp":
            from router.providers.aiohttp_transport import AiohttpTransport

            transport = AiohttpTransport()
        self._transport = transport
        self.metrics: GatewayMetrics
        self.router = Router(
            config,
            providers=providers,
            seed=settings.seed,
            recorder=recorder,
            transport=transport,
            on_alert=self._on_alert,
        )
        self.driver = GatewayDriver(
            self.router, validate=settings.validate, attempt_recorder=attempts
        )
        self.metrics = GatewayMetrics(lambda: self.router.policy, self.router.clock)
        from router.shared.metrics import SharedCollector

        self.metrics.registry.register(SharedCollector(lambda: self.router))
        # Read when scraped rather than counted per request (two locked updates saved).
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.in_flight = 0
        self.ready = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._index_config(config)
        chat = _Asgi(self._chat_completions)
        messages = _Asgi(self._messages)
        routes = [
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", _Asgi(self._count_tokens), methods=["POST"]),
            Route("/v1/models", _Asgi(self._models), methods=["GET"]),
            Route("/models", _Asgi(self._models), methods=["GET"]),
            Route("/metrics", _Asgi(self._metrics), methods=["GET"]),
            Route("/health", _Asgi(self._health), methods=["GET"]),
            Route("/ready", _Asgi(self._ready), methods=["GET"]),
        ]
        starlette = Starlette(routes=routes, lifespan=self._lifespan)
        starlette.state.gateway = self
        hot = {
            "/v1/chat/completions": chat,
            "/chat/completions": chat,
            "/v1/messages": messages,
            "/messages": messages,
        }
        #: The ASGI app to serve (see :class:`_FastPath`).
        self.app = _FastPath(starlette, hot)

    # -- config ---------------------------------------------------------------------
    def _index_config(self, config: RouterConfig) -> None:
        """Precompute what request routing looks up (redone on every reload)."""
        self._model_ids = frozenset(m.id for m in config.models)
        # A name a client may send -> the task type to route (and validate) it as. A
        # route name maps back to a task type aliased to it, so that the type's
        # validator applies to buffered routes ("sql_query" -> "sql").
        names: dict[str, str] = {}
        for task_type, route in config.aliases.items():
            if route in config.routes:
                names.setdefault(task_type, task_type)
                if config.route_for(task_type)[0] == route:
                    names.setdefault(route, task_type)
        for route in config.routes:
            names.setdefault(route, route)
        self._route_names = names

    def reload(self, config: RouterConfig) -> None:
        """Swap the config in; requests in flight finish under the routes they started
        with, breakers and spend carry over (see :meth:`Router.reload`)."""
        self.router.reload(config)
        self._index_config(config)

    async def _watch_config(self, stop: asyncio.Event) -> None:
        """Reload the config file whenever it changes; refuse (and log) a bad one."""
        import watchfiles

        path = self.config_path
        assert path is not None
        target = path.resolve()

        def is_target(_change: object, changed: str) -> bool:
            return Path(changed).resolve() == target

        # The directory is watched, not the file: editors and `optimize export` replace
        # the file by a rename, which would end a watch on the old inode.
        async for _changes in watchfiles.awatch(
            target.parent,
            watch_filter=is_target,
            stop_event=stop,
            debounce=100,
            step=20,
            recursive=False,
        ):
            self.reload_from_file()

    def reload_from_file(self) -> bool:
        """Load the config file again and apply it; a file that does not load is refused
        with one log line and the running config keeps serving. Returns whether a new
        config was applied (an unchanged file is not reloaded)."""
        path = self.config_path
        if path is None:
            return False
        try:
            raw = path.read_bytes()
        except OSError as exc:
            log.error("config reload refused: %s: %s; still serving the previous config", path, exc)
            self.metrics.reloads.labels("refused").inc()
            return False
        digest = hashlib.sha256(raw).digest()
        if digest == self._config_digest:
            return False
        try:
            config = load_config(path)
        except ConfigError as exc:
            log.error("config reload refused: %s; still serving the previous config", exc)
            self.metrics.reloads.labels("refused").inc()
            return False
        self._config_digest = digest
        self.reload(config)
        self.metrics.reloads.labels("applied").inc()
        log.info(
            "config reloaded from %s: %d models, %d routes",
            path,
            len(config.models),
            len(config.routes),
        )
        return True

    # -- lifecycle ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        watcher = None
        if self.settings.watch and self.config_path is not None:
            watcher = asyncio.create_task(self._watch_config(stop), name="costroute-config-watch")
        if self.router.shared is not None:
            await self.router.shared.start()  # never raises: a lost store means degraded
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            stop.set()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            await self.aclose()

    async def aclose(self) -> None:
        """Close the providers the gateway built, their transport and the recorder."""
        await self.router.aclose()
        if self._attempt_recorder is not None:
            self._attempt_recorder.close()
        if self._transport is not None:
            await self._transport.aclose()

    def _on_alert(self, alert: BudgetAlert) -> None:
        # The router has logged it; count it (metrics exist once construction is done).
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.alert(alert)

    # -- small endpoints ----------------------------------------------------------------
    async def _json(
        self,
        send: Send,
        status: int,
        body: object,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        # orjson: the same compact JSON as json.dumps, at a fraction of its CPU (a
        # request's own JSON work was ~10% of the gateway's CPU with the json module).
        data = orjson.dumps(body)
        # A Content-Length spares the client chunked decoding of a body sent whole.
        length = (b"content-length", str(len(data)).encode())
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, length, *(headers or [])],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _authorized(self, scope: Scope) -> bool:
        """Whether the request carries the gateway key (always, when none is set)."""
        expected = self._key
        if expected is None:
            return True
        offered = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    offered = token.strip()
                    break
            elif name == b"x-api-key":
                offered = value.strip()
                break
        # Constant time: how much of a guess matches must not show in the timing.
        return hmac.compare_digest(offered, expected)

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, {"status": "ok"})

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ready:
            config = self.router.config
            body = {"status": "ready", "routes": len(config.routes), "models": len(config.models)}
            shared = self.router.shared_status()
            if shared is not None:
                # Still 200 while degraded: routing goes on with local state.
                body["shared"] = shared.as_dict()
            await self._json(send, 200, body)
        else:
            await self._json(send, 503, {"status": "starting or draining"})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorized(scope):
            await self._json(send, 401, error_body("openai", 401, "missing or wrong gateway key"))
            return
        from prometheus_client import CONTENT_TYPE_LATEST

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            }
        )
        await send({"type": "http.response.body", "body": self.metrics.render()})

    def model_names(self) -> list[str]:
        """What a client may send as ``model``: ``auto``, routes, aliases, model ids."""
        config = self.router.config
        names = ["auto", *config.routes]
        names += [t for t, r in config.aliases.items() if r in config.routes and t not in names]
        names += [m.id for m in config.models if m.id not in names]
        return names

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = _dialect_of(scope)
        if not self._authorized(scope):
            await self._json(send, 401, error_body(dialect, 401, "missing or wrong gateway key"))
            return
        names = self.model_names()
        if dialect == "anthropic":
            data = [
                {"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}
                for n in names
            ]
            body: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": names[0],
                "last_id": names[-1],
            }
        else:
            data = [
                {"id": n, "object": "model", "created": 0, "owned_by": "costroute"} for n in names
            ]
            body = {"object": "list", "data": data}
        await self._json(send, 200, body)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorized(scope):
            await self._json(
                send, 401, error_body("anthropic", 401, "missing or wrong gateway key")
            )
            return
        try:
            body = await self._read_body(scope, receive)
        except _Reply as reply:
            await self._json(
                send, reply.status, error_body("anthropic", reply.status, reply.message)
            )
            return
        if body is None:
            return
        await self._json(send, 200, {"input_tokens": math.ceil(len(body) / _CHARS_PER_TOKEN)})

    # -- routed requests ------------------------------------------------------------
    async def _chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._routed(scope, receive, send, "openai")

    async def _messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._routed(scope, receive, send, "anthropic")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body (``None``: the client left), or a 413 past the limit."""
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _Reply(400, "bad Content-Length", "bad_request") from None
                if declared > limit:
                    # Refused before reading a byte of it.
                    raise _Reply(
                        413,
                        f"request body of {declared} bytes exceeds the gateway's limit of "
                        f"{limit} bytes",
                        "too_large",
                        code="request_too_large",
                    )
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Reply(
                    413,
                    f"request body exceeds the gateway's limit of {limit} bytes",
                    "too_large",
                    code="request_too_large",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _task(
        self, scope: Scope, request: ChatRequest, body_size: int, request_id: str
    ) -> tuple[Task, str | None]:
        """The task for a request and the model to pin first (see the module docstring)."""
        header = None
        for name, value in scope["headers"]:
            if name == b"x-task-type":
                header = value.decode("latin-1").strip()
                break
        names = self._route_names
        model = request.model
        pin = model if model in self._model_ids else None
        if header:
            task_type: str | None = names.get(header, header)
        else:
            task_type = names.get(model)
        task = Task(
            request_id,
            task_type,
            None,
            math.ceil(body_size / _CHARS_PER_TOKEN),
            request.max_tokens or DEFAULT_COMPLETION_TOKENS,
            0.0,
            None,
            request.messages,
            request.tools,
            request.tool_choice,
        )
        if task_type is None:
            task.task_type = classify(task.prompt_text())
        return task, pin

    async def _routed(self, scope: Scope, receive: Receive, send: Send, dialect: Dialect) -> None:
        ex = _Exchange(f"gw-{self._id_prefix}-{next(self._ids)}", scope["path"], dialect)
        counted = False
        try:
            if not self._authorized(scope):
                raise _Reply(
                    401, "missing or wrong gateway key", "unauthorized", code="invalid_api_key"
                )
            if self.in_flight >= self.settings.max_concurrency:
                raise _Reply(
                    429,
                    f"the gateway is serving its limit of {self.settings.max_concurrency} "
                    "requests; retry after the Retry-After delay",
                    "overloaded",
                    code="gateway_overloaded",
                    headers=_retry_headers(self.settings.overload_retry_after_s),
                )
            self.in_flight += 1
            counted = True
            body = await self._read_body(scope, receive)
            if body is None:
                ex.status, ex.outcome = 499, "cancelled"  # 499: the client closed first
                return
            try:
                data = orjson.loads(body)  # strict JSON: NaN/Infinity literals are refused
            except ValueError:
                raise _Reply(400, "the request body is not valid JSON", "bad_request") from None
            try:
                request = parse_openai(data) if dialect == "openai" else parse_anthropic(data)
                check_messages(request.messages)
                check_tools(request.tools)
                check_tool_choice(request.tool_choice)
            except ClientError as exc:
                raise _Reply(exc.status, str(exc), "bad_request", param=exc.param) from None
            except InputError as exc:
                raise _Reply(400, str(exc), "bad_request") from None
            ex.stream = request.stream
            task, pin = self._task(scope, request, len(body), ex.id)
            await self._serve_task(scope, receive, send, dialect, ex, request, task, pin)
        except _Reply as reply:
            ex.status = reply.status
            ex.outcome = reply.outcome
            headers = [(b"x-request-id", ex.id.encode()), *reply.headers]
            body_out = error_body(
                dialect, reply.status, reply.message, code=reply.code, param=reply.param
            )
            await self._json(send, reply.status, body_out, headers)
        except Exception:
            # A bug of ours: the run was aborted (its reservation given back) by the
            # driver; the client still gets an answer in its own format if it can.
            log.exception("request %s failed inside the gateway", ex.id)
            ex.outcome = "error"
            if ex.status == 0:
                ex.status = 500
                message = f"the gateway failed on request {ex.id}; see its log"
                await self._json(send, 500, error_body(dialect, 500, message, code="gateway_error"))
        finally:
            if counted:
                self.in_flight -= 1
            self._log(ex)

    async def _serve_task(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        dialect: Dialect,
        ex: _Exchange,
        request: ChatRequest,
        task: Task,
        pin: str | None,
    ) -> None:
        """Route ``task`` and answer the client, streamed or not."""
        route = self.router.policy.plan_for(task.task_type or "").name
        ex.route = route
        created = int(time.time())
        out: _StreamOut | None = None
        if request.stream:
            events = (
                OpenAIEvents(ex.id, created, request.include_usage)
                if dialect == "openai"
                else AnthropicEvents(ex.id)
            )
            out = _StreamOut(self, send, ex, events, route)
        routed = await self._drive(receive, task, pin, out)
        if routed is None:  # the client went away; its run was aborted and recorded
            ex.status, ex.outcome = 499, "cancelled"
            return
        result = routed.result
        ex.route = result.route
        ex.attempts = len(result.attempts)
        ex.cost = result.cost_usd
        ex.outcome = "ok" if result.success else (result.error or "failed")
        ex.model = result.model or (result.final_attempt.model if result.attempts else "-")
        self.metrics.result(result)
        completion = routed.completion
        if result.success and completion is not None:
            model = result.model or "-"
            if out is not None:
                data = b""
                if not routed.sent:
                    # Buffered (or nothing streamed): the whole answer goes out now.
                    for event in completion_events(completion):
                        if not isinstance(event, StreamEnd):
                            data += out.events.delta(model, event)
                if not out.started:
                    await out.start(model)
                await out.close(data + out.events.end(model, completion))
                return
            ex.status = 200
            if dialect == "openai":
                payload = openai_body(completion, model=model, response_id=ex.id, created=created)
            else:
                payload = anthropic_body(completion, model=model, response_id=ex.id)
            headers = [
                (b"x-request-id", ex.id.encode()),
                (b"x-costroute-route", result.route.encode()),
                (b"x-costroute-model", model.encode()),
                (b"x-costroute-attempts", str(len(result.attempts)).encode()),
            ]
            await self._json(send, 200, payload, headers)
            return
        status, message, code, retry_after = failure_reply(
            result, self.router.policy, self.router.clock()
        )
        if out is not None and out.started:
            # Content already reached the client: end its stream with an error event
            # (never a silent truncation); the HTTP status was 200 and stays so.
            await out.close(out.events.error(status, message, code))
            return
        ex.status = status
        headers = [(b"x-request-id", ex.id.encode()), (b"x-costroute-route", result.route.encode())]
        if retry_after is not None:
            headers += _retry_headers(retry_after)
        await self._json(send, status, error_body(dialect, status, message, code=code), headers)

    async def _drive(
        self, receive: Receive, task: Task, pin: str | None, out: _StreamOut | None
    ) -> Routed | None:
        """Run the driver; if the client disconnects meanwhile, cancel it (which aborts
        the run and gives back its reservation) and return ``None``."""
        current = asyncio.current_task()
        assert current is not None
        state: dict[str, Any] = {"running": True, "gone": False, "watcher": None}

        async def watch() -> None:
            # The body has been read: the next message is the disconnect (or, once the
            # response is complete, a synthetic one we must not act on: `running`).
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if state["running"]:
                        state["gone"] = True
                        current.cancel()
                    return

        def start_watching() -> None:
            if state["running"]:
                state["watcher"] = asyncio.ensure_future(watch())

        # The watcher starts only once a request has lasted _WATCH_AFTER_S: a timer is a
        # fraction of a task's cost, and most answers that fast never need one. A client
        # leaving earlier is noticed at that point.
        timer = asyncio.get_running_loop().call_later(_WATCH_AFTER_S, start_watching)
        try:
            return await self.driver.run(task, pin=pin, sink=out)
        except asyncio.CancelledError:
            if state["gone"]:
                # Our own cancellation, delivered: swallow it (the server's would not
                # be ours, and propagates).
                current.uncancel()
                return None
            raise
        finally:
            state["running"] = False
            timer.cancel()
            if state["watcher"] is not None:
                state["watcher"].cancel()

    def _log(self, ex: _Exchange) -> None:
        latency = time.perf_counter() - ex.started
        self.metrics.request(ex.route, ex.model, ex.outcome, latency)
        if access_log.isEnabledFor(logging.INFO):
            line = {
                "ts": round(time.time(), 3),
                "id": ex.id,
                "path": ex.path,
                "dialect": ex.dialect,
                "status": ex.status,
                "stream": ex.stream,
                "route": ex.route,
                "model": ex.model,
                "attempts": ex.attempts,
                "outcome": ex.outcome,
                "latency_ms": round(latency * 1000, 2),
                "ttft_ms": None if ex.ttft is None else round(ex.ttft * 1000, 2),
                "cost_usd": round(ex.cost, 8),
            }
            access_log.info(orjson.dumps(line).decode())


def _dialect_of(scope: Scope) -> Dialect:
    """Anthropic clients send ``anthropic-version`` (or ``x-api-key``); others are OpenAI's."""
    for name, _ in scope["headers"]:
        if name == b"anthropic-version":
            return "anthropic"
    return "openai"


def readmission_s(result: TaskResult, policy: RoutingPolicy, now: float) -> float | None:
    """Seconds until the soonest skipped candidate of ``result`` can be tried again:
    an open breaker's re-admission, the next budget day, a latency or quality
    cool-down. ``None`` when every skip is static (cost, preview, deprecated...)."""
    soonest: float | None = None
    for model, reason in result.skips:
        index = policy.model_index.get(model)
        if index is None:
            continue
        if reason == "breaker_open":
            breaker = policy.breakers[index]
            wait = breaker.open_until - now
            if wait <= 0:  # half-open with its probe slots taken: soon
                wait = 1.0
        elif reason == "budget":
            wait = (math.floor(now / DAY_S) + 1) * DAY_S - now
        elif reason in ("latency", "quality"):
            stats = policy.route_stats.get((result.route, model))
            hold = 0.0
            if stats is not None:
                hold = stats.latency_hold_until if reason == "latency" else stats.quality_hold_until
            wait = hold - now if hold > now else 1.0
        else:
            continue
        soonest = wait if soonest is None else min(soonest, wait)
    return soonest


_TIMEOUT_KINDS = frozenset({"timeout", "first_token_timeout"})
_REQUEST_KINDS = frozenset({"bad_request", "context_length"})


def failure_reply(
    result: TaskResult, policy: RoutingPolicy, now: float
) -> tuple[int, str, str | None, float | None]:
    """``(status, message, code, retry_after_s)`` for a task that failed.

    Every candidate skipped -> 503 with the soonest re-admission as Retry-After;
    every attempt rate limited -> 429 with the shortest Retry-After the providers
    asked for; every attempt refused as a bad or too long request -> 400 with the
    provider's reason; every attempt timed out -> 504; the task's own request invalid
    -> 400; a refusal -> 400 ``content_filter``; otherwise 502. Messages name models
    and failure kinds (and a provider's reason for a 400), never a key.
    """
    error = result.error
    attempts = result.attempts
    kinds = [a.kind for a in attempts]
    reasons = "; ".join(result.reasons()) or "no candidate"
    where = f"route {result.route!r}"
    if error == "bad_spec":
        return 400, f"invalid request: {result.detail}", "bad_request", None
    if error == "content_filter":
        return (
            400,
            f"the model refused the request (content filter): {reasons}",
            "content_filter",
            None,
        )
    if error == "error":
        return 500, f"the gateway failed while routing: {result.detail}", "gateway_error", None
    if not attempts:
        wait = readmission_s(result, policy, now)
        return 503, f"no model of {where} can take the request now: {reasons}", "no_candidate", wait
    if all(k == "rate_limited" for k in kinds):
        asked = [a.retry_after_s for a in attempts if a.retry_after_s is not None]
        wait = min(asked) if asked else readmission_s(result, policy, now) or 1.0
        return 429, f"every model of {where} is rate limited: {reasons}", "rate_limited", wait
    if all(k in _REQUEST_KINDS for k in kinds):
        code = "context_length_exceeded" if kinds[-1] == "context_length" else "bad_request"
        return 400, f"the providers refused the request: {attempts[-1].detail}", code, None
    if all(k in _TIMEOUT_KINDS for k in kinds):
        return 504, f"no model of {where} answered in time: {reasons}", "timeout", None
    return 502, f"every model of {where} failed: {reasons}", "upstream_error", None


def create_app(
    config: RouterConfig | str | os.PathLike[str],
    settings: GatewaySettings | None = None,
    **kwargs: Any,
) -> _FastPath:
    """The gateway's ASGI app (``app.state.gateway`` is the :class:`Gateway`); see
    :class:`Gateway` for the arguments."""
    return Gateway(config, settings, **kwargs).app
