"""Suite-wide setup.

One OpenBLAS thread for the whole suite and every subprocess and notebook kernel it
starts (they inherit the environment): the calibration tests run thousands of small
L-BFGS-B fits, and OpenBLAS's thread pool makes each 40-70x slower on this 2-core
machine when other work is running (2.9 ms per fit with one thread vs 107-217 ms).
It only works if set before numpy is first imported, hence here, at collection's start.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "numpy" in sys.modules:  # a plugin imported numpy first: the setting came too late
    sys.stderr.write("tests/conftest.py: numpy was imported before OPENBLAS_NUM_THREADS\n")

import fcntl  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "realtime: drives the live router against a twin in wall-clock time; under "
        "pytest-xdist it runs while no other test does (a busy second core shows up "
        "as latency the provider never caused)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """Under pytest-xdist, every test holds a shared lock on one file per run and a
    ``realtime`` test an exclusive one, so a realtime test starts once the other
    worker's current test ends and the other worker waits until it is done. Serial
    runs take no lock.

    The lock spans the item's whole protocol -- setup, call and teardown -- because a
    module- or session-scoped fixture is set up inside the first test that needs it:
    a lock taken by a function-scoped fixture came after it, so a realtime module
    fixture (test_fidelity's recording) ran beside the other worker's tests."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return (yield)
    exclusive = item.get_closest_marker("realtime") is not None
    with open(Path(tempfile.gettempdir()) / f"costroute-tests-{run}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
