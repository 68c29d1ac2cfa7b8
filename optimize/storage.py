"""Where studies live: a journal file by default, or any SQLAlchemy database URL.

``None`` (the default) is a journal file ``./studies/<study>.journal``: an
append-only log that several processes on one machine share through a file
lock, and that survives a killed process with every finished trial intact.
A plain path is a journal file too. ``sqlite:///file.db`` and server URLs such
as ``postgresql://user:password@host:5432/db`` use Optuna's RDB storage, which
workers on several machines can share.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from pathlib import Path
from typing import Any

from optuna.storages.journal._file import BaseJournalFileLock

from router.errors import InputError

STUDIES_DIR = Path("studies")
_URL = re.compile(r"^[a-z][a-z0-9+]*://", re.IGNORECASE)


def resolve_storage(storage: str | None, study: str) -> str:
    """The storage string a study uses: a database URL, or a journal file's path."""
    if not study or not re.fullmatch(r"[A-Za-z0-9._-]+", study):
        raise InputError(
            f"--study: expected a name of letters, digits, '.', '_' or '-', got {study!r}"
        )
    if storage is None or storage == "":
        return str(STUDIES_DIR / f"{study}.journal")
    return storage


def is_url(storage: str) -> bool:
    return bool(_URL.match(storage))


def redact(storage: str) -> str:
    """The storage string with any password replaced by ``***`` (safe to print or record)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", storage)


class FlockLock(BaseJournalFileLock):
    """The journal's lock as an ``flock`` on a side file: released by the kernel when
    its holder dies.

    Optuna's own file locks are files that exist while held, so a worker killed
    while holding one leaves it behind, and the next run waits out a grace
    period (or, with a relative journal path, spins forever on a dangling
    symlink). A study must resume at once after a SIGKILL, hence this lock.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._thread_lock = threading.Lock()

    def acquire(self) -> bool:
        self._thread_lock.acquire()
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._thread_lock.release()


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; we ship
    psycopg2 (``psycopg2-binary``), so name it unless psycopg 3 is present.
    """
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def open_storage(storage: str) -> Any:
    """An Optuna storage object for a resolved storage string (one per process)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if is_url(storage):
        if storage.startswith("redis"):
            raise InputError(f"--storage: {redact(storage)}: Redis journals are not supported")
        url = _with_driver(storage)
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except ImportError as exc:
            raise InputError(
                f"--storage: {redact(storage)}: database driver missing "
                f"({exc.name or str(exc).splitlines()[0]}); for PostgreSQL install psycopg2-binary"
            ) from None
        except Exception as exc:  # SQLAlchemy raises many types; the message is what matters
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"--storage: {redact(storage)}: cannot open: {first}") from None
    path = Path(storage)
    if path.exists() and path.is_dir():
        raise InputError(f"--storage: {path}: is a directory; expected a journal file or a URL")
    path.parent.mkdir(parents=True, exist_ok=True)
    absolute = str(path.resolve())
    return JournalStorage(JournalFileBackend(absolute, lock_obj=FlockLock(absolute + ".flock")))
