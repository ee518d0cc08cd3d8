"""The button and LED through gpiozero's MockFactory, wired into a running appliance."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from gpiozero.pins.mock import MockFactory

from appliance.controller import StateChange
from appliance.motion.events import EventChange, MotionEvent
from appliance.panel.gpio import StatusLed
from appliance.runtime import Appliance
from tests.helpers import CountingCamera, make_config

BUTTON, LED_PIN = 17, 27


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def factory() -> Any:
    factory = MockFactory()
    yield factory
    factory.reset()


def start_panel(start_appliance: Any, factory: MockFactory, clock: FakeClock, **gpio: Any) -> Appliance:
    settings = {"button_pin": BUTTON, "led_pin": LED_PIN, "blink_interval": 0.05, **gpio}
    app = start_appliance(gpio=settings, parts={"pin_factory": factory, "button_clock": clock})
    assert app.panel.button is not None and app.panel.led is not None
    return app


def settle(app: Appliance, clock: FakeClock, advance: float) -> None:
    """Move the button's clock on and wait until the watcher has handled everything due."""
    clock.now += advance
    assert app.panel.button is not None
    app.panel.button.wake()
    assert app.panel.button.wait_idle(20)


def bounce(factory: MockFactory, clock: FakeClock, edges: int, step: float, pressed: bool) -> None:
    """``edges`` alternating edges ``step`` s apart, the last one leaving the button ``pressed``."""
    pin = factory.pin(BUTTON)
    for i in range(edges):
        level = pressed if (edges - 1 - i) % 2 == 0 else not pressed
        pin.drive_low() if level else pin.drive_high()  # pull-up, button to ground: low is pressed
        clock.now += step


def press(factory: MockFactory, clock: FakeClock, duration: float, app: Appliance) -> None:
    bounce(factory, clock, 1, duration, pressed=True)
    bounce(factory, clock, 1, 0.0, pressed=False)
    settle(app, clock, 0.1)  # past the debounce window


def starts(app: Appliance) -> list[str]:
    heard: list[str] = []
    app.controller.add_listener(lambda c: heard.append(c.source) if c.state.value == "starting" else None)
    return heard


def test_a_press_toggles_and_the_led_follows(start_appliance: Any, factory: MockFactory) -> None:
    clock = FakeClock()
    app = start_panel(start_appliance, factory, clock)
    led = app.panel.led
    assert led is not None and led.wait_until(lambda lit, mode: not lit and mode == "off", 5)
    press(factory, clock, 0.2, app)
    assert app.controller.state.value == "on"
    assert led.wait_until(lambda lit, mode: lit and mode == "on", 5)
    assert factory.pin(LED_PIN).state
    press(factory, clock, 0.2, app)
    assert app.controller.state.value == "off"
    assert led.wait_until(lambda lit, mode: not lit, 5)


def test_a_bouncing_press_is_one_toggle(start_appliance: Any, factory: MockFactory) -> None:
    clock = FakeClock()
    app = start_panel(start_appliance, factory, clock)
    heard = starts(app)
    bounce(factory, clock, 13, 0.003, pressed=True)  # contact bounce: 13 edges within 39 ms
    clock.now += 0.3
    bounce(factory, clock, 11, 0.002, pressed=False)  # and on release
    settle(app, clock, 0.1)
    assert heard == ["button"]
    assert app.controller.state.value == "on"


def test_a_long_press_takes_a_snapshot_and_does_not_toggle(start_appliance: Any, factory: MockFactory) -> None:
    clock = FakeClock()
    app = start_panel(start_appliance, factory, clock, hold_action="snapshot", hold_time=3.0)
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    taken = threading.Event()
    original = app.panel.actions["snapshot"]
    app.panel.actions["snapshot"] = lambda: (original(), taken.set())
    heard = starts(app)
    bounce(factory, clock, 1, 0.0, pressed=True)
    settle(app, clock, 3.5)  # held past the hold time: fires while still held
    assert taken.is_set()
    bounce(factory, clock, 1, 0.0, pressed=False)
    settle(app, clock, 0.1)
    assert heard == []
    app.recorder.flush()
    stored = requests.get(app.url + "/api/events", timeout=5).json()["events"]
    assert [e["kind"] for e in stored] == ["snapshot"]
    assert requests.get(f"{app.url}/api/events/{stored[0]['id']}/snapshot.jpg", timeout=5).status_code == 200
    assert app.controller.state.value == "on"


def test_a_long_press_arms_and_disarms_when_so_set(start_appliance: Any, factory: MockFactory) -> None:
    clock = FakeClock()
    app = start_panel(start_appliance, factory, clock, hold_action="arm", hold_time=3.0)
    heard = starts(app)
    assert app.arming.state().armed is True
    for expected in (False, True):
        bounce(factory, clock, 1, 0.0, pressed=True)
        settle(app, clock, 3.5)  # held past the hold time
        bounce(factory, clock, 1, 0.0, pressed=False)
        settle(app, clock, 0.1)
        assert app.arming.state().public() == {"armed": expected, "reason": "manual", "until": None}
    assert heard == []  # a long press does not switch the camera


def test_led_follows_rest_and_blinks_in_error(start_appliance: Any, factory: MockFactory, tmp_path: Path) -> None:
    camera = CountingCamera(make_config(tmp_path).camera)
    app = start_appliance(backend=camera, gpio={"led_pin": LED_PIN, "blink_interval": 0.05},
                          parts={"pin_factory": factory})
    led = app.panel.led
    assert led is not None and app.panel.button is None
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    assert led.wait_until(lambda lit, mode: lit and mode == "on", 5)
    camera.broken.set()
    assert led.wait_until(lambda lit, mode: mode == "blink" and not lit, 5)  # error: slow blink
    assert led.wait_until(lambda lit, mode: mode == "blink" and lit, 5)  # it really blinks
    assert led.wait_until(lambda lit, mode: mode == "blink" and not lit, 5)
    camera.broken.clear()
    assert led.wait_until(lambda lit, mode: lit and mode == "on", 5)
    requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
    assert led.wait_until(lambda lit, mode: not lit and mode == "off", 5)
    assert not factory.pin(LED_PIN).state


def test_led_flickers_while_starting_and_flashes_dark_on_motion(factory: MockFactory) -> None:
    from gpiozero import LED

    from appliance.controller import CameraState

    led_device = LED(LED_PIN, pin_factory=factory)
    led = StatusLed(led_device, blink_interval=0.5, motion_flash=0.05)
    led.start()
    try:
        led.on_state(StateChange(CameraState.STARTING, CameraState.OFF, True, None, "test", 0.0))
        assert led.wait_until(lambda lit, mode: mode == "flicker" and lit, 5)
        assert led.wait_until(lambda lit, mode: mode == "flicker" and not lit, 5)  # it flickers
        led.on_state(StateChange(CameraState.ON, CameraState.STARTING, True, None, "test", 0.0))
        assert led.wait_until(lambda lit, mode: lit and mode == "on", 5)
        led.on_motion(EventChange("start", MotionEvent(id="x", started_at=0.0)), None)
        assert led.wait_until(lambda lit, mode: not lit, 5)
        assert led.wait_until(lambda lit, mode: lit, 5)  # back on after the flash
    finally:
        led.close()
        led_device.close()


def test_starts_cleanly_where_there_is_no_gpio(start_appliance: Any, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    caplog.set_level(logging.WARNING)
    app = start_appliance(gpio={"button_pin": BUTTON, "led_pin": LED_PIN})  # no pin factory on x86
    assert app.panel.button is None and app.panel.led is None
    assert [r for r in caplog.records if "GPIO unavailable" in r.getMessage()]
    status = requests.get(app.url + "/api/status", timeout=5).json()
    assert status["gpio"] == {"configured": True, "button": False, "led": False}
    assert status["mqtt"] is None
    assert requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).json()["state"] == "on"


def test_gpio_stays_off_without_pins(start_appliance: Any) -> None:
    app = start_appliance()
    assert not app.panel.configured and app.panel.button is None
