"""The compiled build: which modules mypyc compiles, and whether this process uses them.

The hot path of a replay (the routing policy, its ledger, breakers and health, the
simulation driver, the world's draws and the result sink) is plain typed Python that
``setup.py`` also compiles with mypyc when the project is installed (``pip install -e .``
or ``pip install .``): each module then exists twice, ``policy.py`` and
``policy.cpython-311-…so``, and Python's import system prefers the extension. The two
are the same program: a replay gives byte-identical results with either (a test runs
both).

Whether the compiled modules are used is decided once per process, before the first of
them is imported (``router`` and ``sim`` call :func:`install` on import):

- ``COSTROUTE_PURE=1`` in the environment: the pure-Python modules, always;
- not every module has its extension (the build was skipped or failed: a machine
  without a C compiler, ``COSTROUTE_PURE_BUILD=1``): the pure-Python modules, all of
  them (compiled modules call each other's native classes directly, so a mix cannot
  run);
- a module's source differs from the one it was compiled from (an edited checkout of
  an editable install): the pure-Python modules, with a warning that says which file
  changed and how to rebuild, so an edit is never silently shadowed by an old build;
- else the compiled ones.

Nothing here imports more than the standard library, so ``setup.py`` can read
:data:`MODULES` from this file alone.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

#: The modules the compiled build compiles (one mypyc group: they call each other's
#: classes natively). Every other module stays pure Python; so do :mod:`router.task`
#: (a compiled dataclass would reject a malformed task with a TypeError before
#: :func:`router.validation.check_spec` can say what is wrong with it) and
#: :mod:`router.outcome` (its enums' docstrings are the reference's text).
MODULES: tuple[str, ...] = (
    "router.breaker",
    "router.health",
    "router.ledger",
    "router.policy",
    "router.result",
    "router.scoring",
    "sim.engine.driver",
    "sim.engine.results",
    "sim.world.providers",
    "sim.world.site",
)
#: The group's shared library (``router/_native__mypyc.cpython-…so``).
GROUP = "router._native"
#: Written by ``setup.py`` beside this file once every extension is built: the SHA-256
#: of each module's source as compiled.
MANIFEST = "_native.json"
#: The environment variable that forces the pure-Python modules.
PURE_ENV = "COSTROUTE_PURE"

_ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str, root: Path = _ROOT) -> Path:
    """The ``.py`` file of ``module`` under the project root ``root``."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_digest(path: Path) -> str:
    """The SHA-256 (hex) of a source file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extension_path(module: str, root: Path = _ROOT) -> Path | None:
    """The compiled extension of ``module`` for this interpreter, if there is one."""
    stem = source_path(module, root).with_suffix("")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def digests(root: Path = _ROOT, modules: Sequence[str] = MODULES) -> dict[str, str]:
    """The digest of every module's source under ``root``."""
    return {m: source_digest(source_path(m, root)) for m in modules}


def write_manifest(path: Path, recorded: Mapping[str, str]) -> None:
    """Write the digests of the compiled sources to ``path`` (whole, or not at all)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(recorded), indent=1, sort_keys=True) + "\n", "utf-8")
    tmp.replace(path)


def check(root: Path = _ROOT, modules: Sequence[str] = MODULES) -> tuple[bool, str]:
    """``(usable, why)``: whether the compiled modules under ``root`` can be used, and
    why not (``""`` when they can; ``"not compiled"`` when none is)."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False, f"{PURE_ENV} is set"
    present = [m for m in modules if extension_path(m, root) is not None]
    if not present:
        return False, "not compiled"
    if len(present) < len(modules):
        missing = ", ".join(m for m in modules if m not in present)
        return False, f"the compiled build is incomplete (no extension for {missing})"
    try:
        digests = json.loads((root / "router" / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, f"router/{MANIFEST} (the digests of the compiled sources) is unreadable"
    for m in modules:
        if digests.get(m) != source_digest(source_path(m, root)):
            rel = source_path(m, root).relative_to(root)
            return False, f"{rel} changed since it was compiled"
    return True, ""


class _PureFinder:
    """Finds :data:`MODULES` as their ``.py`` files, ahead of their extensions."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules or not path:
            return None
        filename = os.path.join(path[0], fullname.rpartition(".")[2] + ".py")
        return importlib.util.spec_from_file_location(fullname, filename)


#: The decision of this process: ``(compiled, why not)``; set by :func:`install`.
_decided: tuple[bool, str] | None = None


def install() -> None:
    """Decide, once per process, whether the compiled modules are used (see the module
    docstring); when they are not, make sure the pure-Python ones are imported."""
    global _decided
    if _decided is not None:
        return
    usable, why = check()
    _decided = (usable, why)
    if usable:
        return
    # router/__init__ calls this first, so none of MODULES is imported yet.
    sys.meta_path.insert(0, _PureFinder(MODULES))
    if why != "not compiled" and not why.startswith(PURE_ENV):
        warnings.warn(
            f"costroute: {why}; running the pure-Python modules (same results, slower). "
            f"Rebuild the compiled ones with `pip install -e .`, or set {PURE_ENV}=1 "
            f"to silence this.",
            stacklevel=2,
        )


def compiled() -> bool:
    """Whether this process runs the compiled modules."""
    install()
    assert _decided is not None
    return _decided[0]


def build() -> str:
    """``"compiled"`` or ``"pure (why)"``: what this process runs, for reports."""
    install()
    assert _decided is not None
    return "compiled" if _decided[0] else f"pure ({_decided[1]})"
