"""`--out DIR` never deletes what it did not create; outputs follow the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from sim.engine.outdir import MARKER, OutputDirError, check_out_dir, output_dir, umask

ROOT = Path(__file__).resolve().parents[2]


def sim(*args: str, umask_: int | None = None) -> subprocess.CompletedProcess[str]:
    def pre() -> None:
        if umask_ is not None:
            os.umask(umask_)

    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=pre,
    )


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t") / "tiny.parquet"
    pl.read_parquet(ROOT / "traces" / "azure_code_2023.parquet").head(50).write_parquet(path)
    return path


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
    }


def test_a_foreign_non_empty_directory_is_refused_and_untouched(
    tmp_path: Path, tiny_trace: Path
) -> None:
    home = tmp_path / "home"
    (home / "src").mkdir(parents=True)
    (home / "notes.txt").write_text("precious\n")
    (home / "src" / "main.py").write_text("print(1)\n")
    before = snapshot(home)
    res = sim("replay", str(tiny_trace), "--out", str(home), "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr == (
        f"error: --out: {home}: directory is not empty and is not a previous costroute "
        f"output (no {MARKER} in it); choose a new or empty directory, nothing was changed\n"
    )
    assert snapshot(home) == before
    # Nothing was left beside it either (no temporary directory).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_file_is_refused(tmp_path: Path, tiny_trace: Path) -> None:
    target = tmp_path / "out"
    target.write_text("mine")
    res = sim("replay", str(tiny_trace), "--out", str(target))
    assert res.returncode == 2
    assert res.stderr == (
        f"error: --out: {target}: exists and is not a directory; choose a new directory\n"
    )
    assert target.read_text() == "mine"


def test_a_previous_output_is_replaced_as_a_whole(tmp_path: Path, tiny_trace: Path) -> None:
    out = tmp_path / "out"
    assert sim("replay", str(tiny_trace), "--out", str(out), "--json").returncode == 0
    assert (out / MARKER).is_file()
    (out / "stale.txt").write_text("from an older version")
    res = sim("replay", str(tiny_trace), "--out", str(out), "--json", "--seed", "3")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER,
        "completion_vs_cost.png",
        "latency_cdf.png",
        "outage_timeline.png",
        "spend_over_time.png",
        "summary.json",
        "tasks.parquet",
    ]
    assert '"seed": 3' in (out / "summary.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_directory_is_used_and_modes_follow_the_umask(
    tmp_path: Path, tiny_trace: Path
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    res = sim("replay", str(tiny_trace), "--out", str(out), "--json", umask_=0o027)
    assert res.returncode == 0, res.stderr
    assert (out / "summary.json").is_file() and (out / MARKER).is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # not mkdtemp's 0700
    for p in out.iterdir():  # parquet, JSON, PNGs and the marker alike
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p.name


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_output_dir_modes_follow_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        with output_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "out" / MARKER).stat().st_mode) == 0o666 & ~mask


def test_umask_reads_without_changing_it() -> None:
    old = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert umask() == 0o027
    finally:
        os.umask(old)


def test_library_helpers(tmp_path: Path) -> None:
    target = tmp_path / "res"
    with output_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".res.")
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "a.txt"]
    # A failure inside leaves the previous output and no temporary directory.
    with pytest.raises(RuntimeError), output_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    # A foreign directory that appears while a run is writing is not replaced either.
    late = tmp_path / "late"
    with pytest.raises(OutputDirError, match="is not a previous costroute output"):
        with output_dir(late) as tmp:
            late.mkdir()
            (late / "theirs.txt").write_text("x")
    assert [p.name for p in late.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late", "res"]
    # A symbolic link is refused (replacing it would not replace what it points to).
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputDirError, match="is a symbolic link"):
        check_out_dir(link)
