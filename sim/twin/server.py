"""The provider twin: the scenario's stochastic models served over OpenAI-compatible HTTP.

:class:`TwinServer` listens on loopback and answers ``POST /v1/chat/completions`` (and
``GET /v1/models``) the way the scenario says each model behaves, so an agent or a
router can be tested against realistic faults without a provider account::

    with TwinServer(load_seed_scenario(), seed=0, time_scale=0.01) as twin:
        ...  # endpoint base_url = twin.url ("http://127.0.0.1:<port>/v1"),
             # endpoint model = a scenario model id

``sim serve --scenario S --port P --time-scale X`` runs the same server from the shell.

Fault semantics (the simulator's, see :mod:`sim.engine.driver`)
--------------------------------------------------------
The request's ``model`` names the scenario model (unknown: 404, OpenAI-style error).
Each chat completion then goes through the steps of :meth:`sim.engine.driver.Simulation._call`,
in the same order, against the same :class:`~sim.world.providers.World` (the scenario realised
for ``seed``):

1. *Rate limit*: more than ``rate_limit_rpm`` requests to the model in one scenario
   minute (fixed windows ``[60 n, 60 (n + 1))``) get a 429 after 0.05 s carrying the
   scenario's ``retry_after_s`` as ``retry-after-ms`` and as ``Retry-After`` in
   (possibly fractional, once scaled) seconds. A turned-away request does not count.
2. *Outage* at the request's arrival: ``fail_fast`` gives a 503 after
   ``fail_fast_latency_s``; ``hang`` accepts the request and never answers (the
   connection stays open until the client gives up).
3. *Capacity*: at most ``capacity`` requests are served at once per model; later ones
   wait in FIFO order. A client that hangs up while waiting, or while being served,
   frees its place at once (as the simulator's timeout does).
4. *The answer*: :meth:`World.attempt(m, task, attempt, ...) <sim.world.providers.World.attempt>`
   gives the kind and the service time. ``server_error`` is a 500 after
   ``fail_fast_latency_s``; ``context_length`` (a prompt longer than the model's
   ``context_window``) is a 400 with code ``context_length_exceeded`` after
   ``fail_fast_latency_s``, streamed or not; ``ok`` is an answer that passes the
   router's validator for the task type (:func:`answer_text`); ``wrong`` is a
   well-formed completion whose content fails it; ``malformed`` is a 200 whose body is
   cut-off JSON, which a client reports as malformed.

Streaming (``"stream": true``): the scenario has no streaming figures, so stream
faults are derived from the same draws (an assumption, chosen so that the failure
kind a client sees matches the simulator's and so no new parameter is invented):
``ok``/``wrong`` stream the answer with the first content token after
``min(fail_fast_latency_s, service)`` (the seed scenario reads that figure as one
time-to-first-token) and ``[DONE]`` at the service time; ``malformed`` streams the
answer but ends with a data line that is not JSON; ``server_error`` is a stream *cut*
part-way (headers and a first token, then the connection closes without the
terminator) at ``fail_fast_latency_s``; a ``hang`` outage is a stream that *stalls*
after its first token and never resumes. Fail-fast outages and 429s are plain error
responses, streamed or not.

Time
----
Scenario time is the server's monotonic wall clock since start (or :meth:`reset`)
divided by ``time_scale``: with ``time_scale=0.01`` a scenario minute passes in 0.6 s
and every latency, Retry-After and outage is 100 times shorter on the wall. Outage
timelines are read at the scenario time a request arrives.

Common random numbers
---------------------
A request is identified by ``(task index, attempt)``: the ``X-Task-Index`` and
``X-Attempt`` headers, else a tag ``[twin task=<i> ...]`` anywhere in the messages
(:func:`twin_tag`; for clients such as :class:`router.live.Router` that send only
messages), in which case the attempt is the number of requests for that
``(model, task)`` so far (what the router's policy counts too). Without either, each
request is a new task index from a per-model counter, attempt 1. So the same task
meets the same answer, kind and service time in :func:`sim.engine.replays.replay` (which keys
task ``i`` of a trace by its position and the trace by :func:`sim.engine.replays.trace_key`)
and through a twin given that trace's key (``trace_key=``), for the same seed. A twin
without a trace key draws the world keyed by the seed alone. The
task type comes from ``X-Task-Type`` or the tag's ``type=``, else
:func:`router.task.classify` of the last user message, as the router resolves it; the
sizes from ``X-Prompt-Tokens`` / ``X-Completion-Tokens`` or the tag, else the prompt
is estimated at 4 characters a token and the completion at 0 (size terms of the
latency only; the seed scenario has none).

Limits (documented, not hidden): a "wrong" answer can fail validation only for task
types that have a validator, and an "ok" answer passes only validators whose spec the
twin can satisfy without seeing it (no JSON Schema, regex examples, SQL expected rows,
test commands or ``must_handle`` names absent from the prompt). HTTP/1.1 pipelining is
not supported (no mainstream client pipelines).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from router.task import classify
from router.testing_http import (
    Chunk,
    Connection,
    Json,
    LoopbackServer,
    Raw,
    RecordedRequest,
    openai_completion,
    openai_error,
    read_request,
)
from sim.world.providers import World
from sim.world.scenario import Scenario, load_scenario
from sim.world.site import RATE_LIMIT_LATENCY_S, ProviderSite

__all__ = ["TwinServer", "TwinRequest", "answer_text", "twin_tag"]

#: Seconds ``stop()`` and the thread hand-over wait before giving up.
_STOP_WAIT_S = 5.0
#: Outage timelines are drawn this far up front; they extend lazily past it.
_HORIZON_S = 24 * 3600.0
#: (model, task) attempt counters kept; the oldest are forgotten beyond this, so a
#: long-running server's memory stays bounded (a task's retries are seconds apart).
_MAX_COUNTERS = 200_000
#: Characters per token when a request does not state its prompt size.
_CHARS_PER_TOKEN = 4

_TAG = re.compile(r"\[twin\s+([^\]]*)\]")
_FILE_NAME = re.compile(
    r"\b([\w-]+(?:/[\w.-]+)*\.(?:py|js|ts|go|rs|java|c|h|cpp|rb|sql|json|ya?ml|toml|md|txt))\b"
)
_EXCEPTION_NAME = re.compile(r"\b([A-Z]\w*(?:Error|Exception))\b")

AnswerKind = Literal["ok", "wrong"]


# ------------------------------------------------------------------------- answers
def twin_tag(
    task_index: int,
    task_type: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> str:
    """The tag that identifies a task to the twin from inside a prompt.

    ``[twin task=<i> type=<t> prompt_tokens=<n> completion_tokens=<n>]`` (the optional
    parts only when given). Put it anywhere in a message when the client cannot send
    the ``X-Task-*`` headers.
    """
    if task_index < 0:
        raise ValueError(f"task_index must be >= 0, got {task_index}")
    parts = [f"task={task_index}"]
    if task_type:
        parts.append(f"type={task_type}")
    if prompt_tokens is not None:
        parts.append(f"prompt_tokens={prompt_tokens}")
    if completion_tokens is not None:
        parts.append(f"completion_tokens={completion_tokens}")
    return f"[twin {' '.join(parts)}]"


def answer_text(kind: AnswerKind, task_type: str, prompt: str = "") -> str:
    """The content of an ``ok`` or ``wrong`` answer for ``task_type``.

    Contract, against :mod:`router.validation`: an ``ok`` answer passes the validator
    of its type whenever the task's spec asks nothing the twin cannot see (json: one
    JSON object; regex: ``.*``; sql: ``SELECT 1``; bug_patch: a diff inserting a
    comment at the top of the file named in the prompt, else ``main.py``, which applies
    to any single source text; error_handling: Python handling the exception names
    the prompt mentions). A ``wrong`` answer fails the validator of every type that
    has one, whatever the spec (prose, a pattern that does not compile, SQL that does
    not parse, Python that does not compile). Types without a validator pass both.
    """
    if kind == "ok":
        if task_type == "json":
            return '{"ok": true, "source": "twin"}'
        if task_type == "regex":
            return ".*"
        if task_type == "sql":
            return "SELECT 1"
        if task_type == "bug_patch":
            match = _FILE_NAME.search(prompt)
            name = match.group(1) if match else "main.py"
            # An insertion before line 1 ("-0,0") applies to any text, even empty.
            return f"--- a/{name}\n+++ b/{name}\n@@ -0,0 +1,1 @@\n+# fixed (twin)\n"
        if task_type == "error_handling":
            names = list(dict.fromkeys(_EXCEPTION_NAME.findall(prompt))) or ["Exception"]
            caught = names[0] if len(names) == 1 else f"({', '.join(names)})"
            return (
                "def run(step):\n"
                "    try:\n"
                "        return step()\n"
                f"    except {caught} as exc:\n"
                '        raise RuntimeError("step failed") from exc\n'
            )
        return "Done."
    if task_type == "regex":
        return "([a-z]+"  # an unclosed group: never compiles
    if task_type == "error_handling":
        return "try:\n    step()\nexcept"  # a SyntaxError
    # Prose: not JSON, not SQL that parses, not a diff.
    return "Sorry, I could not complete this task."


def _message_texts(messages: object) -> list[tuple[str, str]]:
    """``(role, text)`` of each message; list-of-parts contents are joined."""
    out: list[tuple[str, str]] = []
    if not isinstance(messages, list):
        return out
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
        if isinstance(role, str) and isinstance(content, str):
            out.append((role, content))
    return out


@dataclass(frozen=True, slots=True)
class TwinRequest:
    """Who a chat completion is for: what the World draws are keyed by.

    ``task_index``/``attempt`` are ``None`` when the request did not say (the server
    then assigns them); ``prompt`` is the last user message (for answer shapes).
    """

    task_index: int | None
    attempt: int | None
    task_type: str
    prompt_tokens: int
    completion_tokens: int | None
    prompt: str

    @classmethod
    def from_request(cls, headers: Mapping[str, str], body: Mapping[str, Any]) -> TwinRequest:
        """Read the identity from ``X-Task-*`` headers, else the tag, else defaults.

        Raises ``ValueError`` naming the header or tag field that is not a
        non-negative integer (the server answers it with a 400).
        """
        texts = _message_texts(body.get("messages"))
        tag: dict[str, str] = {}
        for _, text in texts:
            match = _TAG.search(text)
            if match:
                for part in match.group(1).split():
                    key, _, value = part.partition("=")
                    tag[key] = value
                break
        users = [text for role, text in texts if role == "user"]
        prompt = users[-1] if users else (texts[-1][1] if texts else "")

        def number(header: str, key: str, minimum: int) -> int | None:
            raw = headers.get(header.lower())
            where = f"header {header}"
            if raw is None and key in tag:
                raw, where = tag[key], f"twin tag {key}="
            if raw is None:
                return None
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{where}: expected an integer, got {raw!r}") from None
            if value < minimum:
                raise ValueError(f"{where}: expected an integer >= {minimum}, got {value}")
            return value

        task_index = number("X-Task-Index", "task", 0)
        attempt = number("X-Attempt", "attempt", 1)
        prompt_tokens = number("X-Prompt-Tokens", "prompt_tokens", 0)
        completion_tokens = number("X-Completion-Tokens", "completion_tokens", 0)
        task_type = headers.get("x-task-type") or tag.get("type") or classify(prompt)
        if prompt_tokens is None:
            chars = sum(len(text) for _, text in texts)
            prompt_tokens = math.ceil(chars / _CHARS_PER_TOKEN)
        return cls(task_index, attempt, task_type, prompt_tokens, completion_tokens, prompt)


# --------------------------------------------------------------------------- server
def _waiting(waiter: asyncio.Future[None]) -> bool:
    # A waiter that gave up has cancelled its future.
    return not waiter.done()


def _release(site: ProviderSite[asyncio.Future[None]]) -> None:
    """Give back a slot, handing it to the first waiter still waiting (as the
    simulator does)."""
    waiter = site.release(_waiting)
    if waiter is not None:
        waiter.set_result(None)


class _Gone(Exception):
    """The client hung up while the server was waiting on its behalf."""


class _StatusConnection(Connection):
    """A connection that remembers the status line it sent last (for the request log)."""

    status: int | None = None

    def head(self, status: int, headers: Mapping[str, str]) -> bytes:
        self.status = status
        return super().head(status, headers)


#: ``on_request(method, path, model, status, latency_ms)``: called once per request
#: after its answer ends (``status`` None: nothing was sent, e.g. a hang the client
#: gave up on). Never given a payload, a header or a key.
RequestHook = Callable[[str, str, str | None, int | None, float], None]


class TwinServer(LoopbackServer):
    """An OpenAI-compatible server whose models behave like ``scenario``'s.

    ``scenario`` is a :class:`~sim.world.scenario.Scenario` or a path to one; ``seed`` picks
    the replication (:meth:`Scenario.realize <sim.world.scenario.Scenario.realize>`);
    ``time_scale`` multiplies every duration on the wall clock (0.01: 100 times
    faster). ``port=0`` lets the OS pick a free port. Use it as ``with`` (own event
    loop in a daemon thread), ``async with`` (the running loop), or call
    :meth:`start`/:meth:`stop`. :attr:`url` is the ``base_url`` an OpenAI client
    needs (``http://host:port/v1``). :attr:`served` counts what was answered, by
    outcome (``ok``, ``wrong``, ``malformed``, ``server_error``, ``context_length``,
    ``rate_limited``, ``outage_fail_fast``, ``outage_hang``, ``client_gone``,
    ``not_found``, ``bad_request``). ``trace_key`` keys the world's per-task draws to
    a trace (:func:`sim.engine.replays.trace_key` of the trace a client replays through the
    twin; None: the world keyed by the seed alone).

    Raises :class:`~sim.errors.ScenarioError` for an unreadable scenario or a bad
    seed, ``ValueError`` for a bad ``time_scale`` or ``port``, and ``OSError`` from
    :meth:`start` when the address cannot be bound.
    """

    def __init__(
        self,
        scenario: Scenario | str | os.PathLike[str],
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: RequestHook | None = None,
        trace_key: int | None = None,
    ) -> None:
        self.on_request = on_request
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(Path(scenario))
        if (
            isinstance(time_scale, bool)
            or not isinstance(time_scale, int | float)
            or not math.isfinite(time_scale)
            or time_scale <= 0
        ):
            raise ValueError(f"time_scale: expected a positive number, got {time_scale!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port: expected an integer in 0..65535, got {port!r}")
        self.scenario = scenario
        self.seed = seed
        self.time_scale = float(time_scale)
        super().__init__(host, port)
        self.world: World = scenario.realize(seed, _HORIZON_S, trace_key=trace_key)
        self.model_ids = self.world.model_ids
        self.served: Counter[str] = Counter()
        self._sites: list[ProviderSite[asyncio.Future[None]]] = []
        self._counters: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._next_task: list[itertools.count[int]] = []
        self._t0 = 0.0
        self._clear()

    # -- clock and state ------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL of the OpenAI API, ``http://<host>:<port>/v1``."""
        if self._server is None:
            raise RuntimeError("TwinServer: not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def now_s(self) -> float:
        """Scenario seconds since start (or the last :meth:`reset`). Server loop only."""
        loop = self._loop or asyncio.get_running_loop()
        return (loop.time() - self._t0) / self.time_scale

    def _clear(self) -> None:
        w = self.world
        self._sites = [ProviderSite(w, i) for i in range(len(self.model_ids))]
        self._counters.clear()
        self._next_task = [itertools.count() for _ in self.model_ids]
        self.served.clear()

    def reset(self) -> None:
        """Restart scenario time at 0 and forget windows, counters and :attr:`served`.

        Safe from any thread. Requests in flight finish on the old state; call it while
        the server is idle (e.g. right before a replay, to align its t = 0).
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("TwinServer: not started")

        def do() -> None:
            self._t0 = loop.time()
            self._clear()

        if self._thread is not None and threading.current_thread() is not self._thread:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()

            def run() -> None:
                do()
                done.set_result(None)

            loop.call_soon_threadsafe(run)
            done.result(_STOP_WAIT_S)
        else:
            do()

    # -- lifecycle ------------------------------------------------------------------
    def _on_start(self) -> None:
        assert self._loop is not None
        self._t0 = self._loop.time()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._server is not None else "not started"
        return (
            f"TwinServer(scenario={self.scenario.name!r}, seed={self.seed}, "
            f"time_scale={self.time_scale:g}, {where})"
        )

    # -- HTTP -----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _StatusConnection(reader, writer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                # Every delay is measured from here, so the server's own parsing and
                # bookkeeping do not add to the latency a client sees.
                received = loop.time()
                conn.status = None
                try:
                    keep = await self._dispatch(conn, request, received)
                finally:
                    if self.on_request is not None:
                        self._log(request, conn.status, (loop.time() - received) * 1000)
                if not keep:
                    break
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            _Gone,
        ):
            pass  # the client went away or sent garbage: nothing left to answer
        except asyncio.CancelledError:
            pass  # stop(): end quietly so asyncio does not log the cancelled stream
        finally:
            self._tasks.discard(task)
            writer.close()

    def _log(self, request: RecordedRequest, status: int | None, latency_ms: float) -> None:
        model = None
        try:
            body = json.loads(request.body)
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                model = body["model"]
        except (ValueError, UnicodeDecodeError):
            pass
        path = request.path.split("?", 1)[0]
        try:
            self.on_request(request.method, path, model, status, latency_ms)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - a log hook must never break serving
            pass

    async def _dispatch(self, conn: Connection, request: RecordedRequest, received: float) -> bool:
        """Answer one request (read completely at loop time ``received``); return
        whether the connection may be kept alive."""
        path = request.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            if request.method != "GET":
                return await self._error(conn, request, 405, "use GET", "invalid_request_error")
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": self.world.provider(i)}
                for i, m in enumerate(self.model_ids)
            ]
            return await Json({"object": "list", "data": data}).play(conn, request)
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self.served["not_found"] += 1
            return await self._error(
                conn, request, 404, f"no route {request.method} {path}", "invalid_request_error"
            )
        if request.method != "POST":
            return await self._error(conn, request, 405, "use POST", "invalid_request_error")
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.served["bad_request"] += 1
            return await self._error(
                conn, request, 400, "the body must be a JSON object", "invalid_request_error"
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.served["bad_request"] += 1
            return await self._error(
                conn, request, 400, "'model' is required", "invalid_request_error", param="model"
            )
        if model not in self.model_ids:
            self.served["not_found"] += 1
            return await self._error(
                conn,
                request,
                404,
                f"The model '{model}' does not exist; this twin serves: "
                f"{', '.join(self.model_ids)}",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.served["bad_request"] += 1
            return await self._error(
                conn,
                request,
                400,
                "'messages' must be a non-empty list",
                "invalid_request_error",
                param="messages",
            )
        try:
            who = TwinRequest.from_request(request.headers, body)
        except ValueError as exc:
            self.served["bad_request"] += 1
            return await self._error(conn, request, 400, str(exc), "invalid_request_error")
        return await self._complete(
            conn,
            request,
            self.world.index(model),
            who,
            received=received,
            stream=body.get("stream") is True,
        )

    async def _error(
        self,
        conn: Connection,
        request: RecordedRequest,
        status: int,
        message: str,
        type_: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        body = openai_error(message, type=type_, code=code)
        body["error"]["param"] = param
        return await Json(body, status, dict(headers or {})).play(conn, request)

    # -- the simulated provider -------------------------------------------------------
    async def _complete(
        self,
        conn: Connection,
        request: RecordedRequest,
        m: int,
        who: TwinRequest,
        *,
        received: float,
        stream: bool,
    ) -> bool:
        world = self.world
        site = self._sites[m]
        scale = self.time_scale
        model_id = self.model_ids[m]
        loop = asyncio.get_running_loop()
        start = (received - self._t0) / scale
        # Every request counts as an attempt, 429s and outages included: the simulator
        # draws World.attempt with the policy's attempt number, which counts them too.
        task_index, attempt = self._identity(m, who)
        # 1-2. rate limit and outage at arrival: the simulator's own steps
        # (sim.world.site), in scenario time.
        down = site.arrive(start)
        if down == "rate_limited":
            self.served["rate_limited"] += 1
            await asyncio.sleep(received + RATE_LIMIT_LATENCY_S * scale - loop.time())
            retry = site.retry_after_s * scale
            return await self._error(
                conn,
                request,
                429,
                f"Rate limit reached for {model_id}: {site.rpm:g} requests per minute",
                "requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": f"{retry:g}", "retry-after-ms": f"{retry * 1000:g}"},
            )
        if down == "hang":
            self.served["outage_hang"] += 1
            if stream:
                await self._stall(conn, model_id, start)
            await self._hang(conn)
            return False
        if down == "fail_fast":
            self.served["outage_fail_fast"] += 1
            await asyncio.sleep(received + world.fail_fast_latency_s(m) * scale - loop.time())
            return await self._error(
                conn,
                request,
                503,
                f"{model_id} is temporarily unavailable (a scenario outage)",
                "server_error",
                code="service_unavailable",
            )
        watch = asyncio.ensure_future(conn.reader.read(1))
        try:
            # 3. capacity.
            begun = received if await self._acquire(site, watch) else loop.time()
            try:
                kind, service = site.answer(
                    task_index,
                    attempt,
                    who.task_type,
                    who.prompt_tokens,
                    who.completion_tokens or 0,
                )
                rid = f"chatcmpl-twin-{m}-{task_index}-{attempt}"
                if stream and kind != "context_length":
                    await self._stream(conn, watch, model_id, rid, kind, service, who, begun)
                    return False if kind == "server_error" else not watch.done()
                # 4. the answer, after the service time.
                await self._sleep_until(begun + service * scale, watch)
            finally:
                _release(site)
            self.served[kind] += 1
            if kind == "server_error":
                return await self._error(
                    conn,
                    request,
                    500,
                    "The server had an error while processing your request",
                    "server_error",
                )
            if kind == "context_length":
                # OpenAI's shape of the refusal (code and message), which a client maps
                # to its context-length kind whatever it reads first.
                return await self._error(
                    conn,
                    request,
                    400,
                    f"This model's maximum context length is {world.context_window(m)} "
                    f"tokens. However, your messages resulted in {who.prompt_tokens} tokens.",
                    "invalid_request_error",
                    param="messages",
                    code="context_length_exceeded",
                )
            if kind == "malformed":
                # A body cut off after its opening: not JSON, though the status is 200.
                head = json.dumps(openai_completion("x", model=model_id))[:60]
                return await Raw(head, 200, "application/json").play(conn, request)
            text = answer_text(kind, who.task_type, who.prompt)  # type: ignore[arg-type]
            completion = openai_completion(
                text,
                prompt_tokens=who.prompt_tokens,
                completion_tokens=self._completion_tokens(who, text),
                model=model_id,
            )
            completion["id"] = rid
            await Json(completion).play(conn, request)
            return not watch.done()
        except _Gone:
            self.served["client_gone"] += 1
            return False
        finally:
            # Wait for the cancelled read to unwind: the stream allows one reader, and
            # the next request on this connection is read right after we return.
            watch.cancel()
            await asyncio.wait({watch})

    def _identity(self, m: int, who: TwinRequest) -> tuple[int, int]:
        if who.task_index is None:
            return next(self._next_task[m]), who.attempt or 1
        if who.attempt is not None:
            return who.task_index, who.attempt
        key = (m, who.task_index)
        attempt = self._counters.pop(key, 0) + 1
        self._counters[key] = attempt  # re-inserted: most recent last
        if len(self._counters) > _MAX_COUNTERS:
            self._counters.popitem(last=False)
        return who.task_index, attempt

    @staticmethod
    def _completion_tokens(who: TwinRequest, text: str) -> int:
        if who.completion_tokens is not None:
            return who.completion_tokens
        return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))

    async def _acquire(
        self, site: ProviderSite[asyncio.Future[None]], watch: asyncio.Future[bytes]
    ) -> bool:
        """Take a slot of ``site``, queueing FIFO; True if one was free at once.

        Raises :class:`_Gone` (holding no slot) if the client leaves while queued.
        """
        if site.acquire():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        site.wait(waiter)
        await asyncio.wait({waiter, watch}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            # Handed a slot (in_use already counts us); give it back if the client left.
            if watch.done():
                _release(site)
                raise _Gone
            return False
        waiter.cancel()
        raise _Gone

    @staticmethod
    async def _sleep_until(when: float, watch: asyncio.Future[bytes]) -> None:
        """Wait until loop time ``when``; raise :class:`_Gone` if the client leaves first."""
        if watch.done():
            raise _Gone
        delay = when - asyncio.get_running_loop().time()
        if delay <= 0:
            return
        done, _ = await asyncio.wait({watch}, timeout=delay)
        if done:
            raise _Gone

    @staticmethod
    async def _hang(conn: Connection) -> None:
        # Reading to EOF notices the client hanging up; stop() cancels us otherwise.
        while await conn.reader.read(65536):
            pass

    # -- streaming ------------------------------------------------------------------
    @staticmethod
    def _chunk(rid: str, model_id: str, delta: dict[str, Any], finish: str | None) -> Chunk:
        return Chunk(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "model": model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    @staticmethod
    async def _send_head(conn: Connection) -> None:
        head = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Transfer-Encoding": "chunked",
        }
        await conn.send(conn.head(200, head))

    @staticmethod
    async def _send(conn: Connection, chunk: Chunk) -> None:
        payload = chunk.encode()
        await conn.send(b"%x\r\n%s\r\n" % (len(payload), payload))

    async def _stall(self, conn: Connection, model_id: str, start: float) -> None:
        """A hang outage on a stream: the role chunk and a first token, then silence."""
        rid = f"chatcmpl-twin-stall-{int(start)}"
        await self._send_head(conn)
        await self._send(conn, self._chunk(rid, model_id, {"role": "assistant"}, None))
        m = self.world.index(model_id)
        await asyncio.sleep(self.world.fail_fast_latency_s(m) * self.time_scale)
        await self._send(conn, self._chunk(rid, model_id, {"content": "Let me"}, None))

    async def _stream(
        self,
        conn: Connection,
        watch: asyncio.Future[bytes],
        model_id: str,
        rid: str,
        kind: str,
        service: float,
        who: TwinRequest,
        begun: float,
    ) -> None:
        """Stream one answer over ``service`` scenario seconds from loop time ``begun``
        (see the module docstring for the shapes)."""
        m = self.world.index(model_id)
        scale = self.time_scale
        await self._send_head(conn)
        await self._send(conn, self._chunk(rid, model_id, {"role": "assistant"}, None))
        if kind == "server_error":
            # Cut part-way: a first token half-way, then FIN without the terminator.
            await self._sleep_until(begun + service / 2 * scale, watch)
            await self._send(conn, self._chunk(rid, model_id, {"content": "Let me"}, None))
            await self._sleep_until(begun + service * scale, watch)
            self.served["server_error"] += 1
            conn.writer.close()
            return
        text = answer_text("ok" if kind == "ok" else "wrong", who.task_type, who.prompt)
        step = max(1, math.ceil(len(text) / 4))
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
        # The first token after about one time-to-first-token, the rest evenly spread,
        # the end of the stream at the service time.
        ttft = min(self.world.fail_fast_latency_s(m), service)
        gap = (service - ttft) / len(pieces)
        for i, piece in enumerate(pieces):
            await self._sleep_until(begun + (ttft + i * gap) * scale, watch)
            await self._send(conn, self._chunk(rid, model_id, {"content": piece}, None))
        await self._sleep_until(begun + service * scale, watch)
        if kind == "malformed":
            await self._send(conn, Chunk('{"choices": [{"delta": {"content": "'))
        else:
            await self._send(conn, self._chunk(rid, model_id, {}, "stop"))
            usage = {
                "prompt_tokens": who.prompt_tokens,
                "completion_tokens": self._completion_tokens(who, text),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            await self._send(
                conn,
                Chunk(
                    {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "model": model_id,
                        "choices": [],
                        "usage": usage,
                    }
                ),
            )
            await self._send(conn, Chunk("[DONE]"))
        await conn.send(b"0\r\n\r\n")
        self.served[kind] += 1
