"""The compiled build (router.native, setup.py): when it is used, and that it changes
nothing but speed."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from router import native
from sim.traces.tasks import read_trace, write_trace

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
MODULES = ("router.policy", "sim.engine.driver")


def _tree(root: Path, *, compiled: tuple[str, ...] = MODULES) -> None:
    """A project tree with MODULES' sources, extensions for ``compiled``, a manifest."""
    for m in MODULES:
        src = native.source_path(m, root)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {m}\n", encoding="utf-8")
    for m in compiled:
        src = native.source_path(m, root)
        src.with_name(src.stem + SUFFIX).write_bytes(b"\x7fELF")
    native.write_manifest(root / "router" / native.MANIFEST, native.digests(root, MODULES))


def test_a_complete_fresh_build_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    _tree(tmp_path)
    digests = json.loads((tmp_path / "router" / native.MANIFEST).read_text(encoding="utf-8"))
    assert sorted(digests) == sorted(MODULES)
    assert native.check(tmp_path, MODULES) == (True, "")
    monkeypatch.setenv(native.PURE_ENV, "0")  # 0 is "not set"
    assert native.check(tmp_path, MODULES) == (True, "")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("none", "not compiled"),
        ("partial", "the compiled build is incomplete (no extension for sim.engine.driver)"),
        ("edited", "sim/engine/driver.py changed since it was compiled"),
        ("no manifest", "router/_native.json (the digests of the compiled sources) is unreadable"),
        ("env", "COSTROUTE_PURE is set"),
    ],
)
def test_the_pure_modules_are_used_when_the_build_cannot_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, expected: str
) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    _tree(tmp_path, compiled={"none": (), "partial": MODULES[:1]}.get(case, MODULES))
    if case == "edited":
        native.source_path("sim.engine.driver", tmp_path).write_text("# edited\n", "utf-8")
    elif case == "no manifest":
        (tmp_path / "router" / native.MANIFEST).unlink()
    elif case == "env":
        monkeypatch.setenv(native.PURE_ENV, "1")
    assert native.check(tmp_path, MODULES) == (False, expected)


def _probe(env: dict[str, str]) -> list[str]:
    code = (
        "import router.native as n, router.policy as p, sim.engine.driver as d;"
        "print(n.build()); print(p.__file__); print(d.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


def test_costroute_pure_imports_the_python_sources() -> None:
    env = {**os.environ, native.PURE_ENV: "1"}
    build, policy, driver = _probe(env)
    assert build == "pure (COSTROUTE_PURE is set)"
    assert policy == str(ROOT / "router" / "policy.py")
    assert driver == str(ROOT / "sim" / "engine" / "driver.py")


needs_compiled = pytest.mark.skipif(
    not native.compiled(),
    reason=f"the compiled build is not in use here: {native.build()}",
)


@needs_compiled
def test_the_compiled_modules_are_imported_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    build, policy, driver = _probe(env)
    assert build == "compiled"
    assert policy.endswith(SUFFIX) and driver.endswith(SUFFIX)


@needs_compiled
def test_compiled_and_pure_replays_write_the_same_bytes(tmp_path: Path) -> None:
    # Slices of both shipped traces; two replications; what `sim replay --out` writes
    # (without the figures).
    paths = []
    for name in ("azure_code_2023", "synthetic_2d"):
        path = tmp_path / f"{name}.parquet"
        write_trace(read_trace(ROOT / "traces" / f"{name}.parquet").head(3000), path)
        paths.append(str(path))
    outs = {}
    for build in ("compiled", "pure"):
        env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
        if build == "pure":
            env[native.PURE_ENV] = "1"
        out = tmp_path / build
        code = (
            "import sys, router.native as n; from sim.engine.replays import replay;"
            f"replay({paths!r}, seed=11, replications=2, out={str(out)!r}, figures=False);"
            "print(n.build())"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
            timeout=300, check=True,
        )  # fmt: skip
        assert done.stdout.split()[0] == build
        outs[build] = out
    for name in ("tasks.parquet", "summary.json"):
        assert (outs["compiled"] / name).read_bytes() == (outs["pure"] / name).read_bytes()
