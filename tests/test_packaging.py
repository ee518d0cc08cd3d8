"""The package a fleet installs: a fresh venv, the lock with hashes, the appliance without deps."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]


def test_a_fresh_venv_installs_from_the_lock_and_reports_one_version(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the working tree
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "test-artifacts", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # What the README's manual install types: the top-level requirements.txt (it includes the lock).
    subprocess.run([*pip, "--require-hashes", "-r", str(source / "requirements.txt")], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=600)
    printed = subprocess.run([str(venv / "bin" / "appliance"), "--version"], capture_output=True, text=True,
                             check=True, cwd=tmp_path).stdout.split()[-1]
    port = free_port()
    proc = subprocess.Popen([str(venv / "bin" / "appliance"), "--camera", "synthetic", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, env={"APPLIANCE_STATE_DIR": str(tmp_path / "state"),
                                                                     "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving on" in line:
                break
        status = requests.get(f"http://127.0.0.1:{port}/api/status", timeout=10).json()
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)  # templates and static files were packaged
        assert page.status_code == 200 and requests.get(f"http://127.0.0.1:{port}/static/app.js", timeout=10).ok
    finally:
        proc.terminate()
        proc.wait(10)
    assert status["version"] == printed
    from appliance import __version__

    assert printed == __version__
