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

import sys
from typing import Any, NoReturn


class CostRouteError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class InputError(CostRouteError, ValueError):
    """Bad input. The message is a single line naming where and what was expected."""

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line message would break the CLI contract.
        super().__init__(" ".join(str(message).split()))


class ConfigError(InputError):
    """A router config that does not validate."""


def fail_cli(message: str) -> NoReturn:
    """End a CLI command on bad input: one line on stderr, exit code 2, no traceback."""
    import typer

    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    raise typer.Exit(2)


def run_cli(app: Any) -> None:
    """Run a Typer app so that usage errors, like bad input, are one line and exit code 2.

    Typer's default prints a boxed, multi-line message (or a traceback for a value
    its converters reject); our CLIs promise one line that names the option.
    """
    import typer

    # Typer vendors its own click; catch its ClickException, whatever module holds it.
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        rc = app(standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("error: aborted\n")
        raise SystemExit(130) from None
    except click_error as exc:
        message = " ".join(exc.format_message().split())
        if message:  # empty for "no arguments: show help", which click already printed
            sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    # Without standalone mode a command's Exit comes back as a return value.
    if isinstance(rc, int) and rc:
        raise SystemExit(rc)
