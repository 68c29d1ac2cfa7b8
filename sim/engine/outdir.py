"""Output directories that never delete anything they did not create.

A command with ``--out DIR`` writes into a fresh hidden sibling of ``DIR`` and
renames it into place when complete (so ``DIR`` is never half-written). Replacing
``DIR`` is allowed only when it is absent, empty, or a previous output of ours,
recognised by the marker file :data:`MARKER` written into every output. Anything
else (a home directory, a source tree, a file) is refused with an
:class:`OutputDirError` *before* any work is done, and left untouched.

The directory and the marker get the permissions the user's umask gives a new
directory or file (``tempfile.mkdtemp`` alone would make it 0700)::

    check_out_dir(target)                  # early: refuse before a long run
    with output_dir(target) as tmp:        # write files into tmp ...
        (tmp / "summary.json").write_text(...)
    # ... renamed to target here; on an exception tmp is removed, target untouched
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from router.errors import InputError

__all__ = [
    "MARKER",
    "OutputDirError",
    "check_out_dir",
    "new_tmp_dir",
    "output_dir",
    "replace_dir",
    "umask",
]

#: Written into every output directory; only a directory holding it may be replaced.
MARKER = ".costroute-output"

_MARKER_TEXT = (
    "This directory was written by costroute (sim / optimize). A later run with the\n"
    "same --out replaces it as a whole; delete this file to protect the directory.\n"
)


class OutputDirError(InputError):
    """An output directory that may not be written (one line, names the path)."""


def umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no read-only API elsewhere: set and restore at once
    os.umask(old)
    return old


def check_out_dir(path: str | os.PathLike[str], *, flag: str = "--out") -> Path:
    """``path`` if an output may be written there, else :class:`OutputDirError`.

    Allowed: a path that does not exist (its parent is created later), an empty
    directory, or a directory holding :data:`MARKER`. Refused: an existing file,
    a symlink, a non-empty directory without the marker. ``flag`` starts the
    message (the CLI option the user typed).
    """
    p = Path(path)
    where = f"{flag}: {p}" if flag else str(p)
    if p.is_symlink():
        raise OutputDirError(f"{where}: is a symbolic link; give the real directory")
    if not p.exists():
        return p
    if not p.is_dir():
        raise OutputDirError(f"{where}: exists and is not a directory; choose a new directory")
    try:
        entries = [e.name for e in os.scandir(p)]
    except OSError as exc:
        raise OutputDirError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if entries and MARKER not in entries:
        raise OutputDirError(
            f"{where}: directory is not empty and is not a previous costroute output "
            f"(no {MARKER} in it); choose a new or empty directory, nothing was changed"
        )
    return p


def new_tmp_dir(target: str | os.PathLike[str]) -> Path:
    """A hidden sibling of ``target`` to write an output into: umask permissions, the
    marker already in it. Pair it with :func:`replace_dir` (or use :func:`output_dir`)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise OutputDirError(f"{target}: cannot create: {exc.strerror or exc}") from None
    mask = umask()
    os.chmod(tmp, 0o777 & ~mask)
    marker = tmp / MARKER
    marker.write_text(_MARKER_TEXT, encoding="utf-8")
    os.chmod(marker, 0o666 & ~mask)
    return tmp


def replace_dir(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the finished ``tmp`` to ``target``, replacing a previous output of ours.

    ``target`` is checked again (:func:`check_out_dir`) right before: a foreign
    directory that appeared during the run is not replaced. The previous output
    is renamed aside to a fresh hidden name first, so ``target`` is never
    missing a file it had and no other path is ever deleted.
    """
    tmp, target = Path(tmp), Path(target)
    check_out_dir(target, flag="")
    if not target.exists():
        os.replace(tmp, target)
        return
    # A fresh empty directory to rename the old output onto (never an existing name).
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    try:
        os.replace(target, old)
    except OSError:
        old.rmdir()
        raise
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def output_dir(target: str | os.PathLike[str], *, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary directory; on a clean exit it replaces ``target``.

    ``target`` is checked first (:func:`check_out_dir`); on an exception the
    temporary directory is removed and ``target`` is left as it was.
    """
    target = check_out_dir(target, flag=flag)
    tmp = new_tmp_dir(target)
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
