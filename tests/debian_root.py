"""Debian root folders for deployment tests (12 and 13): built with debootstrap, booted with systemd-nspawn.

The root is built once per machine and cached as a tarball (~75 s to build, a few seconds to unpack);
the mirror is read from this machine's own apt sources, never written into the code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

CACHE = Path(os.environ.get("DEPLOY_TEST_CACHE", Path.home() / ".cache" / "appliance-tests"))
PACKAGES = "python3,python3-apt,python3-venv,python3-packaging,systemd,systemd-sysv,dbus,sudo,ca-certificates"


def apt_mirror() -> str:
    """The first Debian mirror this machine's apt uses."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm", listing.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    raise RuntimeError("no Debian mirror found in this machine's apt sources")


def build_root(dest: Path, suite: str = "bookworm", packages: str = PACKAGES,
               setup: Sequence[Sequence[str]] = ()) -> None:
    """Unpack the cached minimal root of Debian ``suite`` into ``dest`` (building the cache first if
    needed): ``packages`` from apt, then the ``setup`` commands run in it (with this machine's network).
    The cache is named after all three, so a change to any of them builds the root anew."""
    key = hashlib.sha256(repr((suite, packages, [list(command) for command in setup])).encode()).hexdigest()[:12]
    tarball = CACHE / f"{suite}-minbase-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        build = CACHE / f"root-build-{suite}"
        shutil.rmtree(build, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(build),
                        apt_mirror()], check=True, capture_output=True, timeout=1200)
        if setup:
            prepare_network(build)
            for command in setup:
                subprocess.run(["chroot", str(build), *command], check=True, capture_output=True, timeout=900,
                               env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "HOME": "/root", "LANG": "C.UTF-8"})
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
        shutil.rmtree(build, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(dest), "--numeric-owner", "-xf", str(tarball)], check=True)
    prepare_network(dest)


def prepare_network(root: Path) -> None:
    """Let pip and apt inside the root reach the registries as this machine does (DNS, extra CAs)."""
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    extra = root / "usr" / "local" / "share" / "ca-certificates"
    extra.mkdir(parents=True, exist_ok=True)
    for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copyfile(cert, extra / cert.name)
    subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True)
    (root / "etc" / "hostname").write_text("testcam\n")


def community_general() -> Path:
    """A collections folder holding community.general (for its chroot connection).

    ansible-galaxy cannot reach its server here, so the collection is taken from the ``ansible``
    package on PyPI, unpacking only that one collection.
    """
    folder = CACHE / "collections"
    marker = folder / "ansible_collections" / "community" / "general" / "MANIFEST.json"
    if marker.exists():
        return folder
    download = CACHE / "ansible-wheel"
    subprocess.run(["python3", "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d",
                    str(download), "ansible>=12,<13"], check=True, timeout=600)
    wheel = next(download.glob("ansible-*.whl"))
    prefix = "ansible_collections/community/general/"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(prefix):
                archive.extract(name, folder)
    shutil.rmtree(download, ignore_errors=True)
    assert marker.exists(), "community.general was not in the ansible wheel"
    return folder


