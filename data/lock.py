"""An advisory lock so that only one writer holds a dataset at a time.

`DatasetLock(path)` takes ``fcntl.flock`` on ``<path>.lock`` (exclusive, non-blocking)
and writes the holder's PID inside. A second writer gets `DatasetLockedError` naming
that PID. The holder removes the file when it releases the lock; the kernel drops the
lock when the holder exits, even after ``kill -9``, and the ``.lock`` file left then is
harmless (a stale file holds no lock; the next writer takes it over).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from data.schema import DatasetError

try:  # POSIX; elsewhere the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DatasetLock", "DatasetLockedError", "lock_path"]


class DatasetLockedError(DatasetError):
    """Another process is writing the same dataset."""


def lock_path(path: str | os.PathLike) -> Path:
    """`<path>.lock`: the file the writer of `path` locks."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


class DatasetLock:
    """Exclusive advisory lock on `<path>.lock` for the life of one writer."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_file = lock_path(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DatasetLock:
        """Take the lock or raise `DatasetLockedError` naming the holder's PID."""
        if self._fd is not None:
            return self
        for _ in range(100):  # a holder may remove the file between our open and flock
            fd = self._try_lock()
            if fd is not None:
                break
        else:  # pragma: no cover - 100 races in a row
            raise DatasetLockedError(f"cannot take the lock {self.lock_file}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def _try_lock(self) -> int | None:
        """The locked descriptor of the current lock file, or None when it was replaced."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DatasetLockedError(
                f"{self.path} is being written by another process (PID {holder}); "
                f"wait for it to finish or stop it (lock file {self.lock_file})"
            ) from None
        try:
            same = os.stat(self.lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # we locked a file its holder had just removed: try the new one
            os.close(fd)
            return None
        return fd

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_file)  # still ours: removed before the lock goes
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a dropped writer frees its dataset, as a dead process does
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DatasetLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
