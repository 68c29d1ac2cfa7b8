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
    environment variables for the test command.
``error_handling``
    ``must_handle``: exception names that must each appear in an ``except`` clause.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
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
    "MAX_REASON_CHARS",
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


def _spec_str_list(task_type: str, spec: Mapping[str, Any], key: str) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _spec_error(task_type, key, "a list of strings", value)
    return list(value)


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
      can call when a task is submitted.
    """

    #: The task type this validator judges; the prefix of its failure reasons.
    task_type: ClassVar[str]

    def validate(self, output: str, spec: Mapping[str, Any] | None = None) -> Validation:
        """Check the spec, strip a surrounding code fence, and judge ``output``."""
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            raise InputError(
                f"spec for task type {self.task_type!r} must be a mapping, "
                f"got {type(spec).__name__}"
            )
        self.check_spec(spec)
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

    def check_spec(self, spec: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Raise :class:`~router.errors.InputError` if ``spec`` is malformed. Default: accept."""

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
    with examples, in exchange for a hard bound without signals or threads.
    """

    task_type = "regex"

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
        job = json.dumps({"pattern": pattern, "mode": mode, "matches": matches, "rejects": rejects})
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _REGEX_WORKER],
                input=job,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            # subprocess.run has already killed the worker.
            return self.fail(
                f"matching the examples took longer than {timeout_s:g}s "
                f"(catastrophic backtracking?)"
            )
        if done.returncode != 0:
            return self.fail(f"matching worker failed with exit status {done.returncode}")
        verdict = json.loads(done.stdout)
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
        max_rows = spec.get("max_rows", 10_000)
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise _spec_error(self.task_type, "max_rows", "a positive integer", max_rows)
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

            def over_time() -> int:
                nonlocal timed_out
                timed_out = time.monotonic() > deadline
                return 1 if timed_out else 0

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
    fresh temporary directory and the command runs there; it fails the answer if it
    exits non-zero or runs past ``timeout_s`` (default 10; its whole process group is
    then killed). This is **not a sandbox**: the model's code runs with the router's
    privileges. What it does get is a scrubbed environment -- ``PATH``, ``HOME`` and
    ``TMPDIR`` set to the temporary directory, ``LANG``, plus ``spec["env"]`` -- so
    the router's API keys are not handed to it.
    """

    task_type = "bug_patch"

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
        elif not isinstance(source, str):
            raise _spec_error(self.task_type, "source", "text or a {path: text} mapping", source)
        path = spec.get("path")
        if path is not None and not (isinstance(path, str) and _safe_relative(path)):
            raise _spec_error(self.task_type, "path", "a relative path", path)
        _spec_bool(self.task_type, spec, "allow_offset", True)
        _spec_seconds(self.task_type, spec, "timeout_s", 10.0)
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
                "PATH": os.environ.get("PATH", os.defpath),
                "HOME": tmp,
                "TMPDIR": tmp,
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                **spec.get("env", {}),
            }
            try:
                # Output goes to an anonymous file, not a pipe: a chatty test cannot
                # fill memory, and only the tail is read for the reason.
                proc = subprocess.Popen(
                    command,
                    cwd=tmp,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, to kill it whole
                )
            except OSError as exc:
                return self.fail(f"test_command could not start: {exc}")
            status: int | None = None
            try:
                status = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            finally:
                # On a timeout, and also after a normal exit: a test may leave children.
                _kill_group(proc)
            if status is None:
                return self.fail(f"test_command timed out after {timeout_s:g}s")
            if status == 0:
                return Validation.passed()
            tail = _last_line(log)
            how = (
                f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            )
            return self.fail(f"test_command {how}" + (f": {tail}" if tail else ""))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone
    proc.wait()


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
    """:func:`validate` for a :class:`~router.task.Task`: its resolved type and its spec."""
    return validate(task.resolved_type(), output, task.spec)


for _validator in (
    JsonValidator(),
    RegexValidator(),
    SqlValidator(),
    BugPatchValidator(),
    ErrorHandlingValidator(),
):
    register_validator(_validator)
del _validator
