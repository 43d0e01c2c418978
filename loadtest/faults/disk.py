"""A size-limited filesystem under PostgreSQL's cluster, and a ballast file to fill it.

For the full-disk fault the stack mounts a tmpfs of a fixed size on the server's data directory
(``<data_dir>/postgres``: ``pgdata`` with its ``base`` and ``pg_wal``, and the sibling directory
``initdb`` renames into it) before the server is created. The fault fills what is left with a
ballast file, so the server's next write that needs a new block gets ``ENOSPC``, and deleting
the ballast frees the disk again. The server's own log files are symlinks to a directory beside
the mount: what PostgreSQL says while its disk is full must not be lost to that full disk.

Mounting needs root (``CAP_SYS_ADMIN``); when it is refused, :class:`MountRefused` says why and
the matrix reports the fault as skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_BALLAST = "ballast"
_CHUNKS = (1 << 20, 4096)  # fill by MiB, then the last pages
_UNMOUNT_DEADLINE_S = 10.0
_POLL_S = 0.2
_COMMAND_TIMEOUT_S = 30


class MountRefused(RuntimeError):
    """The size-limited filesystem could not be mounted; the message is the reason."""


def _command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=_COMMAND_TIMEOUT_S
    )


@dataclass(frozen=True, slots=True)
class SmallDisk:
    """A tmpfs of ``size_mb`` MiB on ``mountpoint``."""

    mountpoint: Path
    size_mb: int

    @property
    def ballast(self) -> Path:
        return self.mountpoint / _BALLAST

    def mount(self) -> None:
        if os.geteuid() != 0:
            raise MountRefused("not root: mounting a size-limited tmpfs needs CAP_SYS_ADMIN")
        if shutil.which("mount") is None:
            raise MountRefused("no mount command")
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        options = f"size={self.size_mb}m,mode=0755"
        done = _command(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.mountpoint)])
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            detail = said[0] if said else f"exit {done.returncode}"  # the rest: "see dmesg"
            raise MountRefused(f"mount -t tmpfs refused: {detail}")

    def unmount(self, say: Callable[[str], None]) -> None:
        """Unmount, waiting up to 10 s for the last user to let go, then detach it lazily."""
        deadline = time.monotonic() + _UNMOUNT_DEADLINE_S
        detail = ""
        while os.path.ismount(self.mountpoint):
            done = _command(["umount", str(self.mountpoint)])
            if done.returncode == 0:
                return
            detail = done.stderr.strip()
            if time.monotonic() >= deadline:
                say(f"umount {self.mountpoint} failed ({detail}); detaching it lazily")
                _command(["umount", "--lazy", str(self.mountpoint)])
                return
            time.sleep(_POLL_S)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.mountpoint)
        return stats.f_bavail * stats.f_frsize

    def fill(self) -> int:
        """Write the ballast until the filesystem is full (``ENOSPC``); the bytes written."""
        written = 0
        descriptor = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in _CHUNKS:
                zeros = bytes(size)
                while True:
                    try:
                        written += os.write(descriptor, zeros)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(descriptor)
        return written

    def empty(self) -> None:
        """Delete the ballast: the space is free again at once."""
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()


def keep_logs_off(disk: SmallDisk, names: list[str], elsewhere: Path) -> None:
    """Make each of ``names`` on the disk a symlink to a file of that name in ``elsewhere``
    (which the server's account may traverse: whoever opens a log there gives it its owner)."""
    elsewhere.mkdir(parents=True, exist_ok=True)
    elsewhere.chmod(0o755)
    for name in names:
        target = elsewhere / name
        target.touch()
        (disk.mountpoint / name).symlink_to(target)
