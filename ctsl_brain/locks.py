"""One run per folder: a lock file that a run holds while it writes there.

The lock is the kernel's (``flock``), so it ends with its process however that
ends; the file also records who holds it (PID, host, start, command), for the
message a second run gets.
"""

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time

from .dataio import UserError, process_running

__all__ = ["FolderInUseError", "FolderLock", "RUN_LOCK", "PREPARE_LOCK"]

logger = logging.getLogger(__name__)

# The lock of a run's output folder, and of a folder being prepared.
RUN_LOCK = "run.lock"
PREPARE_LOCK = "prepare.lock"
# Errors of a filesystem without file locks.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderInUseError(UserError):
    """Another live run holds the folder."""


class FolderLock:
    """A lock on ``folder``, held from :meth:`acquire` to :meth:`release`.

    On a filesystem without file locks, the holder is told from the PID the
    file records: on this host a dead PID's lock is taken over; on another
    host it cannot be checked, and the run stops.

    Arguments
    ---------
    folder : str
        The folder (created if missing).
    name : str
        The lock file's name in it (:data:`RUN_LOCK`, :data:`PREPARE_LOCK`).
    what : str
        What the holder does there, for the messages (``"runs in"``).
    wait : bool
        Whether :meth:`acquire` waits for a live holder instead of raising.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> with FolderLock(folder):
    ...     FolderLock(folder).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctsl_brain.locks.FolderInUseError: ...
    """

    def __init__(self, folder, name=RUN_LOCK, what="runs in", wait=False):
        self.folder = str(folder)
        self.path = os.path.join(self.folder, name)
        self.what = what
        self.wait = wait
        self._fd = None

    def __enter__(self):
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        """Takes the lock, or raises :class:`FolderInUseError` (or waits, with ``wait``).

        Returns
        -------
        FolderLock
            Itself.
        """
        os.makedirs(self.folder, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            held = self._lock(self.wait)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        if held is not None:
            os.close(self._fd)
            self._fd = None
            raise FolderInUseError(self._in_use_message(*held))
        return self

    def release(self):
        """Empties the file and lets the lock go (the file stays: removing it would race)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except (
            OSError
        ):  # a full disk or a read-only remount: the lock goes anyway
            pass
        os.close(self._fd)
        self._fd = None

    def _lock(self, wait):
        """Locks; returns None, or (holder record, reason) when another holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if not wait:
                return holder, None
            logger.info(
                "waiting for %s, which %s %s",
                _who(holder),
                self.what,
                self.folder,
            )
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            held = self._by_record(wait)
            if held is not None:
                return held
        previous = self._holder()
        if previous.get("pid") not in (None, os.getpid()):
            logger.info(
                "%s: taking over the lock of %s, which has ended",
                self.folder,
                _who(previous),
            )
        self._write_record()
        return None

    def _by_record(self, wait):
        """Without file locks: None if the recorded holder is gone, else why not."""
        while True:
            holder = self._holder()
            if not holder.get("pid") or holder.get("pid") == os.getpid():
                return None
            if holder.get("host") != socket.gethostname():
                return holder, (
                    "this filesystem has no file locks, so whether it still runs cannot be "
                    f"checked from here: if it has ended, delete {self.path} and run again"
                )
            if not process_running(holder["pid"]):
                return None
            if not wait:
                return holder, None
            time.sleep(1)

    def _holder(self):
        """The record in the file ({} when empty or unreadable)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self):
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(self._fd)

    def _in_use_message(self, holder, reason):
        message = f"another process {self.what} {self.folder}: {_who(holder)}"
        if holder.get("command"):
            message += f" ({holder['command']})"
        if reason:
            return f"{message}; {reason}"
        pid = holder.get("pid", "<pid>")
        return (
            f"{message}. Wait for it to end, or stop it (kill {pid}) and run the same command "
            "again to resume; to run both, give this one another output folder"
        )


def _who(holder):
    """``PID 123 on host h, started 2026-12-06T05:10:00``, from a lock's record."""
    if not holder.get("pid"):
        return "a process that has not yet said who it is"
    return (
        f"PID {holder['pid']} on host {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}"
    )
