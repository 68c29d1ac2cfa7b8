"""Structured-output validation: does a model's answer have the shape its task needs?

A failed validation fails the attempt (the policy sees :attr:`ErrorKind.VALIDATION
<router.outcome.ErrorKind.VALIDATION>` and retries or falls back), so the validators
here are strict and deterministic, and they never raise because of what a model
wrote: every answer, however broken, becomes a :class:`Validation` with a one-line
reason such as ``json: $.items[2].id: 'x' is not of type 'integer'``.

The caller's side is different. A task's ``spec`` (the JSON Schema, the regex
examples, the source files...) is the caller's input; a malformed spec raises
:class:`~router.errors.InputError`. Failing the attempt instead would blame every
model in the route for the caller's bug and spend the budget on fallbacks.

One :class:`Validator` per task type, looked up through a registry
(:func:`register_validator`, :func:`get_validator`); :func:`validate` dispatches on
the task type. A task type without a validator passes (``ok=True`` with a reason
saying it was not checked): validation can only remove answers the toolkit knows
how to judge, it never invents a failure for a type it knows nothing about.

Before a validator sees an answer, a single markdown code fence that surrounds the
whole answer (```` ```lang ... ``` ````) is removed (:func:`strip_code_fence`);
models add one even when told not to. Text outside the fence is not removed: an
answer with prose around its code fails.

Spec keys per task type (unknown keys are ignored, so one spec can also carry what
a prompt template needs):

``json``
    ``schema``: a JSON Schema (Draft 2020-12) the parsed value must satisfy.
``regex``
    ``matches`` / ``rejects``: lists of strings; ``mode``: ``"fullmatch"`` (default)
    or ``"search"``; ``timeout_s`` (default 2): the bound on matching time.
``sql``
    ``dialect`` (sqlglot name; default: sqlglot's generic dialect); ``allow_multiple``,
    ``allow_writes`` (both default false); ``sqlite_schema``: DDL (and seed rows) for
    an in-memory SQLite database the query is run against; ``expected_rows``: list of
    rows (lists) the query must return; ``ordered`` (default false: compare as a
    multiset); ``timeout_s`` (default 5); ``max_rows`` (default 10000).
``bug_patch``
    ``source``: ``{path: text}``, or one text (then ``path`` may name the file);
    ``allow_offset`` (default true); ``test_command``: argv list run in a temporary
    directory holding the patched files; ``timeout_s`` (default 10); ``env``: extra
    environment variables for the test command; ``max_memory_mb``: the test's
    address-space limit (default :data:`SUBPROCESS_MAX_MEMORY_BYTES`, 1 GiB).
``error_handling``
    ``must_handle``: exception names that must each appear in an ``except`` clause.

:func:`check_spec` runs these spec checks for a :class:`~router.task.Task` before any
model is called, so a driver can reject a bad spec before it spends money.

**Event loops.** :func:`validate_task` blocks its caller for as long as the check
takes (seconds for a test command). :func:`validate_task_async` does not block the
event loop: what is cheap and pure Python (parsing JSON and applying a schema,
compiling a regex or Python source, parsing SQL, applying a patch) runs inline, and
what runs code or waits (the regex-examples worker, SQL executed on SQLite, a
bug_patch test command, any validator that does not say otherwise) runs in a thread
pool, each under its own timeout. :meth:`Validator.may_block` draws that line.
Cancelling the awaiting task kills the process group it started (or interrupts its
SQLite query) and waits briefly for the worker to remove its scratch files.

**Subprocesses are contained, not sandboxed.** Every subprocess a validator starts
(the regex worker, a test command) runs in its own session and process group (killed
whole on timeout), with stdin from ``/dev/null``, no inherited file descriptors, an
emptied environment (a minimal ``PATH``, ``LANG=C.UTF-8``; for a test command also
``HOME``/``TMPDIR`` = its scratch directory), and resource limits set in the child
before it executes: ``RLIMIT_CPU`` (the timeout + :data:`SUBPROCESS_CPU_GRACE_S`),
``RLIMIT_AS`` (:data:`SUBPROCESS_MAX_MEMORY_BYTES`), ``RLIMIT_FSIZE``
(:data:`SUBPROCESS_MAX_FILE_BYTES`, captured output included) and ``RLIMIT_CORE`` = 0.
This contains *accidents* -- a runaway loop, a memory leak, a test that fills the disk,
an API key a model's code would otherwise read from the environment. It is **NOT a
security sandbox**: the code runs as the router's user, can read every file that
user can, use the network, and escape the process group with ``setsid``. Run
untrusted answers inside a container or VM if that matters.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import json
import logging
import math
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from router.errors import InputError
from router.task import Task

__all__ = [
    "Validation",
    "Validator",
    "JsonValidator",
    "RegexValidator",
    "SqlValidator",
    "BugPatchValidator",
    "PatchError",
    "ErrorHandlingValidator",
    "strip_code_fence",
    "register_validator",
    "get_validator",
    "registered_task_types",
    "validate",
    "validate_task",
    "validate_task_async",
    "check_spec",
    "MAX_REASON_CHARS",
    "SUBPROCESS_MAX_MEMORY_BYTES",
    "SUBPROCESS_MAX_FILE_BYTES",
    "SUBPROCESS_CPU_GRACE_S",
    "VALIDATION_WORKERS",
]

_log = logging.getLogger(__name__)

#: A reason longer than this is cut (with "..."): reasons end up in traces and logs,
#: and a schema error can quote an arbitrarily large instance.
MAX_REASON_CHARS = 400


# Every character str.splitlines() breaks on. Only these are replaced: spaces inside a
# reason can matter (a patch whose indentation differs from the source).
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


def _one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Replace line breaks with one space, trim the ends and cap the length."""
    flat = _LINE_BREAKS.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _quote(text: str, limit: int = 60) -> str:
    """``repr`` of an example or a source line, shortened for a reason."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


@dataclass(frozen=True, slots=True)
class Validation:
    """The verdict on one answer.

    ``reason`` is one line. On failure it starts with the task type and says what is
    wrong (``"regex: does not compile: ..."``); on success it is empty, except when
    nothing was checked (no validator for the task type), which it then says.
    """

    ok: bool
    reason: str = ""

    @classmethod
    def passed(cls, reason: str = "") -> Validation:
        return cls(True, _one_line(reason))

    @classmethod
    def failed(cls, reason: str) -> Validation:
        return cls(False, _one_line(reason))


# ---------------------------------------------------------------------------------------
# Code fences

# A fence of three or more backticks (or tildes), an optional info string, the body,
# and a closing fence of the same characters at the very end. The body match is lazy
# but the closing fence is anchored to the end of the text, so a fence *inside* the
# body (a diff of a README, say) does not end it early.
_FENCE = re.compile(
    r"\A\s*(?P<fence>`{3,}|~{3,})[ \t]*[^\n`]*\n(?P<body>.*?)\n?(?P=fence)[ \t]*\s*\Z",
    re.DOTALL,
)


def strip_code_fence(text: str) -> str:
    """Return the body of a single markdown code fence surrounding all of ``text``.

    ``"```json\\n{...}\\n```"`` becomes ``"{...}"``. Only one fence is removed, and only
    when it encloses the whole text (surrounding whitespace aside); anything else is
    returned unchanged.
    """
    match = _FENCE.match(text)
    return match.group("body") if match else text


# ---------------------------------------------------------------------------------------
# Spec helpers: a bad spec is the caller's error, so these raise InputError.


def _spec_error(task_type: str, key: str, expected: str, value: object) -> InputError:
    return InputError(
        f"spec[{key!r}] for task type {task_type!r} must be {expected}, "
        f"got {type(value).__name__} {_quote(str(value))}"
    )


def _spec_bool(task_type: str, spec: Mapping[str, Any], key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise _spec_error(task_type, key, "true or false", value)
    return value


def _spec_seconds(task_type: str, spec: Mapping[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _spec_error(task_type, key, "a positive number of seconds", value)
    return float(value)


def _spec_positive_int(task_type: str, spec: Mapping[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _spec_error(task_type, key, "a positive integer", value)
    return value


def _spec_str_list(task_type: str, spec: Mapping[str, Any], key: str) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _spec_error(task_type, key, "a list of strings", value)
    return list(value)


# ---------------------------------------------------------------------------------------
# Subprocess containment and cancellation (containment of accidents, NOT a sandbox)

#: ``RLIMIT_AS`` (address space, bytes) of every subprocess a validator starts. A
#: bug_patch spec's ``max_memory_mb`` overrides it for that test command (a JVM or a
#: Go test binary reserves more address space than it uses).
SUBPROCESS_MAX_MEMORY_BYTES = 1 << 30

#: ``RLIMIT_FSIZE``: the largest file a subprocess may write -- its captured output
#: included. A Python child then gets ``OSError: [Errno 27] File too large``; other
#: programs are killed by ``SIGXFSZ``. Either way the answer fails.
SUBPROCESS_MAX_FILE_BYTES = 16 << 20

#: ``RLIMIT_CPU`` is the validator's timeout, rounded up, plus this. The wall-clock
#: timeout normally kills first; the CPU limit stops a CPU-burning grandchild that left
#: the process group (``setsid``) and so survived the group kill.
SUBPROCESS_CPU_GRACE_S = 5

#: Worker threads of the pool :func:`validate_task_async` uses when not given an
#: executor. The threads mostly wait on subprocesses; the bound keeps a burst of test
#: commands from oversubscribing the CPUs (further validations queue; each validator's
#: timeout starts when its worker starts it).
VALIDATION_WORKERS = 4

# How long a cancelled validate_task_async waits for its worker to reap what it killed
# and remove its scratch directory. Built-in validators need milliseconds; a custom
# validator that ignores cancellation is left to finish in the background after this.
_CANCEL_GRACE_S = 2.0

# PATH for subprocesses: the system directories, and the running interpreter's own
# directory first so that "python" / "pytest" in a test command resolve to the router's
# (virtual) environment. Nothing comes from the router's own PATH.
_MINIMAL_PATH = os.pathsep.join(
    dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
)


def _rlimit(which: int, soft: int, hard: int | None = None) -> tuple[int, tuple[int, int]]:
    """``(which, (soft, hard))`` clamped to the current hard limit.

    Computed in the parent: an unprivileged child cannot raise its hard limit, and
    setrlimit failing inside the child would only surface as an opaque
    ``SubprocessError``.
    """
    hard = soft if hard is None else hard
    current_hard = resource.getrlimit(which)[1]
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    return which, (min(soft, hard), hard)


@dataclass(frozen=True, slots=True)
class _Limits:
    """The resource limits one subprocess runs under."""

    cpu_s: int
    memory_bytes: int
    file_bytes: int

    @classmethod
    def for_timeout(cls, timeout_s: float, memory_bytes: int | None = None) -> _Limits:
        # The module constants are read per call, so a deployment can change them.
        return cls(
            cpu_s=math.ceil(timeout_s) + SUBPROCESS_CPU_GRACE_S,
            memory_bytes=SUBPROCESS_MAX_MEMORY_BYTES if memory_bytes is None else memory_bytes,
            file_bytes=SUBPROCESS_MAX_FILE_BYTES,
        )

    def preexec(self) -> Callable[[], None]:
        """A ``preexec_fn`` that applies the limits in the child, before it executes.

        Everything is computed here, in the parent: between fork and exec, with other
        threads frozen mid-way in the parent's copy, the child only calls setrlimit on
        prepared tuples (no imports, no logging, no locks besides the GIL, which
        CPython re-initialises in the child).
        """
        settings = (
            # Soft limit: SIGXCPU; one second later the hard limit: SIGKILL.
            _rlimit(resource.RLIMIT_CPU, self.cpu_s, self.cpu_s + 1),
            _rlimit(resource.RLIMIT_AS, self.memory_bytes),
            _rlimit(resource.RLIMIT_FSIZE, self.file_bytes),
            # No core files: a crashing test would write one into its scratch dir (or
            # hand it to a system core handler, outside RLIMIT_FSIZE).
            _rlimit(resource.RLIMIT_CORE, 0),
        )
        # RLIMIT_NPROC is deliberately not set: it counts *all* processes of the user,
        # not this tree, so any fixed value either fails innocent tests on a busy
        # machine (nondeterministic verdicts) or stops no fork bomb; and root ignores it.

        def apply() -> None:
            for which, limits in settings:
                resource.setrlimit(which, limits)

        return apply


class _Job:
    """What one :func:`validate_task_async` call started off the loop, so it can be stopped.

    The worker thread registers each subprocess it starts (:func:`_spawn`) and releases
    it before reaping it (:func:`_reap`). :meth:`cancel`, called on the event loop when
    the awaiting task is cancelled, sets :attr:`cancelled` (checked by a job that has
    not started yet, by :func:`_spawn` and by the SQLite progress handler) and SIGKILLs
    the process group of every registered process.
    """

    __slots__ = ("_lock", "_cancelled", "_procs")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._procs: set[subprocess.Popen[Any]] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for proc in self._procs:
                _kill_group(proc)

    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            if not self._cancelled:
                self._procs.add(proc)
                return
        _kill_group(proc)  # cancelled while it was starting: its worker reaps it at once

    def release(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            self._procs.discard(proc)


# The job of the validate_task_async call the current worker thread is serving; None in
# the synchronous API. A context variable, so the validators' signatures stay as they are.
_JOB: contextvars.ContextVar[_Job | None] = contextvars.ContextVar("_JOB", default=None)


def _spawn(argv: Sequence[str], limits: _Limits, **options: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` contained: its own session and process group, ``limits`` applied
    before it executes, no inherited file descriptors; registered with the current job.

    ``options`` go to :class:`subprocess.Popen` (``env``, ``cwd``, the standard
    streams...). Raises :class:`OSError` or :class:`subprocess.SubprocessError` if it
    cannot start. The caller must :func:`_reap` the process on every path.
    """
    proc = subprocess.Popen(
        list(argv),
        start_new_session=True,  # its own process group, to kill it whole
        close_fds=True,
        preexec_fn=limits.preexec(),
        **options,
    )
    job = _JOB.get()
    if job is not None:
        job.adopt(proc)
    return proc


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s process group (its pid: it was started in a new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _reap(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc``'s whole group -- also after a normal exit, a test may leave children
    behind -- and wait for ``proc``."""
    job = _JOB.get()
    if job is not None:
        job.release(proc)
    _kill_group(proc)
    proc.wait()


# ---------------------------------------------------------------------------------------
# The contract


class Validator(ABC):
    """Judges one task type's answers. Subclass it and register an instance.

    Contract for implementations of :meth:`check`:

    - **Never raise because of the answer.** Any text, however broken, must give a
      :class:`Validation`. (As a last line of defence :meth:`validate` turns an
      unexpected exception into a failed validation and logs it, but that is a bug
      in the validator.)
    - **Deterministic**: the same answer and spec always give the same verdict and
      the same reason; no network, no clock-dependent result except for a documented
      time bound on running untrusted work.
    - **Strict**: pass only answers the task's consumer can use as they are.
    - **One-line reasons** that start with the task type (use :meth:`fail`).
    - **Spec errors raise** :class:`~router.errors.InputError`, ideally all of them
      from :meth:`check_spec`, which :meth:`validate` calls first and which a router
      can call when a task is submitted (:func:`check_spec`). :meth:`check_spec` must
      be cheap and run nothing: no subprocess, no SQL, no network.
    - **Thread-safe**: :func:`validate_task_async` may run :meth:`check` in a worker
      thread, concurrently with other calls. Say with :meth:`may_block` whether it
      must.
    - **Bounded**: anything that runs untrusted work has a time bound of its own.
      (The built-in validators start their subprocesses through one helper, which
      applies the containment described in the module docstring and lets a cancelled
      :func:`validate_task_async` kill them.)
    """

    #: The task type this validator judges; the prefix of its failure reasons.
    task_type: ClassVar[str]

    def validate(self, output: str, spec: Mapping[str, Any] | None = None) -> Validation:
        """Check the spec, strip a surrounding code fence, and judge ``output``."""
        spec = self.accept_spec(spec)
        if not isinstance(output, str):
            return self.fail(f"output is {type(output).__name__}, not text")
        text = strip_code_fence(output)
        try:
            return self.check(text, spec)
        except InputError:
            raise
        except Exception as exc:
            # A validator bug must not crash the router, but it must be visible.
            _log.exception("validator for %r raised", self.task_type)
            return self.fail(f"validator error: {type(exc).__name__}: {exc}")

    def accept_spec(self, spec: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """``spec`` (``None`` read as ``{}``) after :meth:`check_spec` accepted it.

        Raises :class:`~router.errors.InputError` if it is not a mapping or is malformed.
        """
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            raise InputError(
                f"spec for task type {self.task_type!r} must be a mapping, "
                f"got {type(spec).__name__}"
            )
        self.check_spec(spec)
        return spec

    def check_spec(self, spec: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Raise :class:`~router.errors.InputError` if ``spec`` is malformed. Default: accept."""

    def may_block(self, spec: Mapping[str, Any]) -> bool:
        """Whether judging an answer under ``spec`` may hold its thread for long.

        True when it starts a subprocess, executes SQL, runs other code, imports a
        heavy library for the first time, or does anything else whose time is not
        small and proportional to the answer. :func:`validate_task_async` runs such
        checks in a worker thread and the rest inline on the event loop. Called before
        :meth:`check_spec`, so it must not raise on a malformed spec (answer either
        way; :meth:`validate` then raises). Default: true -- a validator that does not
        say is assumed to block, and only costs a thread hop.
        """
        return True

    @abstractmethod
    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        """Judge ``text`` (already fence-stripped) against a spec that passed
        :meth:`check_spec`."""

    def fail(self, message: str) -> Validation:
        """A failed :class:`Validation` whose reason is prefixed with the task type."""
        return Validation.failed(f"{self.task_type}: {message}")


# ---------------------------------------------------------------------------------------
# json


class _DuplicateKeyError(ValueError):
    pass


class _NonStandardConstantError(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _NonStandardConstantError(f"{name} is not valid JSON")


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def json_path(parts: Sequence[str | int]) -> str:
    """``["items", 2, "id"]`` -> ``"$.items[2].id"``; odd keys are bracketed: ``$["a b"]``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


class JsonValidator(Validator):
    """The answer is one JSON value and, if ``spec["schema"]`` is set, satisfies it.

    Parsing is strict JSON: ``NaN``/``Infinity`` and duplicate object keys are
    rejected (Python's parser accepts both; other consumers disagree on what they
    mean). The schema is applied with Draft 2020-12 semantics; ``format`` is an
    annotation (not asserted), as that draft specifies by default, and ``$ref`` is
    never fetched over the network. When several parts fail, the reason names the
    one :func:`jsonschema.exceptions.best_match` picks, with its JSON path.
    """

    task_type = "json"

    def may_block(self, spec: Mapping[str, Any]) -> bool:
        # Parsing and applying a schema are pure Python and proportional to the answer;
        # only the first use of jsonschema, an import of ~0.1 s, belongs off the loop.
        return "schema" in spec and "jsonschema" not in sys.modules

    def check_spec(self, spec: Mapping[str, Any]) -> None:
        if "schema" not in spec:
            return
        from jsonschema import Draft202012Validator  # lazy: keeps `import router` light
        from jsonschema.exceptions import SchemaError

        schema = spec["schema"]
        if not isinstance(schema, Mapping | bool):
            raise _spec_error(self.task_type, "schema", "a JSON Schema object", schema)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InputError(
                f"spec['schema'] for task type 'json' is not a valid JSON Schema: "
                f"{json_path(list(exc.absolute_path))}: {exc.message}"
            ) from exc

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        try:
            value = json.loads(
                text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
            )
        except json.JSONDecodeError as exc:
            return self.fail(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        except (_DuplicateKeyError, _NonStandardConstantError) as exc:
            return self.fail(str(exc))
        except (ValueError, RecursionError) as exc:
            # Integers over the int-string limit, nesting deeper than the stack.
            return self.fail(f"invalid JSON: {type(exc).__name__}: {exc}")
        if "schema" not in spec:
            return Validation.passed()

        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match
        from referencing.exceptions import Unresolvable

        validator = Draft202012Validator(spec["schema"])
        try:
            error = best_match(validator.iter_errors(value))
        except Unresolvable as exc:
            raise InputError(
                f"spec['schema'] for task type 'json' has an unresolvable $ref: {exc}"
            ) from exc
        if error is None:
            return Validation.passed()
        return self.fail(f"{json_path(list(error.absolute_path))}: {error.message}")


# ---------------------------------------------------------------------------------------
# regex

#: Patterns longer than this fail without being compiled: compiling is roughly linear
#: in the pattern, and no regex a task asks for is anywhere near this long.
MAX_PATTERN_CHARS = 10_000

# Runs in a fresh interpreter (`python -I -S -c`), reading the job as JSON on stdin and
# printing the first failing example as JSON. Why a process: CPython's `re` holds the
# GIL while it backtracks, so a thread cannot be stopped or even time out around it,
# and SIGALRM is process-global and main-thread-only (hostile in a library). A child
# process can be killed, and costs ~20 ms, which is nothing next to a model call.
_REGEX_WORKER = r"""
import json, re, sys
job = json.loads(sys.stdin.read())
pattern = re.compile(job["pattern"])
test = pattern.search if job["mode"] == "search" else pattern.fullmatch
for key, want in (("matches", True), ("rejects", False)):
    for index, text in enumerate(job[key]):
        if (test(text) is not None) != want:
            print(json.dumps([key, index]))
            sys.exit(0)
print("null")
"""


class RegexValidator(Validator):
    """The answer is one Python (:mod:`re`) pattern that compiles and fits the examples.

    The answer must be the bare pattern on one line (line breaks around it are
    ignored; quotes, ``r"..."`` or ``/.../`` around it are *not* removed). With
    ``spec["matches"]``/``spec["rejects"]`` the pattern must ``fullmatch`` every
    string of ``matches`` and none of ``rejects`` -- or, with ``mode: "search"``,
    find a match somewhere in each ``matches`` string and nowhere in ``rejects``.

    Catastrophic backtracking: matching runs in a separate Python process (same
    interpreter, hence the same :mod:`re`) that is killed after ``spec["timeout_s"]``
    (default 2 s); a timeout fails the answer. The process is only started when there
    are examples to match -- compiling alone happens in-process, bounded by
    :data:`MAX_PATTERN_CHARS`. Trade-off: ~20 ms of process start-up per validation
    with examples, in exchange for a hard bound without signals or threads. The
    worker runs contained like every validator subprocess (emptied environment,
    ``RLIMIT_CPU``/``RLIMIT_AS``/``RLIMIT_FSIZE``; see the module docstring) -- a
    containment of accidents such as a pattern whose matching eats memory, NOT a
    security sandbox.
    """

    task_type = "regex"

    def may_block(self, spec: Mapping[str, Any]) -> bool:
        # Only matching the examples starts the worker process.
        return bool(spec.get("matches") or spec.get("rejects"))

    def check_spec(self, spec: Mapping[str, Any]) -> None:
        _spec_str_list(self.task_type, spec, "matches")
        _spec_str_list(self.task_type, spec, "rejects")
        _spec_seconds(self.task_type, spec, "timeout_s", 2.0)
        mode = spec.get("mode", "fullmatch")
        if mode not in ("fullmatch", "search"):
            raise _spec_error(self.task_type, "mode", "'fullmatch' or 'search'", mode)

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        pattern = text.strip("\r\n")
        if not pattern:
            return self.fail("empty pattern")
        if "\n" in pattern:
            return self.fail(
                f"output has {pattern.count(chr(10)) + 1} lines; expected a single pattern"
            )
        if len(pattern) > MAX_PATTERN_CHARS:
            return self.fail(
                f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}"
            )
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            return self.fail(f"does not compile: {exc}")

        matches = _spec_str_list(self.task_type, spec, "matches")
        rejects = _spec_str_list(self.task_type, spec, "rejects")
        if not matches and not rejects:
            return Validation.passed()
        mode = spec.get("mode", "fullmatch")
        timeout_s = _spec_seconds(self.task_type, spec, "timeout_s", 2.0)
        request = json.dumps(
            {"pattern": pattern, "mode": mode, "matches": matches, "rejects": rejects}
        )
        try:
            proc = _spawn(
                [sys.executable, "-I", "-S", "-c", _REGEX_WORKER],
                _Limits.for_timeout(timeout_s),
                env={"PATH": _MINIMAL_PATH, "LANG": "C.UTF-8"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return self.fail(f"matching worker could not start: {exc}")
        timed_out = False
        stdout = ""
        with proc:  # closes the pipes on every path
            try:
                stdout, _ = proc.communicate(request, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _reap(proc)
        if timed_out:
            return self.fail(
                f"matching the examples took longer than {timeout_s:g}s "
                f"(catastrophic backtracking?)"
            )
        if proc.returncode != 0:
            return self.fail(f"matching worker failed with exit status {proc.returncode}")
        verdict = json.loads(stdout)
        if verdict is None:
            return Validation.passed()
        key, index = verdict
        example = _quote((matches if key == "matches" else rejects)[index])
        if mode == "fullmatch":
            verb = "does not fullmatch" if key == "matches" else "fullmatches"
        else:
            verb = "finds no match in" if key == "matches" else "finds a match in"
        return self.fail(f"{verb} {key}[{index}]: {example}")


# ---------------------------------------------------------------------------------------
# sql

_TOKEN_REPR = re.compile(r"<Token token_type: [^>]*?, text: (.*?), line: [^>]*>")


class SqlValidator(Validator):
    """The answer is SQL that parses (sqlglot) and, given a schema, runs on SQLite.

    Parsing uses ``spec["dialect"]`` (default: sqlglot's generic dialect). Exactly one
    statement is required unless ``allow_multiple``. Unless ``allow_writes``, every
    statement must be a read-only query (``SELECT``, ``WITH ... SELECT``, set
    operations, ``VALUES``) with no data-modifying part anywhere inside; with it,
    ``INSERT``/``UPDATE``/``DELETE``/``MERGE``/``CREATE``/``DROP``/``ALTER``/``TRUNCATE``
    are accepted too. Anything else that sqlglot happens to parse (a bare ``hello
    world`` parses as an aliased column, ``PRAGMA``, ``ATTACH``...) fails.

    With ``spec["sqlite_schema"]`` the statements run against a fresh in-memory SQLite
    database built from that script (read-only -- ``PRAGMA query_only`` -- unless
    ``allow_writes``; ``ATTACH`` denied), stopped after ``timeout_s`` (default 5) and
    ``max_rows`` (default 10000) rows. A single statement in the generic or ``sqlite``
    dialect runs exactly as written, so SQLite itself is the judge; otherwise each
    statement is transpiled to SQLite by sqlglot first. The last statement's rows are
    compared to ``expected_rows`` if given: as a multiset unless ``ordered`` is true,
    values compared with Python ``==`` (so ``1 == 1.0``).
    """

    task_type = "sql"

    def may_block(self, spec: Mapping[str, Any]) -> bool:
        # Parsing is pure Python (~1 ms a query); executing on SQLite is not, and the
        # first use of sqlglot is an import of ~0.15 s.
        return spec.get("sqlite_schema") is not None or "sqlglot" not in sys.modules

    def check_spec(self, spec: Mapping[str, Any]) -> None:
        dialect = spec.get("dialect")
        if dialect is not None:
            import sqlglot

            if not isinstance(dialect, str):
                raise _spec_error(self.task_type, "dialect", "a sqlglot dialect name", dialect)
            try:
                sqlglot.Dialect.get_or_raise(dialect)
            except ValueError as exc:
                raise InputError(
                    f"spec['dialect'] for task type 'sql': unknown dialect {dialect!r}"
                ) from exc
        for key in ("allow_multiple", "allow_writes", "ordered"):
            _spec_bool(self.task_type, spec, key, False)
        _spec_seconds(self.task_type, spec, "timeout_s", 5.0)
        _spec_positive_int(self.task_type, spec, "max_rows", 10_000)
        schema = spec.get("sqlite_schema")
        if schema is not None and not isinstance(schema, str):
            raise _spec_error(self.task_type, "sqlite_schema", "a string of SQL", schema)
        if "expected_rows" in spec:
            if schema is None:
                raise InputError(
                    "spec['expected_rows'] for task type 'sql' needs spec['sqlite_schema']"
                )
            rows = spec["expected_rows"]
            scalar = str | int | float | type(None)
            if not isinstance(rows, list | tuple) or not all(
                isinstance(row, list | tuple) and all(isinstance(v, scalar) for v in row)
                for row in rows
            ):
                raise _spec_error(
                    self.task_type, "expected_rows", "a list of rows of scalars", rows
                )

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        import sqlglot
        from sqlglot import exp
        from sqlglot.errors import ParseError, SqlglotError

        dialect = spec.get("dialect")
        try:
            statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
        except ParseError as exc:
            if exc.errors:
                first = exc.errors[0]
                description = _TOKEN_REPR.sub(r"'\1'", str(first.get("description", "")))
                return self.fail(
                    f"parse error at line {first.get('line')}, column {first.get('col')}: "
                    f"{description}"
                )
            return self.fail(f"parse error: {exc}")
        except SqlglotError as exc:
            return self.fail(f"parse error: {exc}")

        if not statements:
            return self.fail("no statement")
        if len(statements) > 1 and not spec.get("allow_multiple", False):
            return self.fail(f"{len(statements)} statements; expected exactly one")

        writes = (exp.DML, exp.DDL, exp.Drop, exp.Alter, exp.TruncateTable)
        allow_writes = bool(spec.get("allow_writes", False))
        for number, statement in enumerate(statements, start=1):
            kind = type(statement).__name__
            is_read = isinstance(statement, exp.Query | exp.Values)
            if not allow_writes:
                if isinstance(statement, writes) or (is_read and statement.find(*writes)):
                    return self.fail(
                        f"statement {number} writes data ({kind}); only read-only "
                        f"queries are allowed"
                    )
                if not is_read:
                    return self.fail(f"statement {number} is not a query (parsed as {kind})")
            elif not (is_read or isinstance(statement, writes)):
                return self.fail(
                    f"statement {number} is not a query or data statement (parsed as {kind})"
                )

        schema = spec.get("sqlite_schema")
        if schema is None:
            return Validation.passed()
        if len(statements) == 1 and dialect in (None, "", "sqlite"):
            to_run = [text]
        else:
            to_run = [s.sql(dialect="sqlite") for s in statements]
        return self._run(to_run, schema, spec)

    def _run(self, statements: list[str], schema: str, spec: Mapping[str, Any]) -> Validation:
        allow_writes = bool(spec.get("allow_writes", False))
        timeout_s = _spec_seconds(self.task_type, spec, "timeout_s", 5.0)
        max_rows = int(spec.get("max_rows", 10_000))
        conn = sqlite3.connect(":memory:")
        try:
            try:
                conn.executescript(schema)
            except sqlite3.Error as exc:
                raise InputError(
                    f"spec['sqlite_schema'] for task type 'sql' does not run: {exc}"
                ) from exc
            if not allow_writes:
                conn.execute("PRAGMA query_only = ON")
            # The query cannot leave the in-memory database: no ATTACH of a file.
            conn.set_authorizer(
                lambda action, *_: (
                    sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else sqlite3.SQLITE_OK
                )
            )
            deadline = time.monotonic() + timeout_s
            timed_out = False
            job = _JOB.get()

            def over_time() -> int:
                nonlocal timed_out
                timed_out = time.monotonic() > deadline
                # A cancelled validate_task_async stops the query as a timeout would.
                return 1 if timed_out or (job is not None and job.cancelled) else 0

            # Called every N SQLite VM steps; a non-zero return interrupts the query.
            conn.set_progress_handler(over_time, 10_000)
            rows: list[tuple[Any, ...]] = []
            try:
                for sql in statements:
                    rows = conn.execute(sql).fetchmany(max_rows + 1)
            except sqlite3.Error as exc:
                if timed_out:
                    return self.fail(f"query ran longer than {timeout_s:g}s")
                return self.fail(f"sqlite error: {exc}")
        finally:
            conn.close()
        if len(rows) > max_rows:
            return self.fail(f"query returned more than {max_rows} rows")
        if "expected_rows" not in spec:
            return Validation.passed()
        return self._compare(
            [list(r) for r in rows],
            [list(r) for r in spec["expected_rows"]],
            bool(spec.get("ordered", False)),
        )

    def _compare(self, got: list[list[Any]], want: list[list[Any]], ordered: bool) -> Validation:
        if len(got) != len(want):
            return self.fail(
                f"result differs from expected_rows: got {len(got)} rows, expected {len(want)}"
            )
        if ordered:
            for index, (g, w) in enumerate(zip(got, want, strict=True)):
                if g != w:
                    return self.fail(
                        f"result differs from expected_rows at row {index}: got {g!r}, "
                        f"expected {w!r}"
                    )
            return Validation.passed()
        remaining = Counter(tuple(w) for w in want)
        for row in got:
            key = tuple(row)
            if remaining[key] <= 0:
                return self.fail(f"result differs from expected_rows: unexpected row {row!r}")
            remaining[key] -= 1
        return Validation.passed()


# ---------------------------------------------------------------------------------------
# bug_patch


class PatchError(Exception):
    """A diff that cannot be parsed or applied (:meth:`BugPatchValidator.apply`).

    ``str(exc)`` is the one-line reason, without the ``bug_patch:`` prefix.
    """


@dataclass(slots=True)
class _Hunk:
    number: int  # 1-based, within its file section
    old_start: int
    old_count: int
    lines: list[tuple[str, str]]  # (op, content incl. its "\n" unless at EOF without one)


@dataclass(slots=True)
class _FileDiff:
    old_path: str | None  # None: /dev/null (a new file)
    new_path: str | None  # None: /dev/null (a deleted file)
    hunks: list[_Hunk]


_HUNK_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# Extended header lines `git diff` writes between files; they carry nothing we apply.
_GIT_HEADERS = (
    "diff --git ",
    "index ",
    "old mode ",
    "new mode ",
    "new file mode ",
    "deleted file mode ",
    "similarity index ",
    "dissimilarity index ",
    "rename from ",
    "rename to ",
    "copy from ",
    "copy to ",
)


def _diff_path(header: str) -> str | None:
    """The path of a ``---``/``+++`` line (without the marker), or None for /dev/null."""
    path = header.split("\t", 1)[0].strip()  # drop a trailing "\t<timestamp>"
    return None if path == "/dev/null" else path


def _parse_diff(text: str) -> list[_FileDiff]:
    lines = text.split("\n")  # not splitlines(): "\r", "\x0c", "\u2028" are line content
    if lines and lines[-1] == "":
        lines.pop()
    files: list[_FileDiff] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- "):
            if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
                raise PatchError(f"line {i + 1}: '--- ' header not followed by '+++ '")
            section = _FileDiff(_diff_path(line[4:]), _diff_path(lines[i + 1][4:]), [])
            if section.old_path is None and section.new_path is None:
                raise PatchError(f"line {i + 1}: both file headers are /dev/null")
            i += 2
            while i < len(lines) and lines[i].startswith("@@"):
                hunk, i = _parse_hunk(lines, i, len(section.hunks) + 1)
                section.hunks.append(hunk)
            if not section.hunks:
                raise PatchError(f"line {i + 1}: file section without hunks")
            files.append(section)
        elif line.startswith("Binary files ") or line.startswith("GIT binary patch"):
            raise PatchError(f"line {i + 1}: binary patches are not supported")
        elif line.startswith(_GIT_HEADERS) or not line.strip():
            i += 1
        elif line.startswith("@@"):
            raise PatchError(f"line {i + 1}: hunk without '---'/'+++' file headers")
        else:
            raise PatchError(f"line {i + 1}: unexpected text outside a hunk: {_quote(line)}")
    if not files:
        raise PatchError("no unified diff found")
    return files


def _parse_hunk(lines: list[str], i: int, number: int) -> tuple[_Hunk, int]:
    header = _HUNK_HEADER.match(lines[i])
    if header is None:
        raise PatchError(f"line {i + 1}: malformed hunk header {_quote(lines[i])}")
    old_start = int(header.group(1))
    old_left = int(header.group(2) or 1)
    new_left = int(header.group(4) or 1)
    hunk = _Hunk(number, old_start, old_left, [])
    i += 1
    while old_left > 0 or new_left > 0:
        if i >= len(lines):
            raise PatchError(
                f"hunk {number} ends early: {old_left} old and {new_left} new lines missing"
            )
        line = lines[i]
        # GNU patch reads an empty line as an empty context line: editors and models
        # strip the single space that should be there.
        op, content = (" ", "") if line == "" else (line[0], line[1:])
        if op == "\\":
            if not hunk.lines:
                raise PatchError(f"line {i + 1}: '\\' marker before any hunk line")
            _drop_newline(hunk)
        elif op in " -+":
            if (op in " -" and old_left == 0) or (op in " +" and new_left == 0):
                raise PatchError(f"line {i + 1}: hunk {number} has more lines than its header says")
            old_left -= op in " -"
            new_left -= op in " +"
            hunk.lines.append((op, content + "\n"))
        else:
            raise PatchError(
                f"line {i + 1}: hunk {number} ends early: {old_left} old and {new_left} "
                f"new lines missing"
            )
        i += 1
    if i < len(lines) and lines[i].startswith("\\"):
        _drop_newline(hunk)
        i += 1
    return hunk, i


def _drop_newline(hunk: _Hunk) -> None:
    """Apply '\\ No newline at end of file' to the hunk's previous line."""
    op, content = hunk.lines[-1]
    hunk.lines[-1] = (op, content.removesuffix("\n"))


def _split_keepends(text: str) -> list[str]:
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _apply_hunks(path: str, text: str, hunks: list[_Hunk], allow_offset: bool) -> str:
    original = _split_keepends(text)
    out: list[str] = []
    pos = 0  # first original line not yet copied; hunks may not overlap or go back
    for hunk in hunks:
        old = [c for op, c in hunk.lines if op in " -"]
        new = [c for op, c in hunk.lines if op in " +"]
        # `-l,0` means "insert after line l"; otherwise l is the first old line.
        expected = hunk.old_start if hunk.old_count == 0 else hunk.old_start - 1
        start = _find_hunk(original, old, expected, pos, allow_offset and bool(old))
        if start is None:
            raise PatchError(
                f"{path}: hunk {hunk.number} does not apply: "
                + _mismatch(original, old, expected, pos)
            )
        out.extend(original[pos:start])
        out.extend(new)
        pos = start + len(old)
    out.extend(original[pos:])
    return "".join(out)


def _find_hunk(
    original: list[str], old: list[str], expected: int, pos: int, search: bool
) -> int | None:
    """Where ``old`` occurs exactly: at ``expected``, else (if ``search``) the nearest
    occurrence at or after ``pos`` -- earlier one first on a tie, as GNU patch does."""
    last = len(original) - len(old)

    def fits(at: int) -> bool:
        return pos <= at <= last and original[at : at + len(old)] == old

    if fits(expected):
        return expected
    if not search:
        return None
    for distance in range(1, max(expected - pos, last - expected) + 1):
        for at in (expected - distance, expected + distance):
            if fits(at):
                return at
    return None


def _mismatch(original: list[str], old: list[str], expected: int, pos: int) -> str:
    """Say why ``old`` does not fit at ``expected`` (the first differing line)."""
    if expected < pos:
        return f"it overlaps the previous hunk at line {expected + 1}"
    for offset, want in enumerate(old):
        at = expected + offset
        if at >= len(original):
            return f"line {at + 1} is past the end of the file, hunk expects {_show_line(want)}"
        if original[at] != want:
            return f"line {at + 1} is {_show_line(original[at])}, hunk expects {_show_line(want)}"
    return f"no place for it at line {expected + 1}"  # pure insertion beyond the end


def _show_line(content: str) -> str:
    """A source or hunk line for a reason: quoted, without its newline."""
    if content.endswith("\n"):
        return _quote(content[:-1])
    return _quote(content) + " (no newline at end of file)"


def _safe_relative(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not path.startswith("/")
        and ".." not in parts
        and not any(c in path for c in "\\\x00")
    )


class BugPatchValidator(Validator):
    """The answer is a unified diff that applies cleanly to ``spec["source"]``.

    The diff may carry ``diff --git``/``index``/mode lines and blank lines between
    file sections; any other text outside a hunk (prose before the diff, say) fails.
    Hunk line counts must match their headers; an empty line inside a hunk is read as
    an empty context line, and ``\\ No newline at end of file`` is honoured (so the
    final-newline state must match too). Context and removed lines must match the
    source exactly -- no fuzz, no whitespace leniency. A hunk may sit at another line
    than its header says (the nearest exact match, as GNU patch's *offset*) unless
    ``allow_offset`` is false. A patch that changes nothing fails.

    File names: a path in ``---``/``+++`` is looked up as written, then without its
    first component (``a/x.py`` -> ``x.py``, i.e. ``-p1``). New files (``--- /dev/null``)
    and deletions (``+++ /dev/null``) are supported; renames are not. With a single
    ``source`` text the diff must have exactly one file section, whose names are not
    checked; ``spec["path"]`` (else the diff's own name) names that file on disk.

    With ``test_command`` (an argv list, no shell) the patched tree is written to a
    fresh scratch directory and the command runs there; it fails the answer if it
    exits non-zero or runs past ``timeout_s`` (default 10; its whole process group is
    then killed, as it is after a normal exit). The scratch directory is removed
    afterwards on every path (pass, failure, timeout, cancellation).

    Containment of accidents -- this is **NOT a security sandbox**: the model's code
    runs with the router's user and privileges, can read that user's files, use the
    network and leave its process group. What it gets is:

    - an environment with nothing inherited from the router: ``PATH`` (the running
      interpreter's directory, ``/usr/local/bin``, ``/usr/bin``, ``/bin``), ``HOME``
      and ``TMPDIR`` set to the scratch directory, ``LANG=C.UTF-8``,
      ``PYTHONDONTWRITEBYTECODE=1``, then ``spec["env"]`` -- so the router's API keys
      are not handed to it;
    - stdin from ``/dev/null``, stdout and stderr to an anonymous file (only the last
      line is read, for the reason), no other inherited file descriptor;
    - resource limits: ``RLIMIT_CPU`` = ``timeout_s`` rounded up +
      :data:`SUBPROCESS_CPU_GRACE_S`, ``RLIMIT_AS`` = ``spec["max_memory_mb"]`` or
      :data:`SUBPROCESS_MAX_MEMORY_BYTES`, ``RLIMIT_FSIZE`` =
      :data:`SUBPROCESS_MAX_FILE_BYTES` (its output included), no core files. A test
      that hits one fails the answer like any failing test.
    """

    task_type = "bug_patch"

    def may_block(self, spec: Mapping[str, Any]) -> bool:
        # Applying a patch is pure Python and proportional to it; tests run a process.
        return spec.get("test_command") is not None

    def check_spec(self, spec: Mapping[str, Any]) -> None:
        source = spec.get("source")
        if isinstance(source, Mapping):
            for path, text in source.items():
                if not isinstance(path, str) or not _safe_relative(path):
                    raise _spec_error(self.task_type, "source", "keyed by relative paths", path)
                if not isinstance(text, str):
                    raise InputError(
                        f"spec['source'][{path!r}] for task type 'bug_patch' must be text, "
                        f"got {type(text).__name__}"
                    )
        elif source is None:
            # No source to patch (e.g. an agent's conversation through the gateway): the
            # answer cannot be judged, so it is accepted unvalidated; see check().
            if spec.get("test_command") is not None:
                raise _spec_error(
                    self.task_type, "source", "text or a {path: text} mapping", source
                )
        elif not isinstance(source, str):
            raise _spec_error(self.task_type, "source", "text or a {path: text} mapping", source)
        path = spec.get("path")
        if path is not None and not (isinstance(path, str) and _safe_relative(path)):
            raise _spec_error(self.task_type, "path", "a relative path", path)
        _spec_bool(self.task_type, spec, "allow_offset", True)
        _spec_seconds(self.task_type, spec, "timeout_s", 10.0)
        _spec_positive_int(self.task_type, spec, "max_memory_mb", SUBPROCESS_MAX_MEMORY_BYTES >> 20)
        command = spec.get("test_command")
        if command is not None and (
            not isinstance(command, list | tuple)
            or not command
            or not all(isinstance(arg, str) for arg in command)
        ):
            raise _spec_error(self.task_type, "test_command", "a non-empty argv list", command)
        env = spec.get("env", {})
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise _spec_error(self.task_type, "env", "a mapping of strings", env)

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        if spec.get("source") is None:
            return Validation.passed()  # nothing to apply the patch to: not validated
        try:
            patched = self.apply(text, spec)
        except PatchError as exc:
            return self.fail(str(exc))
        command = spec.get("test_command")
        if command is None:
            return Validation.passed()
        return self._run_tests(list(command), patched, spec)

    def apply(self, diff: str, spec: Mapping[str, Any]) -> dict[str, str | None]:
        """Apply ``diff`` to the spec's sources: the whole tree, ``None`` for deleted files.

        The spec must have passed :meth:`check_spec`. Raises :class:`PatchError` if the
        diff does not parse or does not apply, or changes nothing.
        """
        files = _parse_diff(diff)
        source = spec["source"]
        allow_offset = bool(spec.get("allow_offset", True))
        if isinstance(source, str):
            if len(files) != 1:
                raise PatchError(f"{len(files)} file sections; the task has a single file")
            if files[0].old_path is None:
                raise PatchError("the patch creates a file; the task has one existing file")
            name = spec.get("path") or self._new_name(files[0])
            tree: dict[str, str | None] = {name: source}
            targets = [(name, files[0])]
        else:
            tree = dict(source)
            targets = [(self._resolve(section, tree), section) for section in files]
        before = dict(tree)
        seen: set[str] = set()
        for name, section in targets:
            if name in seen:
                raise PatchError(f"{name} is patched by more than one file section")
            seen.add(name)
            old_text = "" if section.old_path is None else tree[name]
            assert old_text is not None  # only the loop deletes, and names are unique
            new_text = _apply_hunks(name, old_text, section.hunks, allow_offset)
            if section.new_path is None:
                if new_text:
                    raise PatchError(f"{name}: deletion leaves lines behind")
                tree[name] = None
            else:
                tree[name] = new_text
        if all(before.get(name) == tree[name] for name in seen):
            raise PatchError("patch makes no change")
        return tree

    @staticmethod
    def _new_name(section: _FileDiff) -> str:
        """The on-disk name a section creates: its new path, minus git's ``b/``."""
        raw = section.new_path if section.new_path is not None else section.old_path
        assert raw is not None
        name = raw[2:] if raw.startswith(("a/", "b/")) else raw
        if not _safe_relative(name):
            raise PatchError(f"unsafe path {_quote(raw)}")
        return name

    def _resolve(self, section: _FileDiff, tree: dict[str, str | None]) -> str:
        if section.old_path is None:  # a new file
            name = self._new_name(section)
            if name in tree:
                raise PatchError(f"{name}: created by the patch but it already exists")
            return name
        raw = section.old_path
        candidates = [raw]
        if "/" in raw:
            candidates.append(raw.split("/", 1)[1])
        for candidate in candidates:
            if candidate in tree:
                return candidate
        raise PatchError(f"unknown file {_quote(raw)} (not in the task's source)")

    def _run_tests(
        self, command: list[str], tree: Mapping[str, str | None], spec: Mapping[str, Any]
    ) -> Validation:
        timeout_s = _spec_seconds(self.task_type, spec, "timeout_s", 10.0)
        memory_mb = spec.get("max_memory_mb")
        limits = _Limits.for_timeout(
            timeout_s, memory_bytes=None if memory_mb is None else int(memory_mb) << 20
        )
        with (
            tempfile.TemporaryDirectory(prefix="costroute-patch-") as tmp,
            tempfile.TemporaryFile() as log,
        ):
            root = Path(tmp)
            for name, text in tree.items():
                if text is None:
                    continue
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8", newline="")
            env = {
                "PATH": _MINIMAL_PATH,
                "HOME": tmp,
                "TMPDIR": tmp,
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                **spec.get("env", {}),
            }
            try:
                # Output goes to an anonymous file, not a pipe: a chatty test cannot
                # fill memory (RLIMIT_FSIZE bounds the file), and only the tail is read.
                proc = _spawn(
                    command,
                    limits,
                    cwd=tmp,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return self.fail(f"test_command could not start: {exc}")
            status: int | None = None
            try:
                status = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            finally:
                _reap(proc)
            if status is None:
                return self.fail(f"test_command timed out after {timeout_s:g}s")
            if status == 0:
                return Validation.passed()
            tail = _last_line(log)
            how = (
                f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            )
            return self.fail(f"test_command {how}" + (f": {tail}" if tail else ""))


def _last_line(log: Any, tail_bytes: int = 4096) -> str:
    """The last non-empty line of the test's output, for the failure reason."""
    log.seek(0, os.SEEK_END)
    size = log.tell()
    log.seek(max(0, size - tail_bytes))
    lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return _one_line(lines[-1], 200) if lines else ""


# ---------------------------------------------------------------------------------------
# error_handling


def _exception_names(node: ast.expr | None) -> list[str]:
    """Names an ``except`` clause catches: ``json.JSONDecodeError`` -> ``JSONDecodeError``."""
    if node is None:
        return []
    if isinstance(node, ast.Tuple):
        return [name for elt in node.elts for name in _exception_names(elt)]
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


class ErrorHandlingValidator(Validator):
    """The answer is Python source that compiles; it handles the exceptions it must.

    The text is compiled (:func:`compile` to bytecode, never run), which catches what
    :func:`ast.parse` alone lets through, such as ``return`` outside a function. Empty
    text fails. With ``spec["must_handle"]`` every listed exception name must appear
    in some ``except`` (or ``except*``) clause, compared by the last dotted component
    (``json.JSONDecodeError`` and ``JSONDecodeError`` are the same name). A broader
    handler (``except Exception``, a bare ``except``) does not count: the task asked
    for that exception to be handled specifically.
    """

    task_type = "error_handling"

    def may_block(self, spec: Mapping[str, Any]) -> bool:
        return False  # compiling and walking the tree: proportional to the answer

    def check_spec(self, spec: Mapping[str, Any]) -> None:
        _spec_str_list(self.task_type, spec, "must_handle")

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        if not text.strip():
            return self.fail("empty output")
        try:
            compile(text, "<answer>", "exec", dont_inherit=True)
            tree = ast.parse(text)
        except SyntaxError as exc:
            where = f" (line {exc.lineno}, column {exc.offset})" if exc.lineno else ""
            return self.fail(f"SyntaxError: {exc.msg}{where}")
        except (ValueError, RecursionError, MemoryError) as exc:
            # NUL bytes, absurd nesting.
            return self.fail(f"does not compile: {type(exc).__name__}: {exc}")
        must = _spec_str_list(self.task_type, spec, "must_handle")
        if not must:
            return Validation.passed()
        handled = {
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.ExceptHandler)
            for name in _exception_names(node.type)
        }
        missing = [name for name in must if name.rsplit(".", 1)[-1] not in handled]
        if missing:
            return self.fail(f"no except clause for {', '.join(missing)}")
        return Validation.passed()


# ---------------------------------------------------------------------------------------
# Registry and dispatch

_REGISTRY: dict[str, Validator] = {}


def register_validator(validator: Validator, *, replace: bool = False) -> None:
    """Make ``validator`` judge answers of ``validator.task_type``.

    Registering a second validator for a type raises :class:`InputError` unless
    ``replace`` is true (so two plugins cannot silently override each other).
    """
    task_type = getattr(validator, "task_type", None)
    if not isinstance(task_type, str) or not task_type:
        raise InputError(f"{type(validator).__name__} has no task_type")
    if task_type in _REGISTRY and not replace:
        raise InputError(
            f"a validator for task type {task_type!r} is already registered "
            f"({type(_REGISTRY[task_type]).__name__}); pass replace=True to override it"
        )
    _REGISTRY[task_type] = validator


def get_validator(task_type: str) -> Validator | None:
    """The validator registered for ``task_type``, or ``None``."""
    return _REGISTRY.get(task_type)


def registered_task_types() -> tuple[str, ...]:
    """The task types that have a validator, sorted."""
    return tuple(sorted(_REGISTRY))


def validate(task_type: str, output: str, spec: Mapping[str, Any] | None = None) -> Validation:
    """Judge ``output`` with the validator registered for ``task_type``.

    A task type without a validator passes, with the reason
    ``"not validated: no validator for task type '<type>'"``. Raises
    :class:`~router.errors.InputError` only for a malformed ``spec``.
    """
    validator = _REGISTRY.get(task_type)
    if validator is None:
        return Validation.passed(f"not validated: no validator for task type {task_type!r}")
    return validator.validate(output, spec)


def validate_task(task: Task, output: str) -> Validation:
    """:func:`validate` for a :class:`~router.task.Task`: its resolved type and its spec.

    Blocks the calling thread for as long as the check takes (a test command: up to
    its timeout). On an event loop use :func:`validate_task_async`.
    """
    return validate(task.resolved_type(), output, task.spec)


def check_spec(task: Task) -> None:
    """Raise :class:`~router.errors.InputError` if ``task.spec`` is malformed.

    Needs no answer, so a driver can reject a task before it calls (and pays) a model.
    The error is one line naming the task type and the bad key, the same error
    :func:`validate_task` would raise. A task type without a validator passes; no spec
    is read as an empty one, which every built-in type accepts (a ``bug_patch`` answer
    without ``spec["source"]`` cannot be judged and is accepted unvalidated).

    Cheap and side-effect free -- no subprocess, no SQL, no network -- so it may run
    on an event loop; the first schema or dialect check in a process imports
    jsonschema or sqlglot (~0.1 s, once). Not caught here, because only running it
    tells: a ``sqlite_schema`` that does not run, a JSON Schema ``$ref`` that does not
    resolve; :func:`validate_task` raises for those.
    """
    validator = _REGISTRY.get(task.resolved_type())
    if validator is not None:
        validator.accept_spec(task.spec)


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _default_executor() -> ThreadPoolExecutor:
    """The module's pool, created on first use (importing the module starts no thread)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=VALIDATION_WORKERS, thread_name_prefix="costroute-validation"
            )
        return _executor


def _run_job(job: _Job, validator: Validator, output: str, spec: Mapping[str, Any]) -> Validation:
    """The worker-thread side of :func:`validate_task_async`."""
    if job.cancelled:  # cancelled while queued but already picked up: start nothing
        return validator.fail("cancelled")
    token = _JOB.set(job)
    try:
        return validator.validate(output, spec)
    finally:
        _JOB.reset(token)


async def validate_task_async(
    task: Task, output: str, *, executor: Executor | None = None
) -> Validation:
    """:func:`validate_task` without blocking the running event loop.

    Same verdicts, reasons and :class:`~router.errors.InputError` cases as
    :func:`validate_task`. Checks whose validator says they may block
    (:meth:`Validator.may_block`: the regex worker for examples, SQL run on SQLite, a
    bug_patch test command, a custom validator by default) run in ``executor`` --
    which must run work in this process, in threads -- or, by default, in a module
    thread pool of :data:`VALIDATION_WORKERS` threads; the rest run inline, since a
    thread hop would cost more than they do. Each validator keeps its own timeout,
    counted from when a worker starts it (not from when it was queued).

    Cancellation: if the awaiting task is cancelled, a validation still queued never
    starts; a running one has its subprocess's process group SIGKILLed (or its SQLite
    query interrupted), and this coroutine waits (up to 2 s) for the worker to reap it
    and remove its scratch directory before re-raising :class:`asyncio.CancelledError`.
    So when the cancellation reaches the caller, nothing the validation started is
    left running. A custom validator's own blocking work cannot be interrupted; it
    finishes in its thread and its result is dropped.
    """
    task_type = task.resolved_type()
    validator = _REGISTRY.get(task_type)
    if validator is None:
        return validate(task_type, output, task.spec)
    spec = {} if task.spec is None else task.spec
    if not isinstance(spec, Mapping) or not validator.may_block(spec):
        return validator.validate(output, spec)  # also raises for a non-mapping spec
    if isinstance(executor, ProcessPoolExecutor):
        raise InputError(
            "validate_task_async: executor must run work in this process (threads), "
            "got a ProcessPoolExecutor"
        )
    pool = _default_executor() if executor is None else executor
    job = _Job()
    # submit + wrap_future rather than loop.run_in_executor (which does the same): the
    # concurrent future is needed to cancel a queued job, and the asyncio one, shielded,
    # to wait for a running job to clean up after the awaiting task was cancelled.
    # copy_context: the worker sees the caller's context variables, as asyncio.to_thread.
    future = pool.submit(contextvars.copy_context().run, _run_job, job, validator, output, spec)
    waiter = asyncio.wrap_future(future)
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        job.cancel()
        if not future.cancel():  # already running: let it reap and clean up first
            await asyncio.wait([waiter], timeout=_CANCEL_GRACE_S)
        raise


for _validator in (
    JsonValidator(),
    RegexValidator(),
    SqlValidator(),
    BugPatchValidator(),
    ErrorHandlingValidator(),
):
    register_validator(_validator)
del _validator
