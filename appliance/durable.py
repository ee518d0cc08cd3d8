"""Files that survive a power cut: written aside, fsynced, renamed into place, folder fsynced.

A Pi in a garden loses power at any moment; an SD card then keeps what reached it. Writing in
place can leave an empty or half file; this leaves the old file or the new one, whole.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
"""Temporary files start with this; start-up may remove any it finds (a write cut short)."""


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the directory entry is data too)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``; on any failure the temporary file is removed and the old file stays."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_leftovers(folder: Path) -> int:
    """Remove what writes cut short by a power cut or a kill left in ``folder``; how many were removed.

    Called at start-up for every folder ``durable_write`` writes into, before anything writes there:
    a temporary file is never anyone's data, only the old file or the new one is.
    """
    removed = 0
    for leftover in folder.glob(TEMP_PREFIX + "*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d file(s) left by a write cut short in %s", removed, folder)
    return removed
