"""One definition of "healthy", shared by /healthz and the systemd watchdog."""

from __future__ import annotations

from appliance.controller import CameraController, CameraState


def capture_health(controller: CameraController, read_timeout: float) -> tuple[bool, str]:
    """Healthy unless the camera should be running and its capture loop is dead or stuck.

    A camera in ``error`` is healthy here as long as its loop is alive and retrying: restarting the
    process would not bring back an unplugged camera, but it does fix a hung loop.
    """
    pipeline = controller.pipeline
    if not controller.wanted_on:
        return True, "ok"
    if not pipeline.is_alive():
        return False, "capture thread is not running"
    if controller.state == CameraState.ON:
        age = pipeline.stats().last_frame_age
        if age is not None and age > read_timeout + 2.0:
            return False, f"no frame for {age:.1f} s"
    return True, "ok"
