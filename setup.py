"""The compiled build: mypyc compiles the replay's hot modules when the project is built.

Metadata and dependencies are in pyproject.toml; this file only adds the extension
modules. Which modules, and how a process decides to use them, is
:mod:`router.native` (read here as a file: the package is not importable yet).

- ``pip install -e .`` / ``pip install .``: the modules of ``router.native.MODULES``
  are compiled (about 2 minutes on 2 cores) and used; a build that cannot compile (no
  C compiler) installs the pure-Python modules only, which give the same results.
- ``COSTROUTE_PURE_BUILD=1``: no compilation at all.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def extensions() -> list:
    if os.environ.get("COSTROUTE_PURE_BUILD", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("costroute: mypyc is not installed; building pure Python only", file=sys.stderr)
        return []
    native = runpy.run_path(str(HERE / "router" / "native.py"))
    native["write_manifest"](HERE)
    paths = [str(native["source_path"](m, HERE).relative_to(HERE)) for m in native["MODULES"]]
    exts = mypycify(
        # Third-party packages are not in the isolated build environment: their types are
        # Any to mypyc (values from them are checked where our annotations say so).
        ["--ignore-missing-imports", "--follow-imports=silent", *paths],
        opt_level="3",
        group_name=native["GROUP"],
    )
    for ext in exts:
        # A machine that cannot compile installs the pure-Python modules (router.native
        # uses compiled modules only when every one of them was built).
        ext.optional = True
    return exts


setup(ext_modules=extensions())
