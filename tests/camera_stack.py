"""The real Pi camera stack without a Pi: picamera2 and libcamera in a Debian 13 root, on libcamera's
software ``virtual`` camera.

Debian 13 (trixie) ships libcamera 0.4 with its Python bindings and the ``virtual`` pipeline handler;
picamera2 comes from PyPI at a pinned release, as Raspberry Pi OS's own package follows its releases.
The root is built once per machine (debootstrap, apt, pip: a few minutes) and cached as a tarball,
like the deploy tests' Debian 12 root; each test session unpacks it, copies the appliance's current
code in, and runs everything inside it with ``chroot`` (same network, so the tests reach its server
on loopback; same process table, so ``/proc`` measures it).

What this machine lacks and a Pi has is stood in for by test-only shims under ``tests/camera_stack/``,
built or copied in here and never installed with the appliance:

- ``fake_dmabuf.c``: an ``LD_PRELOAD`` library that provides ``/dev/dma_heap/*`` and ``/dev/udmabuf``
  with memfds (a VM kernel has neither);
- ``site/sitecustomize.py``: the ``Raw`` stream role the virtual camera lacks, and libcamera's own
  buffer allocator, whose buffers have the planes the virtual camera writes;
- ``site/pykms.py``: kms++'s display bindings, an apt package only on Raspberry Pi OS, for a preview
  the appliance never opens.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.debian_root import CACHE, apt_mirror, prepare_network

ROOT = Path(__file__).resolve().parent.parent
SHIMS = ROOT / "tests" / "camera_stack"

PICAMERA2 = "picamera2==0.3.38"
"""The picamera2 release the tests run: the newest when this was written (Raspberry Pi OS follows these
releases in its python3-picamera2). Its Python dependencies that Debian lacks are pinned below."""
PIP_EXTRAS = ["simplejpeg==1.9.0", "pidng==4.0.9", "videodev2==0.0.4"]
APT = ("python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates,procps,"
       # the camera stack, and what Raspberry Pi OS installs beside python3-picamera2
       "python3-libcamera,libcamera-ipa,libcamera-tools,python3-numpy,python3-pil,python3-prctl,"
       "python3-piexif,python3-libarchive-c,python3-jsonschema,python3-tqdm")
ARM64_APT = ("python3-gi", "python3-gst-1.0", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-base",
             "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad")
"""The arm64 root also has GStreamer's RTSP server, installed by apt as scripts/run.sh installs it on a
Pi (debootstrap's own resolver cannot: it takes recommends and stumbles on alternatives), so the
appliance there serves RTSP from PyAV's aarch64 wheel through Debian's arm64 GStreamer."""
VENV = "/opt/appliance/venv"
SRC = "/opt/appliance/src"
SHIM_DIR = "/opt/camera-test"
VIRTUAL_YAML = "usr/share/libcamera/pipeline/virtual/virtual.yaml"


def extra_apt(arch: str) -> tuple[str, ...]:
    return ARM64_APT if arch == "arm64" else ()


def recipe(arch: str = "amd64") -> str:
    """What the cached root is made of: a change to any of it builds the root anew."""
    lock = (ROOT / "requirements" / "runtime-pi.txt").read_text()
    return "\n".join([arch, APT, *extra_apt(arch), PICAMERA2, *PIP_EXTRAS, lock])


def build_camera_root(dest: Path, arch: str = "amd64") -> None:
    """Unpack the cached Debian 13 camera root of ``arch`` into ``dest``, building the cache first if
    needed. An ``arm64`` root is a Raspberry Pi OS's processor: its binaries (Python, libcamera, the
    aarch64 wheels) run under qemu-user-static through binfmt_misc (``enable_arm64``), slowly."""
    tarball = cached_root(arch)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(dest), "--numeric-owner", "-xf", str(tarball)], check=True)


def prebuild_arm64() -> None:
    """Build the arm64 root's cache (about 20 minutes, all of it emulated): started in the background
    by tests/conftest.py when a session will run arm64 tests, so it overlaps the other tests."""
    enable_arm64()
    cached_root("arm64")


def cached_root(arch: str) -> Path:
    """The cached root's tarball for ``arch``, built first if missing. One build at a time per root: a
    second caller (the tests, while the session's prebuild runs) waits on the lock, then finds it."""
    key = hashlib.sha256(recipe(arch).encode()).hexdigest()[:12]
    prefix = "trixie-camera-" if arch == "amd64" else f"trixie-camera-{arch}-"
    tarball = CACHE / f"{prefix}{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"camera-root-{arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build(arch, prefix, tarball)
    return tarball


def _build(arch: str, prefix: str, tarball: Path) -> None:
    """debootstrap, apt and pip into a build folder, then the tarball (renamed into place when whole)."""
    build = CACHE / f"camera-root-build-{arch}"
    shutil.rmtree(build, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={APT}",
                    "trixie", str(build), apt_mirror()], check=True, capture_output=True, timeout=2400)
    prepare_network(build)
    env = clean_env()
    pip = [f"{VENV}/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
           # Emulated, compiling every module's bytecode at install takes minutes; Python does it on import.
           *(["--no-compile"] if arch != "amd64" else [])]
    (build / "tmp" / "runtime-pi.txt").write_text((ROOT / "requirements" / "runtime-pi.txt").read_text())
    apt = [["apt-get", "-qq", "update"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                             *extra_apt(arch)]] if extra_apt(arch) else []
    for command in (*apt, ["python3", "-m", "venv", "--system-site-packages", VENV],
                    [*pip, "--require-hashes", "-r", "/tmp/runtime-pi.txt"],
                    [*pip, "--no-deps", PICAMERA2, *PIP_EXTRAS]):
        subprocess.run(["chroot", str(build), *command], check=True, capture_output=True, timeout=2400,
                       env={**env, "DEBIAN_FRONTEND": "noninteractive"})
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), "."], check=True)
    partial.rename(tarball)
    shutil.rmtree(build, ignore_errors=True)
    for old in CACHE.glob(f"{prefix}*.tar"):
        if old != tarball and (arch != "amd64" or old.name[len(prefix):].count("-") == 0):
            old.unlink()


BINFMT = Path("/proc/sys/fs/binfmt_misc")


def enable_arm64() -> None:
    """Let this x86 machine run arm64 programs (root): binfmt_misc mounted and qemu-user-static's
    aarch64 handler switched on. Its ``F`` flag opens the emulator once, here, so programs inside a
    chroot run without a copy of it in the root."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True, capture_output=True)
    handler = BINFMT / "qemu-aarch64"
    if not handler.exists() or not handler.read_text().startswith("enabled"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True, capture_output=True)
    if not handler.read_text().startswith("enabled"):
        raise RuntimeError(f"qemu-aarch64 is not enabled in binfmt_misc: {handler.read_text()}")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a command in the root gets: nothing of this machine's pip or Python settings."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": "/root"}
    env.update(extra or {})
    return env


def install_shims(root: Path) -> None:
    """Put the test-only shims into ``root`` (``SHIM_DIR``): the stand-ins for what this VM lacks."""
    shims = root / SHIM_DIR.lstrip("/")
    shutil.rmtree(shims, ignore_errors=True)
    shutil.copytree(SHIMS / "site", shims / "site", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(SHIMS / "fake_dmabuf.c", shims / "fake_dmabuf.c")
    # Built by the root's own gcc, so it is of the root's processor and C library (arm64 under qemu).
    subprocess.run(["chroot", str(root), "gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror",
                    "-o", f"{SHIM_DIR}/fake_dmabuf.so", f"{SHIM_DIR}/fake_dmabuf.c", "-ldl"],
                   check=True, capture_output=True, timeout=600, env=clean_env())


SHIM_ENV = {"LD_PRELOAD": f"{SHIM_DIR}/fake_dmabuf.so", "LIBCAMERA_PIPELINES_MATCH_LIST": "virtual",
            "LIBCAMERA_LOG_LEVELS": "*:ERROR"}
"""What a process needs to see the virtual camera through the shims (and ``{SHIM_DIR}/site`` on PYTHONPATH)."""


class CameraRoot:
    """A Debian 13 root with the camera stack and the appliance's current code, mounted and ready."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mounts: list[Path] = []

    def prepare(self) -> None:
        """Copy the appliance and the shims in, build the LD_PRELOAD library, mount /proc, /sys, /dev."""
        source = self.path / SRC.lstrip("/")
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(ROOT / "appliance", source / "appliance",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        install_shims(self.path)
        for name, args in (("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]),
                           ("dev", ["--rbind", "/dev"])):
            target = self.path / name
            subprocess.run(["mount", *args, str(target)], check=True)
            self._mounts.append(target)

    def cleanup(self) -> None:
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)
        self._mounts.clear()

    def virtual_cameras(self, cameras: Mapping[str, Mapping[str, object]] | None) -> None:
        """Write libcamera's virtual-camera list (None: no camera at all)."""
        target = self.path / VIRTUAL_YAML
        target.parent.mkdir(parents=True, exist_ok=True)
        if cameras is None:
            target.unlink(missing_ok=True)
            return
        import yaml

        target.write_text(yaml.safe_dump(dict(cameras)))

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Everything runs with the shims and with only the virtual pipeline handler."""
        return clean_env({**SHIM_ENV, "PYTHONPATH": f"{SHIM_DIR}/site", **(extra or {})})

    def command(self, args: Sequence[str], cwd: str = SRC) -> list[str]:
        return ["chroot", str(self.path), "/bin/sh", "-c", f'cd {cwd} && exec "$@"', "sh", *args]

    def python(self, code: str, timeout: float = 120, extra_env: Mapping[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
        """Run ``code`` with the root's appliance venv (apt's libcamera, PyPI's picamera2 and OpenCV)."""
        return subprocess.run(self.command([f"{VENV}/bin/python", "-c", textwrap.dedent(code)]),
                              env=self.env(extra_env), capture_output=True, text=True, timeout=timeout)

    def popen(self, args: Sequence[str], extra_env: Mapping[str, str] | None = None,
              **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(args), env=self.env(extra_env), text=True, **kwargs)  # type: ignore[call-overload]


def write_frames(folder: Path, frames: Sequence[object]) -> None:
    """JPEG files ``0.jpg``, ``1.jpg``, ... for the virtual camera to play (it shows each for a few frames)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    for number, image in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{number}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


def child_pids(pid: int) -> list[int]:
    """The process ``pid`` and its descendants (chroot execs, so usually just the one)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            found.extend(child_pids(int(child)))
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    """What each descriptor of ``pid`` names; one closed while they are read (a connection the server
    was still closing) is left out."""
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.append(str(fd.readlink()))
        except FileNotFoundError:
            continue
    return targets


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))
