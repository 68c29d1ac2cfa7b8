"""Lazy re-exports (PEP 562) for the ``router`` and ``sim`` packages.

A package's public names are listed once, name -> defining module; a name's module
is imported the first time the name is read. ``import router``, ``import sim`` and
``sim --help`` thus cost no pydantic model building, SimPy, SciPy, polars or pyarrow
import until something needs them, while ``from sim import replay`` keeps working.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` re-exporting ``exports``
    (public name -> module that defines it)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
