"""The appliance speaks systemd's notify protocol: READY, watchdog pings, STOPPING.

A unix datagram socket stands in for systemd's NOTIFY_SOCKET, exactly as systemd hands it over.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from appliance.__main__ import watchdog_interval
from tests.broker import free_port


def test_watchdog_interval_is_half_of_watchdog_sec_for_this_process() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_ready_watchdog_and_stopping_reach_the_notify_socket(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="notify-"))  # short path: unix socket names are limited
    address = str(folder / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000",
               "APPLIANCE_STATE_DIR": str(tmp_path)}
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "--camera", "synthetic", "--host", "127.0.0.1",
                                 "--port", str(free_port())], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            first = notify.recv(4096).decode()
            assert first.startswith("READY=1") and "STATUS=serving on port" in first
            pings = [notify.recv(4096).decode() for _ in range(3)]  # every 0.1 s while healthy
            assert pings == ["WATCHDOG=1"] * 3
            proc.send_signal(signal.SIGTERM)
            while (message := notify.recv(4096).decode()) == "WATCHDOG=1":
                pass
            assert message == "STOPPING=1"
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.unlink(address)
            folder.rmdir()
