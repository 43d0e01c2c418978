"""The full-disk fault's filesystem: a size-limited tmpfs that a ballast fills to ``ENOSPC`` and
that is free again once the ballast is deleted; logs kept off it stay writable while it is full.

The fault itself runs in ``make faults`` (it needs a stack of its own and about two minutes);
this checks its mechanics in under a second. Mounting needs root: elsewhere these tests are
skipped with the reason the fault would be.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.faults.disk import MountRefused, SmallDisk, keep_logs_off

pytestmark = pytest.mark.integration

SIZE_MB = 8


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="meterflow-faults-disk-") as root:
        yield Path(root)


@pytest.fixture
def disk(scratch: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(scratch / "postgres", SIZE_MB)
    try:
        small.mount()
    except MountRefused as exc:
        pytest.skip(f"the fault would be skipped here: {exc}")
    try:
        yield small
    finally:
        small.unmount(print)


@pytest.mark.timeout(30)
def test_the_ballast_fills_the_disk_and_deleting_it_frees_it(
    disk: SmallDisk, scratch: Path
) -> None:
    assert os.path.ismount(disk.mountpoint)
    keep_logs_off(disk, ["postgres.log"], scratch / "logs")
    (disk.mountpoint / "base").write_bytes(b"x" * 100_000)
    written = disk.fill()
    assert SIZE_MB * (1 << 20) - 200_000 < written <= SIZE_MB * (1 << 20)
    assert disk.free_bytes() == 0
    with pytest.raises(OSError, match="No space left on device") as full:
        (disk.mountpoint / "wal").write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC
    with (disk.mountpoint / "postgres.log").open("a") as log:  # the symlink, off the disk
        log.write("PANIC:  could not write\n")
    assert (scratch / "logs" / "postgres.log").read_text() == "PANIC:  could not write\n"
    disk.empty()
    assert disk.free_bytes() > SIZE_MB * (1 << 20) - 200_000
    (disk.mountpoint / "wal").write_bytes(b"x" * 8192)


def test_unmount_leaves_the_directory_empty_and_is_idempotent(disk: SmallDisk) -> None:
    (disk.mountpoint / "file").write_bytes(b"x")
    disk.unmount(print)
    assert not os.path.ismount(disk.mountpoint)
    assert list(disk.mountpoint.iterdir()) == []
    disk.unmount(print)
