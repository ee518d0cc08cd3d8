"""The controller: idempotent, race-free on/off/toggle, listeners, persistence, failure and recovery."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from appliance.capture.broadcaster import FrameBroadcaster
from appliance.capture.pipeline import CapturePipeline
from appliance.controller import CameraController, CameraState, StateChange, StateFile
from tests.helpers import CountingCamera, make_config


@pytest.fixture
def parts(tmp_path: Path) -> Any:
    config = make_config(tmp_path)
    camera = CountingCamera(config.camera)
    pipeline = CapturePipeline(camera, config, FrameBroadcaster(4))
    state_file = StateFile(tmp_path / "state.json")
    controller = CameraController(pipeline, state_file, start_timeout=5)
    yield controller, camera, state_file
    controller.shutdown()
    controller.close()


def test_on_opens_the_device_and_off_releases_it(parts: Any) -> None:
    controller, camera, _ = parts
    assert controller.on()["state"] == "on"
    assert camera.is_open and camera.opens == 1
    assert controller.on()["state"] == "on"  # idempotent: no second open
    assert camera.opens == 1
    assert controller.off()["state"] == "off"
    assert not camera.is_open and camera.closes == 1
    assert controller.off()["state"] == "off"
    assert camera.closes == 1


def test_listeners_hear_every_change_in_order(parts: Any) -> None:
    controller, _, _ = parts
    heard: list[StateChange] = []
    controller.add_listener(heard.append)
    controller.on(source="mqtt")
    controller.toggle(source="button")
    assert controller.flush()
    assert [(c.previous.value, c.state.value) for c in heard] == [
        ("off", "starting"), ("starting", "on"), ("on", "stopping"), ("stopping", "off")]
    assert [c.source for c in heard] == ["mqtt", "mqtt", "button", "button"]


def test_a_failing_listener_does_not_break_switching(parts: Any) -> None:
    controller, _, _ = parts
    controller.add_listener(lambda change: 1 / 0)
    assert controller.on()["state"] == "on"


def test_racing_commands_leave_a_consistent_state(parts: Any) -> None:
    controller, camera, _ = parts
    rng = random.Random(1)
    plan = [[rng.choice(["on", "off", "toggle"]) for _ in range(8)] for _ in range(12)]
    barrier = threading.Barrier(len(plan))
    errors: list[BaseException] = []

    def worker(commands: list[str]) -> None:
        try:
            barrier.wait()
            for command in commands:
                getattr(controller, command)()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(commands,)) for commands in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    status = controller.status()
    assert status["state"] == ("on" if status["on"] else "off")
    assert camera.is_open == status["on"]
    assert camera.opens == camera.closes + (1 if status["on"] else 0)


def test_two_racing_toggles_end_where_they_started(parts: Any) -> None:
    controller, camera, _ = parts
    barrier = threading.Barrier(2)

    def flip() -> None:
        barrier.wait()
        controller.toggle()

    threads = [threading.Thread(target=flip) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert controller.state == CameraState.OFF and camera.opens == camera.closes == 1


def test_state_survives_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    state_file = StateFile(tmp_path / "state.json")

    def new_controller() -> tuple[CameraController, CountingCamera]:
        camera = CountingCamera(config.camera)
        return CameraController(CapturePipeline(camera, config, FrameBroadcaster(2)), state_file, 5), camera

    first, _ = new_controller()
    assert first.restore()["state"] == "off"  # first start: off
    first.on()
    first.shutdown()  # process exit: the camera is released but the switch stays on
    second, camera = new_controller()
    assert second.restore()["state"] == "starting"  # restore does not wait for the camera
    assert second.wait_for(lambda s: s == CameraState.ON, 5) and camera.is_open
    second.off()
    third, camera3 = new_controller()
    assert third.restore()["state"] == "off" and camera3.opens == 0
    for controller in (first, second, third):
        controller.close()


@pytest.mark.parametrize("content", ["{not json", "[true]", '{"on": "yes"}', ""])
def test_an_unreadable_state_file_is_reported_and_the_camera_comes_back_on(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    state_file = StateFile(path)
    assert state_file.load() is None and state_file.problem and "unreadable" in state_file.problem
    config = make_config(tmp_path)
    camera = CountingCamera(config.camera)
    controller = CameraController(CapturePipeline(camera, config, FrameBroadcaster(2)), state_file, 5)
    try:
        controller.restore()  # a security camera must not come back silently off
        assert controller.wait_for(lambda s: s == CameraState.ON, 5) and controller.wanted_on
        assert state_file.problem is None  # switching on rewrote it
    finally:
        controller.shutdown()
        controller.close()


@pytest.mark.parametrize(("policy", "saved", "expected"), [("on", False, True), ("off", True, False),
                                                           ("last", True, True), ("last", False, False)])
def test_restore_policy(tmp_path: Path, policy: str, saved: bool, expected: bool) -> None:
    state_file = StateFile(tmp_path / "state.json")
    state_file.save(saved)
    config = make_config(tmp_path)
    controller = CameraController(CapturePipeline(CountingCamera(config.camera), config, FrameBroadcaster(2)),
                                  state_file, 5, restore=policy)  # type: ignore[arg-type]
    try:
        controller.restore()
        assert controller.wanted_on is expected
    finally:
        controller.shutdown()
        controller.close()


def test_a_failed_state_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    state_file = StateFile(folder / "state.json")
    state_file.save(True)
    (folder / "state.json").unlink()
    (folder / "state.json").mkdir()  # the rename over it now fails, as on a broken card
    state_file.save(False)
    assert state_file.problem and "cannot save state" in state_file.problem
    assert [p.name for p in folder.iterdir()] == ["state.json"]


def test_failure_goes_to_error_and_recovers_by_itself(parts: Any) -> None:
    controller, camera, _ = parts
    heard: list[str] = []
    controller.add_listener(lambda change: heard.append(change.state.value))
    controller.on()
    camera.broken.set()  # unplugged while on
    assert controller.wait_for(lambda s: s == CameraState.ERROR, 5)
    assert controller.status()["error"]
    assert controller.wanted_on
    camera.broken.clear()  # plugged back in
    assert controller.wait_for(lambda s: s == CameraState.ON, 5)
    assert controller.status()["error"] is None
    assert controller.flush()
    assert heard[-2:] == ["error", "on"]
    controller.off()
    assert not camera.is_open and camera.opens == camera.closes


def test_switching_on_a_missing_camera_reports_error_and_off_stops_retrying(parts: Any) -> None:
    controller, camera, _ = parts
    camera.broken.set()
    assert controller.on()["state"] == "error"
    assert controller.off()["state"] == "off"
    assert not controller.pipeline.is_alive()
