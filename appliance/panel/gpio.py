"""The physical front panel: a push button that calls the controller and an LED that follows it.

gpiozero devices take ``pin_factory`` as a keyword so tests hand in ``MockFactory`` and nothing global
is touched; on a Pi the default factory (lgpio on current Raspberry Pi OS) is used. The gpiozero
callback thread only timestamps the edge and queues it: a ``ButtonWatcher`` thread runs the logic and
calls the controller, so a slow camera start never blocks GPIO callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.config import GpioSettings, PictureSettings
from appliance.motion.events import EventChange
from appliance.panel.button import ButtonAction, ButtonLogic
from appliance.state import CameraState, StateChange

if TYPE_CHECKING:
    from appliance.capture.picture import PictureControl
    from appliance.controller import CameraController

log = logging.getLogger(__name__)


class _OwnedThread:
    """A thread its object owns: it waits on ``_cond`` and ends when ``close()`` sets ``_stop``."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and join the thread; safe to call twice or before ``start``."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(0.5)  # it waits on _cond, which was just notified
            if self._thread.is_alive():
                log.warning("%s thread did not end; leaving it", self._thread.name)


class ButtonWatcher(_OwnedThread):
    """Turns a gpiozero Button's edges into short/long presses on its own thread."""

    def __init__(self, button: Any, logic: ButtonLogic, on_action: Callable[[ButtonAction], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("gpio-button")
        self._button = button
        self._logic = logic
        self._on_action = on_action
        self._clock = clock
        self._edges: deque[tuple[bool, float]] = deque()
        self._busy = False
        button.when_pressed = lambda: self._queue(True)
        button.when_released = lambda: self._queue(False)

    def _queue(self, level: bool) -> None:
        """Runs in gpiozero's callback thread: timestamp, queue, return."""
        with self._cond:
            self._edges.append((level, self._clock()))
            self._cond.notify_all()

    def wake(self) -> None:
        """Re-check deadlines now (tests move an injected clock, then wake the watcher)."""
        with self._cond:
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued edge and due deadline has been handled."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._edges and not self._busy and not self._due(), timeout)

    def _due(self) -> bool:
        deadline = self._logic.next_deadline()
        return deadline is not None and deadline <= self._clock()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._edges and not self._due():
                    deadline = self._logic.next_deadline()
                    self._cond.wait(None if deadline is None else max(0.0, deadline - self._clock()))
                if self._stop:
                    return
                edges = list(self._edges)
                self._edges.clear()
                self._busy = True
            actions: list[ButtonAction] = []
            for level, at in edges:
                actions += self._logic.edge(level, at)
            if self._due():
                actions += self._logic.tick(bool(self._button.is_pressed), self._clock())
            for action in actions:
                try:
                    self._on_action(action)
                except Exception:
                    log.exception("button action %s failed", action.value)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def close(self) -> None:
        super().close()
        self._button.when_pressed = None
        self._button.when_released = None


class StatusLed(_OwnedThread):
    """Steady on while the camera is on, off while off, blinking in error, flickering while starting,
    and a short dark flash on each motion event start.

    It follows the controller's state changes, so it is right whatever switched the camera.
    """

    def __init__(self, led: Any, blink_interval: float, motion_flash: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("gpio-led")
        self._led = led
        self._interval = blink_interval
        self._flash = motion_flash
        self._clock = clock
        self._mode = "off"
        self._flash_until = 0.0
        self._lit = False
        self._changes = 0

    @property
    def mode(self) -> str:
        return self._mode

    def on_state(self, change: StateChange) -> None:
        mode = {CameraState.ON: "on", CameraState.ERROR: "blink", CameraState.STARTING: "flicker"}.get(
            change.state, "off")
        with self._cond:
            self._mode = mode
            self._cond.notify_all()

    def on_motion(self, change: EventChange, _jpeg: bytes | None) -> None:
        if change.kind == "start" and self._flash > 0:
            with self._cond:
                self._flash_until = self._clock() + self._flash
                self._cond.notify_all()

    def wait_until(self, predicate: Callable[[bool, str], bool], timeout: float) -> bool:
        """Block until ``predicate(lit, mode)`` holds after the LED was written (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._lit, self._mode), timeout)

    def _level(self, now: float) -> tuple[bool, float | None]:
        """The LED level now and how long it holds."""
        if self._mode in ("blink", "flicker"):
            interval = self._interval if self._mode == "blink" else self._interval / 4
            phase, into = divmod(now, interval)
            base, holds = int(phase) % 2 == 0, interval - into
        else:
            base, holds = self._mode == "on", None
        if now < self._flash_until:
            remaining = self._flash_until - now
            return not base, remaining if holds is None else min(holds, remaining)
        return base, holds

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                lit, holds = self._level(self._clock())
                if lit != self._lit or self._changes == 0:
                    self._led.value = 1 if lit else 0
                    self._lit = lit
                    self._changes += 1
                    self._cond.notify_all()
                self._cond.wait(holds)


class FrontPanel:
    """The button and LED as configured; absent GPIO means one log line and no panel."""

    def __init__(self, settings: GpioSettings, controller: CameraController,
                 actions: dict[str, Callable[[], Any]], pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic, picture: PictureControl | None = None) -> None:
        self._settings = settings
        self._picture = picture
        self.night: Any = None  # the night-mode output (IR-cut filter, IR LEDs), a gpiozero OutputDevice
        self._clock = clock
        self._controller = controller
        self.actions = actions
        self._pin_factory = pin_factory
        self.button: ButtonWatcher | None = None
        self.led: StatusLed | None = None
        self._devices: list[Any] = []

    @property
    def configured(self) -> bool:
        settings = self._settings
        return any(pin is not None for pin in (settings.button_pin, settings.led_pin, settings.night_pin))

    def start(self) -> bool:
        """Create the devices and threads; False (and one log line) where there is no GPIO."""
        if not self.configured:
            return False
        settings = self._settings
        try:
            from gpiozero import LED, Button, OutputDevice  # imported here: only a configured panel needs it
            from gpiozero.exc import PinFactoryFallback

            with warnings.catch_warnings():
                # gpiozero warns once per factory it falls back from; we log one line if none works.
                warnings.simplefilter("ignore", PinFactoryFallback)
                if settings.button_pin is not None:
                    button = Button(settings.button_pin, pull_up=settings.button_pull_up, bounce_time=None,
                                    pin_factory=self._pin_factory)
                    self._devices.append(button)
                    logic = ButtonLogic(debounce=settings.debounce, hold_time=settings.hold_time)
                    self.button = ButtonWatcher(button, logic, self._on_action, clock=self._clock)
                if settings.led_pin is not None:
                    led = LED(settings.led_pin, active_high=settings.led_active_high,
                              pin_factory=self._pin_factory)
                    self._devices.append(led)
                    self.led = StatusLed(led, settings.blink_interval, settings.motion_flash)
                if settings.night_pin is not None and self._picture is not None:
                    self.night = OutputDevice(settings.night_pin, active_high=settings.night_active_high,
                                              initial_value=False, pin_factory=self._pin_factory)
                    self._devices.append(self.night)
        except Exception as exc:  # BadPinFactory, GPIOPinInUse, permission denied, no gpiochip
            log.warning("GPIO unavailable (%s: %s); running without the button and LED", type(exc).__name__, exc)
            self.close()
            return False
        if self.led is not None:
            self.led.start()
            self._controller.add_listener(self.led.on_state)
            self._controller.add_motion_listener(self.led.on_motion)
            self.led.on_state(_current(self._controller))
        if self.button is not None:
            self.button.start()
        if self.night is not None and self._picture is not None:
            self._picture.add_listener(self._on_picture)
            self._on_picture(self._picture.settings, self._picture.night_active)
        log.info("GPIO: button on BCM %s, LED on BCM %s, night output on BCM %s", settings.button_pin,
                 settings.led_pin, settings.night_pin)
        return True

    def _on_action(self, action: ButtonAction) -> None:
        if action is ButtonAction.SHORT:
            log.info("button: short press, toggling the camera")
            self._controller.toggle(source="button")
            return
        name = self._settings.hold_action
        log.info("button: long press, action %s", name)
        handler = self.actions.get(name)
        if handler is not None:
            handler()

    def _on_picture(self, _settings: PictureSettings, night_active: bool) -> None:
        """Night mode switched (or the settings changed): the IR-cut filter or IR LEDs follow at once."""
        night = self.night
        if night is not None and bool(night.value) != night_active:
            night.value = night_active
            log.info("night output %s", "on" if night_active else "off")

    def close(self) -> None:
        if self._picture is not None:
            self._picture.remove_listener(self._on_picture)
        self.night = None
        if self.led is not None:
            self._controller.remove_listener(self.led.on_state)
            self._controller.remove_motion_listener(self.led.on_motion)
            self.led.close()
        if self.button is not None:
            self.button.close()
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()
        self.button = None
        self.led = None


def _current(controller: CameraController) -> StateChange:
    status = controller.status()
    state = CameraState(status["state"])
    return StateChange(state, state, controller.wanted_on, status["error"], "gpio", time.time())
