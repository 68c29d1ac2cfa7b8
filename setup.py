"""The compiled build: mypyc compiles the replay's hot modules when the project is built.

Metadata and dependencies are in pyproject.toml; this file only adds the extension
modules. Which modules, and how a process decides to use them, is
:mod:`router.native` (read here as a file: the package is not importable yet).

- ``pip install -e .`` / ``pip install .``: the modules of ``router.native.MODULES``
  are compiled (about 2 minutes on 2 cores) and used; a build that cannot compile (no
  C compiler) installs the pure-Python modules only, which give the same results.
- ``COSTROUTE_PURE_BUILD=1``: no compilation at all.

The digests of the sources as compiled (``router/_native.json``, beside the built
extensions) are written only once every extension has been built: a failed build
leaves none, so extensions left over from an earlier build are never taken for this
one's (:func:`router.native.check` then runs the Python sources).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
NATIVE = runpy.run_path(str(HERE / "router" / "native.py"))


def extensions() -> tuple[list[Any], dict[str, str]]:
    """The extensions to build, and the digest of each compiled module's source."""
    if os.environ.get("COSTROUTE_PURE_BUILD", "") not in ("", "0"):
        return [], {}
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("costroute: mypyc is not installed; building pure Python only", file=sys.stderr)
        return [], {}
    modules = NATIVE["MODULES"]
    sources = [NATIVE["source_path"](m, HERE) for m in modules]
    # The digests of the very bytes mypyc reads next.
    digests = {m: NATIVE["source_digest"](path) for m, path in zip(modules, sources, strict=True)}
    exts = mypycify(
        # Third-party packages are not in the isolated build environment: their types are
        # Any to mypyc (values from them are checked where our annotations say so).
        [
            "--ignore-missing-imports",
            "--follow-imports=silent",
            *(str(p.relative_to(HERE)) for p in sources),
        ],
        opt_level="3",
        group_name=NATIVE["GROUP"],
    )
    for ext in exts:
        # A machine that cannot compile installs the pure-Python modules.
        ext.optional = True
    return exts, digests


EXTENSIONS, DIGESTS = extensions()


class BuildNative(build_ext):
    """``build_ext`` that records the compiled sources' digests only after every
    extension was built."""

    def run(self) -> None:
        manifest = None
        if self.extensions:
            target = Path(self.get_ext_fullpath(NATIVE["MODULES"][0]))
            manifest = target.parent / NATIVE["MANIFEST"]
            manifest.unlink(missing_ok=True)
        self._built: set[str] = set()
        super().run()
        if manifest is None:
            return
        missing = [e.name for e in self.extensions if e.name not in self._built]
        if missing:
            print(
                f"costroute: not compiled ({', '.join(missing)}); the Python sources will run",
                file=sys.stderr,
            )
            return
        NATIVE["write_manifest"](manifest, DIGESTS)

    def build_extension(self, ext: Any) -> None:
        super().build_extension(ext)  # raises when it fails (optional: caught by run)
        self._built.add(ext.name)


setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildNative})
