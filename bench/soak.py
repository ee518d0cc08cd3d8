"""Soak: everything at once for a while, then check that nothing leaked and everyone agrees.

For ``--seconds`` the appliance (in this process, real cheroot server on loopback, a real mosquitto,
gpiozero's MockFactory pins, a synthetic camera with injected faults) takes concurrent on/off/toggle
from REST, MQTT and the button, viewers and pages that connect and drop, camera faults (unplugged,
exceptions, garbage frames, a read that hangs) and a broker restart. Then it stops the load, switches
the camera on and off once more, and checks:

- threads, open descriptors and memory are back near where they were before the load;
- REST, the MQTT retained state and the LED agree on the final state, both on and off.

It prints the figures and exits 1 when a check fails (CI runs a short one through the tests).

    python bench/soak.py [--seconds 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import requests  # noqa: E402
from gpiozero.pins.mock import MockFactory  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from appliance.runtime import Appliance  # noqa: E402
from appliance.state import CameraState  # noqa: E402
from tests.broker import Broker, Recorder  # noqa: E402
from tests.helpers import FaultyCamera, make_config  # noqa: E402

BUTTON, LED = 17, 27
PREFIX = "appliance/soak"


def threads() -> int:
    return threading.active_count()


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    """The workers: each paces itself on the shared stop event and counts what it did."""

    def __init__(self, app: Appliance, broker: Broker, factory: MockFactory, seed: int) -> None:
        self.app = app
        self.broker = broker
        self.factory = factory
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._threads: list[threading.Thread] = []

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def pause(self, low: float, high: float) -> bool:
        """Wait a random while; True when the soak is over."""
        with self._lock:
            delay = self._rng.uniform(low, high)
        return self.stop.wait(delay)

    def pick(self, choices: list[Any]) -> Any:
        with self._lock:
            return self._rng.choice(choices)

    def spawn(self, name: str, work: Callable[[], None], copies: int = 1) -> None:
        def guarded() -> None:
            while not self.stop.is_set():
                try:
                    work()
                except (requests.RequestException, OSError) as exc:
                    self.count(f"{name} transient errors")  # a 503 beyond a limit, a reset: expected
                    self.errors.append(f"{name}: {type(exc).__name__}") if len(self.errors) < 20 else None
                    self.pause(0.1, 0.3)

        for index in range(copies):
            thread = threading.Thread(target=guarded, name=f"soak-{name}-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    # --- the workers ------------------------------------------------------------------------------

    def rest(self) -> None:
        command = self.pick(["on", "off", "toggle"])
        if command == "toggle":
            requests.post(self.app.url + "/api/camera/toggle", timeout=30)
        else:
            requests.put(self.app.url + "/api/camera", json={"on": command == "on"}, timeout=30)
        self.count("REST commands")
        self.pause(0.2, 1.0)

    def mqtt(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-commander-{id(self)}")
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            while not self.stop.is_set() and self.broker.proc is not None:
                client.publish(f"{PREFIX}/camera/set", self.pick(["ON", "OFF", "TOGGLE"]), qos=1)
                self.count("MQTT commands")
                if self.pause(0.2, 1.0):
                    break
        finally:
            client.disconnect()
            client.loop_stop()

    def button(self) -> None:
        pin = self.factory.pin(BUTTON)
        pin.drive_low()
        self.pause(0.08, 0.3)
        pin.drive_high()
        self.count("button presses")
        self.pause(0.5, 2.0)

    def viewer(self) -> None:
        with requests.get(self.app.url + "/stream.mjpg", stream=True, timeout=10) as response:
            if response.status_code != 200:
                self.count("viewers refused (camera off or full)")
                self.pause(0.3, 1.0)
                return
            self.count("viewers")
            wanted = self.pick([1, 5, 20])
            for _ in response.iter_content(8192):
                wanted -= 1
                if wanted <= 0 or self.stop.is_set():
                    break
        self.pause(0.1, 0.5)

    def page(self) -> None:
        with requests.get(self.app.url + "/api/events/live", stream=True, timeout=10) as response:
            if response.status_code != 200:
                self.pause(0.5, 1.0)
                return
            self.count("pages")
            lines = self.pick([3, 10])
            for _ in response.iter_lines():
                lines -= 1
                if lines <= 0 or self.stop.is_set():
                    break
        requests.get(self.app.url + "/api/status", timeout=10)
        self.pause(0.2, 1.0)

    def faults(self, camera: FaultyCamera) -> None:
        if self.pause(1.5, 4.0):
            return
        fault = self.pick(["unplugged", "exception in read", "exception in open", "garbage", "hung read",
                           "exception in close"])
        self.count(f"fault: {fault}")
        if fault == "unplugged":
            camera.gone.set()
            self.pause(0.5, 2.0)
            camera.gone.clear()
        elif fault == "exception in read":
            camera.raise_in_read = RuntimeError("soak: read exploded")
            self.pause(0.2, 0.5)
            camera.raise_in_read = None
        elif fault == "exception in open":
            camera.raise_in_open = ValueError("soak: open refused")
            camera.gone.set()  # force a reopen
            self.pause(0.2, 0.5)
            camera.gone.clear()
            self.pause(0.5, 1.0)
            camera.raise_in_open = None
        elif fault == "garbage":
            camera.garbage = True
            self.pause(0.2, 0.5)
            camera.garbage = False
        elif fault == "hung read":
            camera.release.clear()
            camera.hang_read.set()
            self.pause(0.5, 2.0)
            camera.hang_read.clear()
            camera.release.set()
        else:
            camera.raise_in_close = OSError("soak: close failed")
            camera.gone.set()
            self.pause(0.2, 0.5)
            camera.gone.clear()
            camera.raise_in_close = None


def switch_everywhere(app: Appliance, broker: Broker, factory: MockFactory, on: bool) -> dict[str, Any]:
    """Switch by REST and report what REST, the retained MQTT state and the LED say afterwards."""
    response = requests.put(app.url + "/api/camera", json={"on": on}, timeout=30)
    wanted = CameraState.ON if on else CameraState.OFF
    settled = app.controller.wait_for(lambda s: s == wanted, 20)
    app.controller.flush(5)
    assert app.mqtt is not None and app.panel.led is not None
    app.panel.led.wait_until(lambda lit, mode: mode == ("on" if on else "off"), 5)
    # The retained state must reach the broker within a few seconds (the last value seen is reported).
    expected_state, expected_status = ("ON" if on else "OFF").encode(), wanted.value.encode()
    seen: dict[str, bytes] = {}

    def settles(topic: str, expected: bytes) -> Callable[[bytes], bool]:
        def match(payload: bytes) -> bool:
            seen[topic] = payload
            return payload == expected
        return match

    with Recorder(broker.port, [f"{PREFIX}/camera/state", f"{PREFIX}/camera/status"]) as retained:
        for topic, expected in ((f"{PREFIX}/camera/state", expected_state),
                                (f"{PREFIX}/camera/status", expected_status)):
            with contextlib.suppress(AssertionError):
                retained.wait_for(topic, settles(topic, expected), timeout=5)
    mqtt_state = seen.get(f"{PREFIX}/camera/state", b"?").decode()
    mqtt_status = seen.get(f"{PREFIX}/camera/status", b"?").decode()
    rest = requests.get(app.url + "/api/camera", timeout=10).json()
    return {"asked": "on" if on else "off", "http": response.status_code, "settled": settled,
            "rest": f"{rest['state']} (on={rest['on']})", "mqtt": f"{mqtt_state}/{mqtt_status}",
            "led": app.panel.led.mode,
            "agree": settled and rest["on"] is on and rest["state"] == wanted.value
            and mqtt_state == ("ON" if on else "OFF") and mqtt_status == wanted.value
            and app.panel.led.mode == ("on" if on else "off")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if "MALLOC_ARENA_MAX" not in os.environ:  # measure the appliance as the unit runs it
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_ARENA_MAX": "2"})

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    work.chmod(0o755)
    (work / "broker").mkdir()
    broker = Broker(work / "broker", extra="allow_anonymous true")
    broker.start()
    factory = MockFactory()
    config = make_config(work, camera={"size": "320x240", "fps": 15, "synthetic": {"objects": 3,
                                                                                    "motion_period": 6,
                                                                                    "motion_duration": 2}},
                         motion={"warmup_frames": 5, "event_gap": 1.0},
                         mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "soak", "reconnect_min": 1,
                               "reconnect_max": 2, "stats_interval": 1, "command_interval": 0.3},
                         gpio={"button_pin": BUTTON, "led_pin": LED, "debounce": 0.02, "hold_time": 5},
                         stream={"max_viewers": 6, "max_live_clients": 4})
    camera = FaultyCamera(config.camera)
    app = Appliance(config, backend=camera, pin_factory=factory)
    app.start()
    ok = True
    try:
        assert app.mqtt is not None and app.mqtt.wait_connected(10)
        switch_everywhere(app, broker, factory, True)  # warm every path once before the baseline
        switch_everywhere(app, broker, factory, False)
        gc.collect()
        before = {"threads": threads(), "descriptors": descriptors(), "rss_mib": rss_mib()}

        load = Load(app, broker, factory, args.seed)
        load.spawn("rest", load.rest, copies=2)
        load.spawn("mqtt", load.mqtt)
        load.spawn("button", load.button)
        load.spawn("viewer", load.viewer, copies=4)
        load.spawn("page", load.page, copies=2)
        load.spawn("faults", lambda: load.faults(camera))
        started = time.monotonic()
        if not load.stop.wait(args.seconds / 2):
            broker.stop()  # the broker goes away in the middle, and comes back
            load.count("broker restarts")
            load.stop.wait(min(3.0, args.seconds / 10))
            broker.start()
        load.stop.wait(max(0.0, args.seconds - (time.monotonic() - started)))
        load.join()
        camera.release.set()  # a read left hanging by the last fault returns now
        assert app.mqtt.wait_connected(30), "MQTT did not reconnect after the broker restart"

        final_on = switch_everywhere(app, broker, factory, True)
        final_off = switch_everywhere(app, broker, factory, False)
        # Let what the load left behind wind down: closed streams, an abandoned capture thread.
        app.broadcaster.wait_for_viewers(0, 10)
        app.server.wait_for_connections(0, 10)
        app.pipeline.wait_stopped(10)  # a thread that hung in the driver ends when it returns
        gc.collect()
        after = {"threads": threads(), "descriptors": descriptors(), "rss_mib": rss_mib()}
        stored = app.events.count()
    finally:
        app.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - started
    print(f"soak: {elapsed:.0f} s, seed {args.seed}")
    for what, count in sorted(load.counts.items()):
        print(f"  {what:<40} {count:>6}")
    print(f"  {'motion events stored':<40} {stored:>6}")
    print(f"{'':<14} {'before':>8} {'after':>8}")
    for key in ("threads", "descriptors", "rss_mib"):
        print(f"  {key:<12} {before[key]:>8.0f} {after[key]:>8.0f}")
    for result in (final_on, final_off):
        print("  final " + json.dumps(result))
    checks = {
        "threads back to baseline (+2)": after["threads"] <= before["threads"] + 2,
        "descriptors back to baseline (+4)": after["descriptors"] <= before["descriptors"] + 4,
        "memory within 40 MiB of baseline": after["rss_mib"] <= before["rss_mib"] + 40,
        "REST, MQTT and LED agree when on": final_on["agree"],
        "REST, MQTT and LED agree when off": final_off["agree"],
        "every kind of load ran": all(load.counts[k] > 0 for k in ("REST commands", "MQTT commands",
                                                                    "button presses", "viewers", "pages")),
    }
    for name, passed in checks.items():
        print(f"  {'ok  ' if passed else 'FAIL'} {name}")
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
