"""Crash-safe recording of live tasks as a trace (NDJSON, one task per line).

Every finished live task becomes one line in the trace schema::

    task_id str, arrival_s float, task_type str, prompt_tokens int,
    completion_tokens int, model str|null, latency_s float, success bool,
    cost_usd float, error_kind str|null, provider_model str|null,
    request_id str|null [, payload str|null]

``provider_model`` and ``request_id`` are outside :mod:`sim.trace`'s schema; its
reader keeps such columns (as text) after the schema's own. They are written on
every line (null when unknown) so that a reader learning the columns from the first
lines always sees them.

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
from router.task import Task

__all__ = ["TRACE_COLUMNS", "TraceRecorder"]

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

#: File suffixes the trace reader reads as NDJSON (it picks the format by suffix).
_SUFFIXES = (".ndjson", ".jsonl")


def _finite(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"trace record: {name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise InputError(f"trace record: {name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"trace record: {name} must be an integer >= 0, got {value!r}")
    return value


def _optional_str(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"trace record: {name} must be a string or null, got {value!r:.40}")
    return value or None


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


class TraceRecorder:
    """Appends one trace record per live task to an ``.ndjson`` (or ``.jsonl``) file.

    ``TraceRecorder(path, record_payload=False, fsync=False)`` opens (creating it and
    its directory if needed) ``path`` for appending; existing records are kept, a
    torn final line is dropped (:attr:`repaired_bytes` says how many bytes). Use it
    as a context manager or call :meth:`close`. See the module docstring for the
    crash-safety, secrecy and concurrency contract.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, record_payload: bool = False, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        if self.path.suffix not in _SUFFIXES:
            raise InputError(
                f"trace recording: {str(self.path)!r} must end in .ndjson or .jsonl "
                f"(the trace reader picks the format by suffix)"
            )
        self.record_payload = record_payload
        self.fsync = fsync
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _drop_partial_tail(self.path)
        # Payloads are prompts: keep a file that may hold them private to the user.
        mode = 0o600 if record_payload else 0o666
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode
        )
        self.records_written = 0

    @property
    def closed(self) -> bool:
        return self._fd is None

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
        # ASCII-only JSON: no raw newline (or any other line separator) can occur
        # inside a line, and the bytes do not depend on a locale.
        line = (json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")
        self._write(line)
        return row

    def _write(self, line: bytes) -> None:
        with self._lock:
            fd = self._fd
            if fd is None:
                raise ValueError(f"trace recorder for {str(self.path)!r} is closed")
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

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.records_written} written"
        return f"TraceRecorder({str(self.path)!r}, {state})"
