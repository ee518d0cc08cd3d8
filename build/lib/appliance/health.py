"""One definition of "healthy", shared by /healthz and the systemd watchdog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.state import CameraState

if TYPE_CHECKING:
    from appliance.controller import CameraController

CLOSE_LIMIT = 5.0  # s a backend's close() may take before the loop counts as stuck


def capture_health(controller: CameraController, read_timeout: float, open_timeout: float) -> tuple[bool, str]:
    """Healthy unless the camera should be running and its capture loop is dead or stuck.

    A camera in ``error`` is healthy here as long as its loop is alive and retrying: restarting the
    process would not bring back an unplugged camera, but it does free a driver that hangs.
    """
    pipeline = controller.pipeline
    if not controller.wanted_on:
        return True, "ok"
    phase, age = pipeline.phase()
    if pipeline.waiting():
        if age > open_timeout:
            return False, f"the previous capture thread has been {phase} for {age:.1f} s; the camera cannot restart"
        return True, "ok"
    if not pipeline.is_alive():
        return False, "capture thread is not running"
    if phase == "opening" and age > open_timeout:
        return False, f"opening the camera has hung for {age:.1f} s"
    if phase == "closing" and age > CLOSE_LIMIT:
        return False, f"closing the camera has hung for {age:.1f} s"
    if controller.state == CameraState.ON and phase == "reading":
        frame_age = pipeline.stats().last_frame_age
        if frame_age is not None and frame_age > read_timeout + 2.0:
            return False, f"no frame for {frame_age:.1f} s"
    return True, "ok"
