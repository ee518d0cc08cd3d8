"""A short soak in every CI run: load, faults and a broker restart; nothing leaks, everyone agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker]

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_a_short_soak_leaks_nothing_and_ends_in_agreement() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "40"], cwd=ROOT,
                            capture_output=True, text=True, timeout=200)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "FAIL" not in result.stdout and result.stdout.count("ok  ") == 6
