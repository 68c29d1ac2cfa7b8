"""Tests for router.validation's event-loop side and its subprocess containment.

Everything here runs real subprocesses, real threads and a real event loop: the
claims are about timing, processes and files, so nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from router.errors import InputError
from router.task import Task
from router.validation import (
    Validation,
    Validator,
    register_validator,
    validate_task,
    validate_task_async,
)

T = TypeVar("T")

OK = Validation(True, "")

CALC = "def add(a, b):\n    return a - b\n"
SOURCES = {"calc.py": CALC}
FIX = (
    "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n"
    " def add(a, b):\n-    return a - b\n+    return a + b\n"
)

SQL_SCHEMA = "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);"
RUNAWAY_SQL = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
)
BACKTRACKING = "(a+)+"
BACKTRACKING_SPEC: dict[str, Any] = {"matches": ["aaaa"], "rejects": ["a" * 40 + "!"]}

# The PATH a test command gets: the interpreter's directory, then the system ones.
EXPECTED_PATH = os.pathsep.join(
    dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
)


def python(*lines: str) -> list[str]:
    """A test command: this interpreter running ``lines`` as a script."""
    return [sys.executable, "-c", "\n".join(lines)]


def patch_task(command: list[str], **spec: Any) -> Task:
    return Task(
        "t", task_type="bug_patch", spec={"source": SOURCES, "test_command": command, **spec}
    )


def record_cwd(path: Path) -> str:
    """A line of test-command code that writes its working directory to ``path``."""
    return f"import os, pathlib; pathlib.Path({str(path)!r}).write_text(os.getcwd())"


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead:
    PID 1 in a container does not always reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_for_file(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)


async def with_ticker(work: Awaitable[T], period_s: float = 0.01) -> tuple[T, float]:
    """Await ``work`` while a ticker sleeps ``period_s`` in a loop; return its result
    and the ticker's worst lateness (how much later than asked a sleep returned)."""
    loop = asyncio.get_running_loop()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while True:
            asked = loop.time() + period_s
            await asyncio.sleep(period_s)
            worst = max(worst, loop.time() - asked)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running before the work starts
    try:
        result = await work
        # Let the sleep in flight return, so a stall at the very end is measured too.
        await asyncio.sleep(2 * period_s)
    finally:
        tick.cancel()
    return result, worst


class RecordingExecutor(ThreadPoolExecutor):
    """A real thread pool that keeps the futures it was given, to count and inspect."""

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__(max_workers=max_workers)
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


# ---------------------------------------------------------------------------------------
# The event loop keeps its timers


@pytest.mark.parametrize(
    ("task", "verdict", "min_s"),
    [
        pytest.param(
            patch_task(python("import time", "time.sleep(2)")), OK, 2.0, id="bug_patch-2s"
        ),
        pytest.param(
            Task("r", task_type="regex", spec={**BACKTRACKING_SPEC, "timeout_s": 0.5}),
            Validation(
                False,
                "regex: matching the examples took longer than 0.5s (catastrophic backtracking?)",
            ),
            0.5,
            id="regex-backtracking",
        ),
        pytest.param(
            Task("s", task_type="sql", spec={"sqlite_schema": SQL_SCHEMA, "timeout_s": 0.5}),
            Validation(False, "sql: query ran longer than 0.5s"),
            0.5,
            id="sql-runaway",
        ),
    ],
)
def test_slow_validation_does_not_delay_other_timers(
    task: Task, verdict: Validation, min_s: float
) -> None:
    answer = {"bug_patch": FIX, "regex": BACKTRACKING, "sql": RUNAWAY_SQL}[task.task_type or ""]
    started = time.monotonic()
    result, lateness = asyncio.run(with_ticker(validate_task_async(task, answer)))
    assert result == verdict
    assert time.monotonic() - started >= min_s  # the slow part really ran
    assert lateness < 0.05


def test_the_ticker_does_see_a_blocking_validation() -> None:
    # The control for the test above: the same measurement around the synchronous API
    # reports the stall, so a lateness under 50 ms there means something.
    task = patch_task(python("import time", "time.sleep(0.3)"))

    async def blocking() -> Validation:
        return validate_task(task, FIX)

    async def main() -> tuple[Validation, float]:
        return await with_ticker(blocking())

    result, lateness = asyncio.run(main())
    assert result == OK
    assert lateness > 0.25


# ---------------------------------------------------------------------------------------
# What runs inline and what runs in the executor


class _Slow(Validator):
    """A custom validator that says nothing about blocking: it must run off the loop."""

    task_type = "slow-custom"

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        return Validation.passed() if text == "yes" else self.fail("said no")


@pytest.fixture
def custom_validator() -> Iterator[None]:
    register_validator(_Slow())
    yield
    from router import validation

    validation._REGISTRY.pop("slow-custom", None)


@pytest.mark.parametrize(
    ("task", "answer", "off_loop"),
    [
        pytest.param(
            Task("j", task_type="json", spec={"schema": {"type": "array"}}), "{}", False, id="json"
        ),
        pytest.param(Task("r", task_type="regex"), "a+", False, id="regex-compile"),
        pytest.param(
            Task("r", task_type="regex", spec={"matches": ["aa"]}), "a+", True, id="regex-examples"
        ),
        pytest.param(Task("s", task_type="sql"), "SELECT 1", False, id="sql-parse"),
        pytest.param(
            Task("s", task_type="sql", spec={"sqlite_schema": SQL_SCHEMA}),
            "SELECT x FROM t",
            True,
            id="sql-sqlite",
        ),
        pytest.param(
            Task("b", task_type="bug_patch", spec={"source": SOURCES}), FIX, False, id="patch-apply"
        ),
        pytest.param(patch_task(python("pass")), FIX, True, id="patch-tests"),
        pytest.param(
            Task("e", task_type="error_handling", spec={"must_handle": ["KeyError"]}),
            "x=1",
            False,
            id="error_handling",
        ),
        pytest.param(Task("u", task_type="unknown"), "anything", False, id="unknown"),
        pytest.param(Task("c", task_type="slow-custom"), "yes", True, id="custom-pass"),
        pytest.param(Task("c", task_type="slow-custom"), "no", True, id="custom-fail"),
    ],
)
@pytest.mark.usefixtures("custom_validator")
def test_only_blocking_checks_go_to_the_executor(task: Task, answer: str, off_loop: bool) -> None:
    # The libraries are imported already, as in a router that has validated before:
    # a first use is itself blocking work and would go off the loop.
    import jsonschema  # noqa: F401
    import sqlglot  # noqa: F401

    with RecordingExecutor() as pool:
        result = asyncio.run(validate_task_async(task, answer, executor=pool))
    assert len(pool.futures) == (1 if off_loop else 0)
    assert result == validate_task(task, answer)  # the same verdict as the sync API


def test_spec_errors_raise_from_the_worker_and_inline() -> None:
    broken_schema = Task("s", task_type="sql", spec={"sqlite_schema": "CREATE TABLE (;"})
    with RecordingExecutor() as pool, pytest.raises(InputError) as info:
        asyncio.run(validate_task_async(broken_schema, "SELECT 1", executor=pool))
    assert len(pool.futures) == 1
    assert str(info.value).startswith(
        "spec['sqlite_schema'] for task type 'sql' does not run: near \"(\": syntax error"
    )
    with pytest.raises(InputError) as info:
        asyncio.run(validate_task_async(Task("j", task_type="json", spec=["x"]), "{}"))  # type: ignore[arg-type]
    assert str(info.value) == "spec for task type 'json' must be a mapping, got list"


def test_a_process_pool_is_refused() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool, pytest.raises(InputError) as info:
        asyncio.run(validate_task_async(patch_task(python("pass")), FIX, executor=pool))
    assert str(info.value) == (
        "validate_task_async: executor must run work in this process (threads), "
        "got a ProcessPoolExecutor"
    )


# ---------------------------------------------------------------------------------------
# Cancellation releases everything


def test_cancelling_kills_the_test_process_group_and_removes_the_scratch_dir(
    tmp_path: Path,
) -> None:
    started = tmp_path / "started"
    marker = tmp_path / "finished"
    grandchild = (
        "import pathlib, sys, time; time.sleep(1.0); pathlib.Path(sys.argv[1]).write_text('x')"
    )
    command = python(
        "import os, pathlib, subprocess, sys, time",
        f"child = subprocess.Popen([sys.executable, '-c', {grandchild!r}, {str(marker)!r} + '.2'])",
        f"pathlib.Path({str(started)!r} + '.tmp').write_text(",
        "    f'{os.getpid()} {child.pid} {os.getcwd()}')",
        f"os.replace({str(started)!r} + '.tmp', {str(started)!r})",
        "time.sleep(1.0)",
        f"pathlib.Path({str(marker)!r}).write_text('x')",
    )

    async def main() -> float:
        job = asyncio.create_task(validate_task_async(patch_task(command), FIX))
        await wait_for_file(started)
        job.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await job
        return time.monotonic() - cancelled_at

    waited_s = asyncio.run(main())
    assert waited_s < 0.5  # killed, not waited for: the test had a second left to sleep
    pid, child_pid, scratch = started.read_text().split(" ", 2)
    assert not alive(int(pid))  # reaped before the cancellation reached us
    assert not Path(scratch).exists()
    deadline = time.monotonic() + 1.0  # the grandchild's SIGKILL is delivered async.
    while alive(int(child_pid)):
        assert time.monotonic() < deadline, "grandchild survived the group kill"
        time.sleep(0.01)
    time.sleep(1.2)  # past both sleeps: neither process got to write its file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]


def test_a_cancelled_validation_that_is_still_queued_never_starts(tmp_path: Path) -> None:
    first_started = tmp_path / "first"
    second_ran = tmp_path / "second"
    first = patch_task(
        python(
            f"import pathlib, time; pathlib.Path({str(first_started)!r}).touch()", "time.sleep(0.5)"
        )
    )
    second = patch_task(python(f"import pathlib; pathlib.Path({str(second_ran)!r}).touch()"))

    async def main(pool: RecordingExecutor) -> Validation:
        running = asyncio.create_task(validate_task_async(first, FIX, executor=pool))
        await wait_for_file(first_started)
        queued = asyncio.create_task(validate_task_async(second, FIX, executor=pool))
        await asyncio.sleep(0.05)
        assert not pool.futures[1].running()  # the only worker is busy with the first
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        return await running

    with RecordingExecutor(max_workers=1) as pool:
        assert asyncio.run(main(pool)) == OK
    # The pool is shut down (all work done): the second test command never ran.
    assert pool.futures[1].cancelled()
    assert not second_ran.exists()


@pytest.mark.parametrize(
    ("task", "answer"),
    [
        pytest.param(
            Task("r", task_type="regex", spec={**BACKTRACKING_SPEC, "timeout_s": 60}),
            BACKTRACKING,
            id="regex-worker-killed",
        ),
        pytest.param(
            Task("s", task_type="sql", spec={"sqlite_schema": SQL_SCHEMA, "timeout_s": 60}),
            RUNAWAY_SQL,
            id="sqlite-query-interrupted",
        ),
    ],
)
def test_cancelling_stops_a_running_check_and_frees_its_worker(task: Task, answer: str) -> None:
    async def main(pool: RecordingExecutor) -> float:
        job = asyncio.create_task(validate_task_async(task, answer, executor=pool))
        deadline = time.monotonic() + 10
        while not (pool.futures and pool.futures[0].running()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # well into the match / the query
        job.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await job
        return time.monotonic() - cancelled_at

    with RecordingExecutor(max_workers=1) as pool:
        waited_s = asyncio.run(main(pool))
        # The worker has already finished: the check was stopped, not abandoned.
        assert pool.futures[0].done()
        assert pool.submit(lambda: "free").result(timeout=1) == "free"
    assert waited_s < 1.0


# ---------------------------------------------------------------------------------------
# Containment of test commands (not a sandbox): environment, limits, scratch directory


ENV_PROBE = python(
    "import os, sys",
    "env = dict(os.environ)",
    "if 'COSTROUTE_SECRET_CANARY' in env: sys.exit('canary leaked')",
    "here = os.getcwd()",
    "home = os.path.realpath(env.pop('HOME', ''))",
    "tmp = os.path.realpath(env.pop('TMPDIR', ''))",
    "if home != here or tmp != here: sys.exit(f'HOME {home} TMPDIR {tmp} cwd {here}')",
    "print(sorted(env.items()))",
    "want = {'PATH': sys.argv[1], 'LANG': 'C.UTF-8', 'PYTHONDONTWRITEBYTECODE': '1'}",
    "sys.exit(0 if env == want else 1)",
)


def test_test_command_sees_none_of_the_routers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COSTROUTE_SECRET_CANARY", "sk-canary-do-not-leak")
    monkeypatch.setenv("PATH", "/router/only/bin" + os.pathsep + os.environ["PATH"])
    task = patch_task([*ENV_PROBE, EXPECTED_PATH])
    assert asyncio.run(validate_task_async(task, FIX)) == OK
    # The probe can fail: handed the canary through the spec, it says so.
    leaky = patch_task([*ENV_PROBE, EXPECTED_PATH], env={"COSTROUTE_SECRET_CANARY": "x"})
    assert asyncio.run(validate_task_async(leaky, FIX)) == Validation(
        False, "bug_patch: test_command exited with status 1: canary leaked"
    )


LIMITS_PROBE = python(
    "import json, os, resource, sys",
    "got = {name: resource.getrlimit(getattr(resource, 'RLIMIT_' + name))",
    "       for name in ('CPU', 'AS', 'FSIZE', 'CORE')}",
    "got['fds'] = len(set(os.listdir('/proc/self/fd')) - {'0', '1', '2'})",
    "got['stdin'] = os.readlink('/proc/self/fd/0')",
    "got['pgid_is_pid'] = os.getpgid(0) == os.getpid()",
    "want = json.loads(sys.argv[1])",
    "got = json.loads(json.dumps(got))",
    "print(sorted((k, v) for k, v in got.items() if want[k] != v))",
    "sys.exit(0 if got == want else 1)",
)


@pytest.mark.parametrize(
    ("spec", "memory"),
    [
        pytest.param({"timeout_s": 3}, 1 << 30, id="defaults"),
        pytest.param({"timeout_s": 2.5, "max_memory_mb": 256}, 256 << 20, id="max_memory_mb"),
    ],
)
def test_test_command_runs_under_resource_limits_with_no_inherited_fds(
    spec: dict[str, Any], memory: int
) -> None:
    import json

    want = {
        "CPU": [8, 9],  # the timeout rounded up, + 5 s; the hard limit 1 s later
        "AS": [memory, memory],
        "FSIZE": [16 << 20, 16 << 20],
        "CORE": [0, 0],
        "fds": 1,  # only the one listing /proc/self/fd
        "stdin": "/dev/null",
        "pgid_is_pid": True,
    }
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # would leak into the child without close_fds
    try:
        task = patch_task([*LIMITS_PROBE, json.dumps(want)], **spec)
        assert validate_task(task, FIX) == OK
    finally:
        os.close(read_end)
        os.close(write_end)


def test_writing_past_the_file_size_limit_fails_cleanly(tmp_path: Path) -> None:
    cwd_file = tmp_path / "cwd"
    command = python(
        record_cwd(cwd_file),
        "with open('big.bin', 'wb') as f:",
        "    for _ in range(17):",  # 17 MiB > 16 MiB
        "        f.write(b'x' * (1 << 20))",
    )
    result = asyncio.run(validate_task_async(patch_task(command), FIX))
    assert result == Validation(
        False, "bug_patch: test_command exited with status 1: OSError: [Errno 27] File too large"
    )
    assert not Path(cwd_file.read_text()).exists()


def test_allocating_past_the_memory_limit_fails_cleanly() -> None:
    command = python("block = bytearray(512 << 20)")
    assert validate_task(patch_task(command, max_memory_mb=128), FIX) == Validation(
        False, "bug_patch: test_command exited with status 1: MemoryError"
    )


@pytest.mark.parametrize(
    ("tail", "spec", "verdict"),
    [
        pytest.param("pass", {}, OK, id="pass"),
        pytest.param(
            "raise SystemExit('no')",
            {},
            Validation(False, "bug_patch: test_command exited with status 1: no"),
            id="fail",
        ),
        pytest.param(
            "import time; time.sleep(30)",
            {"timeout_s": 0.3},
            Validation(False, "bug_patch: test_command timed out after 0.3s"),
            id="timeout",
        ),
    ],
)
def test_the_scratch_directory_is_removed_on_every_path(
    tmp_path: Path, tail: str, spec: dict[str, Any], verdict: Validation
) -> None:
    cwd_file = tmp_path / "cwd"
    command = python(record_cwd(cwd_file), "open('left-behind.txt', 'w').write('x')", tail)
    assert validate_task(patch_task(command, **spec), FIX) == verdict
    scratch = Path(cwd_file.read_text())
    assert scratch.name.startswith("costroute-patch-")
    assert not scratch.exists()
