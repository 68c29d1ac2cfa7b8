"""Crash-safe recording of live tasks (NDJSON): one line per task, and one per attempt.

:class:`TraceRecorder` writes the *task trace*; :class:`AttemptRecorder` writes the
*attempt records* beside it (the same file format, the same crash-safety, secrecy and
concurrency contract, described below for both).

Task records
------------

Every finished live task becomes one line in the trace schema::

    task_id str, arrival_s float, task_type str, prompt_tokens int,
    completion_tokens int, model str|null, latency_s float, success bool,
    cost_usd float, error_kind str|null, provider_model str|null,
    request_id str|null [, payload str|null]

``provider_model`` and ``request_id`` are outside :mod:`sim.traces.tasks`'s schema; its
reader keeps such columns (as text) after the schema's own. They are written on
every line (null when unknown) so that a reader learning the columns from the first
lines always sees them.

Attempt records
---------------

:class:`AttemptRecorder` writes one line per *attempt* (every provider call the
router made, retries and fallbacks included), in this schema -- the same columns, in
this order, on every line, null where unknown:

===================== ======== ======== ================================================
column                type     null?    meaning
===================== ======== ======== ================================================
``task_id``           str      no       the task the attempt belongs to
``model``             str      no       the router's id of the model called
``attempt``           int      no       1-based number of this call on ``model`` within
                                        the task (a retry is 2; a fallback model
                                        starts at 1 again)
``start_s``           float    no       when the call started: seconds on the task
                                        trace's clock (the same epoch as its
                                        ``arrival_s``), >= 0
``latency_s``         float    no       the call's wall time, >= 0
``ttft_s``            float    yes      time to the first token of a streamed answer
                                        (null: not streamed, or no token came)
``outcome``           str      no       how it ended: an :class:`ErrorKind` value
                                        (``ok``, ``first_token_timeout``,
                                        ``timeout``, ``rate_limited``,
                                        ``server_error``, ``connect``, ``connection``,
                                        ``malformed``, ``validation``,
                                        ``bad_request``, ``auth``,
                                        ``context_length``, ``content_filter``), or
                                        for a call the driver aborted: ``cancelled``
                                        (the caller cancelled), ``error`` (the driver
                                        raised), ``bad_spec`` (the answer revealed an
                                        invalid task spec) -- see
                                        :data:`ATTEMPT_OUTCOMES`
``status``            int      yes      the HTTP status, 100..599 (null: none came)
``retry_after_s``     float    yes      the provider's Retry-After, >= 0
``prompt_tokens``     int      yes      usage the provider reported, >= 0 (null: it
                                        reported none -- never an estimate)
``completion_tokens`` int      yes      likewise
``cost_usd``          float    yes      what the call cost (measured, else the
                                        policy's estimate), >= 0; null: unknown
``task_type``         str      yes      the task's (resolved) type
``provider_model``    str      yes      the model name the provider reported
``request_id``        str      yes      the provider's id for the request
===================== ======== ======== ================================================

``(task_id, model, attempt)`` identifies a record. ``sim.traces.attempts`` reads and
validates such files (and Parquet/CSV in the same schema); the importers in
``sim.traces`` write it from other tools' logs.

Crash safety -- the contract the trace reader relies on:

- a record is serialised completely (one ``bytes`` ending in ``"\\n"``) before any
  of it is written, and written with a single :func:`os.write` on a descriptor
  opened with ``O_APPEND``. There is no user-space buffer, so nothing is left to
  flush; with ``fsync=True`` each record is also forced to stable storage.
- so a process killed at any moment leaves every earlier record complete and at
  most one partial final line, *without* a trailing newline. The reader ignores
  such a line.
- opening a recorder on an existing file appends (old records are kept). If the
  file ends with such a partial line, it is cut off first -- otherwise the next
  record would be glued to it and form one complete but garbled line.

Secrets: a record is built from an explicit whitelist -- exactly the columns above,
taken from named arguments and the task's id, type and token counts. Nothing else
from the task (its ``spec``, ``messages``, ``tools``), from the provider call
(headers, API keys, raw responses) or from ``**kwargs`` can reach the file;
``payload`` (the prompt text: the task's payload, else its last user message's
text) is written only if the recorder was created with ``record_payload=True``.
Attempt records never carry a payload, nor an attempt's ``detail`` (a provider's
error text can quote the prompt).

Concurrency: one lock serialises writes, so threads may share a recorder, and it
is safe to call from asyncio code (the critical section never awaits; it is one
``write`` syscall, plus an ``fsync`` if asked -- leave ``fsync`` off, or call from
a worker thread, if the event loop must never block on the disk). Several
*processes* may append to one file (``O_APPEND`` keeps whole records whole), but
the partial-line repair on opening assumes no other process is writing right then.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from router.errors import InputError
from router.outcome import ErrorKind
from router.result import Attempt, TaskResult
from router.task import Task

__all__ = [
    "ABORT_OUTCOMES",
    "ATTEMPT_COLUMNS",
    "ATTEMPT_OUTCOMES",
    "TRACE_COLUMNS",
    "AttemptRecorder",
    "TraceRecorder",
]

#: The trace columns, in the order they are written. ``payload`` follows them only
#: when the recorder records payloads.
TRACE_COLUMNS: tuple[str, ...] = (
    "task_id",
    "arrival_s",
    "task_type",
    "prompt_tokens",
    "completion_tokens",
    "model",
    "latency_s",
    "success",
    "cost_usd",
    "error_kind",
    "provider_model",
    "request_id",
)

#: The attempt-record columns, in the order they are written (see the module docstring).
ATTEMPT_COLUMNS: tuple[str, ...] = (
    "task_id",
    "model",
    "attempt",
    "start_s",
    "latency_s",
    "ttft_s",
    "outcome",
    "status",
    "retry_after_s",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "task_type",
    "provider_model",
    "request_id",
)

#: Outcomes of a call the driver aborted (:meth:`router.policy.TaskRun.abort`'s errors).
ABORT_OUTCOMES: tuple[str, ...] = ("cancelled", "error", "bad_spec")

#: Every value the ``outcome`` column may hold: the :class:`ErrorKind` values, then
#: :data:`ABORT_OUTCOMES`.
ATTEMPT_OUTCOMES: tuple[str, ...] = (*(k.value for k in ErrorKind), *ABORT_OUTCOMES)

#: File suffixes the trace reader reads as NDJSON (it picks the format by suffix).
_SUFFIXES = (".ndjson", ".jsonl")


def _finite(
    name: str, value: object, *, minimum: float | None = None, what: str = "trace record"
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what}: {name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise InputError(f"{what}: {name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _count(name: str, value: object, *, what: str = "trace record") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{what}: {name} must be an integer >= 0, got {value!r}")
    return value


def _optional_str(name: str, value: object, *, what: str = "trace record") -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{what}: {name} must be a string or null, got {value!r:.40}")
    return value or None


_ATTEMPT = "attempt record"


def _optional_finite(name: str, value: object) -> float | None:
    return None if value is None else _finite(name, value, minimum=0.0, what=_ATTEMPT)


def _optional_count(name: str, value: object) -> int | None:
    return None if value is None else _count(name, value, what=_ATTEMPT)


def _status(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise InputError(
            f"{_ATTEMPT}: status must be an HTTP status 100..599 or null, got {value!r}"
        )
    return value


def _outcome(value: object) -> str:
    text = value.value if isinstance(value, ErrorKind) else value
    if not isinstance(text, str) or text not in ATTEMPT_OUTCOMES:
        raise InputError(
            f"{_ATTEMPT}: outcome {value!r:.40} is not one of: {', '.join(ATTEMPT_OUTCOMES)}"
        )
    return text


def _line(row: dict[str, Any]) -> bytes:
    # ASCII-only JSON: no raw newline (or any other line separator) can occur inside a
    # line, and the bytes do not depend on a locale.
    return (json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


def _error_kind(value: ErrorKind | str | None, success: bool) -> str | None:
    """The ``error_kind`` column: an :class:`ErrorKind` value, null on success."""
    if value is None:
        return None
    try:
        kind = ErrorKind(value)
    except ValueError:
        known = ", ".join(k.value for k in ErrorKind)
        raise InputError(f"trace record: error_kind {value!r} is not one of: {known}") from None
    if kind is ErrorKind.OK:
        return None  # "ok" is not an error: successes carry a null error_kind
    if success:
        raise InputError(f"trace record: a successful task cannot have error_kind {kind.value!r}")
    return kind.value


def _drop_partial_tail(path: Path) -> int:
    """Cut a final line that has no newline (a record torn by a crash); return its size."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        end = size
        # Walk back in blocks to the last newline; the tail is at most one record.
        while end > 0:
            start = max(0, end - 65536)
            block = os.pread(fd, end - start, start)
            if end == size and block.endswith(b"\n"):
                return 0
            cut = block.rfind(b"\n")
            if cut >= 0:
                os.ftruncate(fd, start + cut + 1)
                return size - (start + cut + 1)
            end = start
        os.ftruncate(fd, 0)  # one torn line and nothing else
        return size
    finally:
        os.close(fd)


class _AppendOnlyLog:
    """An ``O_APPEND`` NDJSON file written one whole line per ``os.write``.

    The shared machinery of :class:`TraceRecorder` and :class:`AttemptRecorder`:
    opening (with the torn-tail repair), one locked write per record (a failed write
    is cut back out), closing. ``_what`` names the kind of record in messages.
    """

    _what = "trace"

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool, private: bool) -> None:
        self.path = Path(path)
        if self.path.suffix not in _SUFFIXES:
            raise InputError(
                f"{self._what} recording: {str(self.path)!r} must end in .ndjson or .jsonl "
                f"(the {self._what} reader picks the format by suffix)"
            )
        self.fsync = fsync
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _drop_partial_tail(self.path)
        mode = 0o600 if private else 0o666
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode
        )
        self.records_written = 0

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _write(self, line: bytes) -> None:
        with self._lock:
            fd = self._fd
            if fd is None:
                raise ValueError(f"{self._what} recorder for {str(self.path)!r} is closed")
            before = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                # A regular file only takes less on a full disk or an interrupted
                # write; finish the line rather than leave it torn mid-file.
                while written < len(line):
                    written += os.write(fd, line[written:])
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                # Take the torn record back out, so the next one starts a clean line.
                # (With several writer processes this could cut another's record
                # appended meanwhile; a failing disk is the lesser worry then.)
                try:
                    os.ftruncate(fd, before)
                except OSError:
                    pass
                raise
            self.records_written += 1

    def close(self) -> None:
        """Close the file. Idempotent; records written so far are already on disk."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.records_written} written"
        return f"{type(self).__name__}({str(self.path)!r}, {state})"


class TraceRecorder(_AppendOnlyLog):
    """Appends one trace record per live task to an ``.ndjson`` (or ``.jsonl``) file.

    ``TraceRecorder(path, record_payload=False, fsync=False)`` opens (creating it and
    its directory if needed) ``path`` for appending; existing records are kept, a
    torn final line is dropped (:attr:`repaired_bytes` says how many bytes). Use it
    as a context manager or call :meth:`close`. See the module docstring for the
    crash-safety, secrecy and concurrency contract.
    """

    _what = "trace"

    def __init__(
        self, path: str | os.PathLike[str], *, record_payload: bool = False, fsync: bool = False
    ) -> None:
        # Payloads are prompts: keep a file that may hold them private to the user.
        super().__init__(path, fsync=fsync, private=record_payload)
        self.record_payload = record_payload

    def record(
        self,
        task: Task,
        *,
        model: str | None,
        latency_s: float,
        success: bool,
        cost_usd: float,
        error_kind: ErrorKind | str | None = None,
        arrival_s: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        provider_model: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Append one record for ``task`` and return it (as written).

        ``model`` is the model that produced the final answer or failure (``None`` if
        none was called); ``latency_s`` the task's total wall time; ``cost_usd`` what
        all its attempts cost; ``error_kind`` why it failed (``None``/``OK`` on
        success). ``arrival_s``, ``prompt_tokens`` and ``completion_tokens`` default to
        the task's own; pass the measured ones (arrival in seconds since the epoch the
        caller chose for this trace -- typically when the recorder was opened -- and the
        provider-reported token usage): measured counts are written instead of the
        task's estimates. ``provider_model`` is the model name the provider reported
        (it may differ from ``model``, the router's id for it: a dated snapshot, a
        proxy's deployment) and ``request_id`` the provider's id for the answer (to
        find the call in the provider's logs); both null when unknown. The recorder
        reads no clock.

        Raises :class:`~router.errors.InputError` for a value that does not fit the
        schema (nothing is written then), ``ValueError`` if the recorder is closed, and
        ``OSError`` if the write fails (a partly written record is removed again).
        """
        if not isinstance(success, bool):
            raise InputError(f"trace record: success must be a bool, got {success!r}")
        if model is not None and not isinstance(model, str):
            raise InputError(f"trace record: model must be a string or null, got {model!r}")
        provider_model = _optional_str("provider_model", provider_model)
        request_id = _optional_str("request_id", request_id)
        # The whitelist: these keys and nothing else are ever written.
        row: dict[str, Any] = {
            "task_id": str(task.task_id),
            "arrival_s": _finite("arrival_s", task.arrival_s if arrival_s is None else arrival_s),
            "task_type": task.resolved_type(),
            "prompt_tokens": _count(
                "prompt_tokens", task.prompt_tokens if prompt_tokens is None else prompt_tokens
            ),
            "completion_tokens": _count(
                "completion_tokens",
                task.completion_tokens if completion_tokens is None else completion_tokens,
            ),
            "model": model,
            "latency_s": _finite("latency_s", latency_s, minimum=0.0),
            "success": success,
            "cost_usd": _finite("cost_usd", cost_usd, minimum=0.0),
            "error_kind": _error_kind(error_kind, success),
            "provider_model": provider_model,
            "request_id": request_id,
        }
        if self.record_payload:
            # A conversation's prompt text is its last user message (what classified it).
            row["payload"] = task.payload if task.messages is None else task.prompt_text()
        self._write(_line(row))
        return row

    def __enter__(self) -> TraceRecorder:
        return self


class AttemptRecorder(_AppendOnlyLog):
    """Appends one attempt record per provider call to an ``.ndjson`` (or ``.jsonl``) file.

    ``AttemptRecorder(path, fsync=False)`` opens ``path`` exactly as
    :class:`TraceRecorder` does (created with its directory, appended to, a torn final
    line dropped first) and writes the attempt schema of the module docstring, one
    line and one ``os.write`` per attempt. The same crash-safety and concurrency
    contract applies; no payload or error text is ever written. Use it as a context
    manager or call :meth:`close`.
    """

    _what = "attempt"

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        super().__init__(path, fsync=fsync, private=False)

    def record(
        self,
        task_id: str,
        *,
        model: str,
        attempt: int,
        start_s: float,
        latency_s: float,
        outcome: ErrorKind | str,
        ttft_s: float | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cost_usd: float | None = None,
        task_type: str | None = None,
        provider_model: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Append the record of one attempt and return it (as written).

        The arguments are the schema's columns (see the module docstring); the
        recorder reads no clock. Raises :class:`~router.errors.InputError` for a value
        outside the schema (nothing is written then), ``ValueError`` if the recorder
        is closed, and ``OSError`` if the write fails (a partly written record is
        removed again).
        """
        row = self._row(
            task_id,
            model=model,
            attempt=attempt,
            start_s=start_s,
            latency_s=latency_s,
            outcome=outcome,
            ttft_s=ttft_s,
            status=status,
            retry_after_s=retry_after_s,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
            task_type=task_type,
            provider_model=provider_model,
            request_id=request_id,
        )
        self._write(_line(row))
        return row

    def record_result(self, task: Task, result: TaskResult, t0: float) -> list[dict[str, Any]]:
        """Append one record per attempt of ``result`` (in order) and return them.

        ``t0`` is the driver-clock time of the trace's epoch: each record's
        ``start_s`` is its attempt's ``started_s - t0``, so pass the same ``t0`` the
        task trace's ``arrival_s`` is measured from (the live router's ``_t0``). The
        task type is the result's (the policy's resolved type), else the task's.
        Every record is checked before the first is written: a bad value raises
        :class:`~router.errors.InputError` and writes nothing. A task without
        attempts writes nothing and returns ``[]``.
        """
        t0 = _finite("t0", t0, what=_ATTEMPT)
        task_type = result.task_type or task.resolved_type()
        task_id = str(result.task_id if result.task_id is not None else task.task_id)
        rows = [self._row_of(task_id, task_type, a, t0) for a in result.attempts]
        for row in rows:
            self._write(_line(row))
        return rows

    def _row_of(self, task_id: str, task_type: str, a: Attempt, t0: float) -> dict[str, Any]:
        started = _finite("started_s", a.started_s, what=_ATTEMPT)
        # A driver clock read twice in the same tick can put an attempt a hair before
        # the epoch it was read after; anything further back is a wrong ``t0``.
        start_s = started - t0
        if -1e-9 < start_s < 0.0:
            start_s = 0.0
        return self._row(
            task_id,
            model=a.model,
            attempt=a.number,
            start_s=start_s,
            latency_s=a.latency_s,
            outcome=a.kind,
            ttft_s=a.ttft_s,
            status=a.status,
            retry_after_s=a.retry_after_s,
            prompt_tokens=a.prompt_tokens,
            completion_tokens=a.completion_tokens,
            cost_usd=a.cost_usd,
            task_type=task_type,
            provider_model=a.provider_model,
            request_id=a.request_id,
        )

    @staticmethod
    def _row(
        task_id: object,
        *,
        model: object,
        attempt: object,
        start_s: object,
        latency_s: object,
        outcome: object,
        ttft_s: object,
        status: object,
        retry_after_s: object,
        prompt_tokens: object,
        completion_tokens: object,
        cost_usd: object,
        task_type: object,
        provider_model: object,
        request_id: object,
    ) -> dict[str, Any]:
        if not isinstance(task_id, str) or not task_id:
            raise InputError(f"{_ATTEMPT}: task_id must be a non-empty string, got {task_id!r:.40}")
        if not isinstance(model, str) or not model:
            raise InputError(f"{_ATTEMPT}: model must be a non-empty string, got {model!r:.40}")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise InputError(f"{_ATTEMPT}: attempt must be an integer >= 1, got {attempt!r}")
        # The whitelist: these keys, in ATTEMPT_COLUMNS order, and nothing else.
        return {
            "task_id": task_id,
            "model": model,
            "attempt": attempt,
            "start_s": _finite("start_s", start_s, minimum=0.0, what=_ATTEMPT),
            "latency_s": _finite("latency_s", latency_s, minimum=0.0, what=_ATTEMPT),
            "ttft_s": _optional_finite("ttft_s", ttft_s),
            "outcome": _outcome(outcome),
            "status": _status(status),
            "retry_after_s": _optional_finite("retry_after_s", retry_after_s),
            "prompt_tokens": _optional_count("prompt_tokens", prompt_tokens),
            "completion_tokens": _optional_count("completion_tokens", completion_tokens),
            "cost_usd": _optional_finite("cost_usd", cost_usd),
            "task_type": _optional_str("task_type", task_type, what=_ATTEMPT),
            "provider_model": _optional_str("provider_model", provider_model, what=_ATTEMPT),
            "request_id": _optional_str("request_id", request_id, what=_ATTEMPT),
        }

    def __enter__(self) -> AttemptRecorder:
        return self
