"""A real filesystem that can stall on purpose: a FUSE passthrough of a folder whose every call waits
while ``flowing`` is clear, as the calls on a NAS share mounted ``hard`` wait for a server that
stopped answering. The kernel's FUSE driver and libfuse (fusepy) do the mounting; the test holds and
releases the calls. Root only (it mounts)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fuse


class StallingFolder(fuse.Operations):  # type: ignore[misc]
    """Every call goes to ``backing`` once ``flowing`` is set."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.flowing = threading.Event()
        self.flowing.set()
        self.held = 0  # calls that waited

    def _path(self, path: str) -> str:
        return str(self.backing / path.lstrip("/"))

    def _wait(self) -> None:
        if not self.flowing.is_set():
            self.held += 1
            self.flowing.wait()

    def __call__(self, op: str, *args: Any) -> Any:
        self._wait()
        try:
            return super().__call__(op, *args)
        except OSError as exc:
            raise fuse.FuseOSError(exc.errno or errno.EIO) from None

    # --- a passthrough ---------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._path(path))
        return {key: getattr(st, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                  "st_nlink", "st_size", "st_uid")}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._path(path))]

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._path(path))
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                  "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._path(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._path(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._path(path))

    def rename(self, old: str, new: str) -> None:
        os.rename(self._path(old), self._path(new))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._path(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._path(path), uid, gid)

    def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
        os.utime(self._path(path), times)

    def open(self, path: str, flags: int) -> int:
        return os.open(self._path(path), flags)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        os.truncate(self._path(path), length)

    def flush(self, path: str, fh: int) -> None:
        return None

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        os.fsync(fh)

    def release(self, path: str, fh: int) -> None:
        os.close(fh)


class StallingMount:
    """The filesystem served by a child process (a FUSE server must not share a process with its
    clients: a call it holds would hold the server too); ``stall()`` and ``flow()`` steer it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    def _say(self, command: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._proc.stdout.readline().strip()

    def stall(self) -> None:
        assert self._say("stall") == "stalled"

    def flow(self) -> None:
        assert self._say("flow") == "flowing"

    def held(self) -> int:
        """How many calls have waited so far."""
        return int(self._say("held"))


@contextmanager
def stalling_mount(backing: Path, mountpoint: Path) -> Iterator[StallingMount]:
    """``mountpoint`` shows ``backing`` through a ``StallingFolder`` until the block ends."""
    proc = subprocess.Popen([sys.executable, __file__, str(backing), str(mountpoint)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "mounted":
            raise RuntimeError(f"the FUSE mount at {mountpoint} did not come up")
        yield StallingMount(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the server flows again and unmounts
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _serve(backing: Path, mountpoint: Path) -> None:
    """The child: serve the mount; commands on stdin (stall, flow, held), one answer line each."""
    folder = StallingFolder(backing)

    def control() -> None:
        for _ in range(200):  # the mount comes up in the main thread
            if os.path.ismount(mountpoint):
                break
            threading.Event().wait(0.05)
        print("mounted" if os.path.ismount(mountpoint) else "failed", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stall":
                folder.flowing.clear()
                print("stalled", flush=True)
            elif command == "flow":
                folder.flowing.set()
                print("flowing", flush=True)
            elif command == "held":
                print(folder.held, flush=True)
        folder.flowing.set()  # stdin closed: the test is over
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)

    threading.Thread(target=control, daemon=True).start()
    fuse.FUSE(folder, str(mountpoint), foreground=True, nothreads=False, default_permissions=True)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]))
