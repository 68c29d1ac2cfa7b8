"""Errors of the simulator's inputs (see :mod:`router.errors` for the whole tree)."""

from __future__ import annotations

from router.errors import InputError


class TraceError(InputError):
    """A trace file that is missing, empty, corrupt or violates the trace schema."""


class ScenarioError(InputError):
    """A scenario file that does not validate."""
