"""One writer per run directory: an OS-level lock, and the cleaning of what killed writers left behind.

The lock is ``fcntl.flock`` on ``RUN_DIR/.lock``: the kernel drops it when its process dies, however it
dies, so a killed run never leaves a stale lock, and a second ``bench run`` on the same folder is refused at
once with the holder's PID (written into the lock file once it is held).

A torchrun job (``bench.distributed``) is one writer: its rank 0 holds ``.lock`` for the whole job, and every
other rank holds a shared lock on ``.lock.ranks``. Whoever takes ``.lock`` also checks that no process holds
``.lock.ranks``, so a second job is refused even in the moment where a job's rank 0 has died and its other ranks
are still writing.
"""

from __future__ import annotations

import errno
import os
import platform
from pathlib import Path

LOCK_NAME = ".lock"
RANKS_LOCK_NAME = ".lock.ranks"


class RunDirBusy(ValueError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive, non-blocking lock on a run directory (held until :meth:`release` or process exit)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunDirBusy` naming the holder's PID; never waits."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise RunDirBusy(f"run directory {self.path.parent} is in use by another bench run "
                             f"({self.holder()}); wait for it to finish or choose another --run-dir") from None
        try:
            check_no_ranks(self.path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.describe()

    def describe(self, note: str = "") -> None:
        """Write 'PID HOST [NOTE]' into the held lock file (``note``: e.g. ``rank 0 of 4``), for :meth:`holder`."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()} {platform.node()}{' (' + note + ')' if note else ''}\n".encode(), 0)

    def holder(self) -> str:
        """'PID n on HOST' as written by the holder, or 'PID unknown' if it has not written it yet."""
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
        except OSError:
            pid, host = "", ""
        return f"PID {pid} on {host}" if pid else "PID unknown"

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None


def check_no_ranks(run_dir: Path) -> None:
    """Raise :class:`RunDirBusy` if a rank of a torchrun job still holds ``.lock.ranks``; else remove the file.

    Called with ``.lock`` held: no job can start taking ``.lock.ranks`` meanwhile, so the removal is safe.
    """
    import fcntl

    path = run_dir / RANKS_LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)  # read-write: NFS emulates flock with POSIX locks
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise RunDirBusy(f"run directory {run_dir} is in use by ranks of a torchrun bench run whose rank 0 has "
                         "ended; wait for them to finish or choose another --run-dir") from None
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


class RankLock:
    """The shared lock that each rank of a torchrun job but rank 0 holds on ``.lock.ranks`` (see the module)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RANKS_LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the shared lock; call only while the job's rank 0 holds ``.lock`` (then it never waits)."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            raise RunDirBusy(f"{self.path}: cannot take the shared lock of a torchrun job's ranks ({err})") from None
        self._fd = fd

    def release(self) -> None:
        """Drop the shared lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_temporary(name: str) -> bool:
    """Whether a file name is one of this project's temporary files (``.NAME.tmp*`` / ``.NAME.*.tmp``)."""
    return name.startswith(".") and name != LOCK_NAME and (".tmp" in name)


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left anywhere under ``run_dir``; returns them.

    Call only while holding the run directory's lock: then no live writer owns any of them.
    """
    removed = []
    for path in Path(run_dir).rglob(".*"):
        if path.is_file() and is_temporary(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
