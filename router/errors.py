"""The exception tree of the toolkit.

::

    CostRouteError
    ├── InputError (also a ValueError): bad input; ``str(exc)`` is ONE line that names
    │   │   the file, row or field and what was expected. The CLIs print it and exit 2.
    │   ├── ConfigError: a router config that does not validate
    │   └── TraceError / ScenarioError (in sim/): a bad trace or scenario file
    └── RoutingError: a live task that no candidate could complete; carries every
        candidate's skip or failure reason.

Library code raises these; only the CLI layer turns them into exit codes.
"""

from __future__ import annotations


class CostRouteError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class InputError(CostRouteError, ValueError):
    """Bad input. The message is a single line naming where and what was expected."""

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line message would break the CLI contract.
        super().__init__(" ".join(str(message).split()))


class ConfigError(InputError):
    """A router config that does not validate."""
