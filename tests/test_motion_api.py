"""Motion settings at run time over the real server: on/off, sensitivity, zones, kept across restarts."""

from __future__ import annotations

from typing import Any

import requests

from appliance.runtime import Appliance
from tests.helpers import make_config


def put(app: Appliance, body: Any, **kwargs: Any) -> requests.Response:
    return requests.put(app.url + "/api/motion", json=body, timeout=10, **kwargs)


def test_defaults_are_reported(start_appliance: Any) -> None:
    app = start_appliance()
    body = requests.get(app.url + "/api/motion", timeout=5).json()
    assert body["enabled"] is True and body["sensitivity"] == "medium" and body["threshold"] == 20
    assert body["levels"] == {"low": 32, "medium": 20, "high": 12} and body["zones"] == []


def test_pausing_detection_takes_effect_on_the_next_frame(start_appliance: Any) -> None:
    app = start_appliance()
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 5, timeout=10)
    assert put(app, {"enabled": False}).json()["enabled"] is False
    captured = app.pipeline.stats().frames_captured
    assert app.pipeline.wait_for_frames(captured + 2, timeout=10)  # the frame in flight may still count
    analysed = app.pipeline.stats().frames_analysed
    assert app.pipeline.wait_for_frames(captured + 12, timeout=10)
    assert app.pipeline.stats().frames_analysed == analysed
    put(app, {"enabled": True}).raise_for_status()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 6, timeout=10)
    assert app.pipeline.stats().frames_analysed > analysed


def test_pausing_ends_an_event_in_progress(start_appliance: Any) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 3, "motion_period": 60, "motion_duration": 60}},
                          motion={"warmup_frames": 3, "start_frames": 2})
    heard: list[str] = []
    app.controller.add_motion_listener(lambda change, jpeg: heard.append(change.kind))
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    assert app.pipeline.wait_for_frames(40, timeout=15)
    assert app.controller.flush() and heard == ["start"]
    put(app, {"enabled": False}).raise_for_status()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 3, timeout=10)
    assert app.controller.flush() and heard == ["start", "end"]


def test_sensitivity_and_zones_are_validated_all_or_nothing(start_appliance: Any) -> None:
    app = start_appliance()
    assert put(app, {"sensitivity": "high"}).json()["threshold"] == 12
    assert put(app, {"threshold": 40}).json()["sensitivity"] == "custom"
    zone = {"name": "road", "mode": "exclude", "points": [[0, 0.6], [1, 0.6], [1, 1]], "labels": []}
    assert put(app, {"zones": [zone]}).json()["zones"] == [zone]
    bad = [
        ({"sensitivity": "max"}, "'sensitivity' must be one of low, medium, high"),
        ({"zones": [{"points": [[0, 0], [2, 0], [0, 1]]}], "enabled": False}, "outside the frame"),
        ({"zones": [{"points": [[0, 0], [1, 0]]}]}, "zones.0.points"),
        ({"zones": [{"mode": "ignore", "points": [[0, 0], [1, 0], [0, 1]]}]}, "zones.0.mode"),
        ({"enabled": "no"}, "'enabled' must be true or false"),
        ({"threshold": 0}, "threshold"),
        ({"fps": 30}, "unknown key(s): fps"),
        ([1, 2], "must be a JSON object"),
    ]
    for body, message in bad:
        response = put(app, body)
        assert response.status_code == 400 and message in response.json()["error"], (body, response.text)
    now = requests.get(app.url + "/api/motion", timeout=5).json()
    assert now["enabled"] is True and now["threshold"] == 40 and now["zones"] == [zone]  # nothing lost
    response = requests.put(app.url + "/api/motion", data='{"enabled": false}', timeout=5,
                            headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_settings_survive_a_restart(tmp_path: Any) -> None:
    zone = {"name": "tree", "mode": "exclude", "points": [[0, 0], [0.3, 0], [0.3, 0.5]], "labels": ["dog"]}
    with Appliance(make_config(tmp_path)) as app:
        put(app, {"enabled": False, "sensitivity": "low", "zones": [zone]}).raise_for_status()
    with Appliance(make_config(tmp_path)) as app:
        body = requests.get(app.url + "/api/motion", timeout=5).json()
        assert body["enabled"] is False and body["sensitivity"] == "low" and body["zones"] == [zone]
        assert app.motion.settings.zones[0].name == "tree"  # what the capture thread reads


def test_a_damaged_settings_file_falls_back_to_the_config(tmp_path: Any) -> None:
    config = make_config(tmp_path)
    state = config.resolved_state_dir()
    state.mkdir(parents=True)
    (state / "motion.json").write_text('{"threshold": "loud"')
    with Appliance(config) as app:
        assert requests.get(app.url + "/api/motion", timeout=5).json()["threshold"] == 20


def test_a_full_card_refuses_the_change_and_keeps_the_old_settings(start_appliance: Any, monkeypatch: Any) -> None:
    """Motion and picture settings alike (both are ``KeptSettings``): nothing half-kept."""
    import errno

    import appliance.durable

    app = start_appliance()

    def full(path: Any, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(appliance.durable, "durable_write", full)
    response = put(app, {"enabled": False})
    assert response.status_code == 503 and "No space left on device" in response.json()["error"]
    assert app.motion.settings.enabled is True
    assert requests.get(app.url + "/api/motion", timeout=5).json()["enabled"] is True
    response = requests.put(app.url + "/api/camera/settings", json={"night_mode": "on"}, timeout=5)
    assert response.status_code == 503 and "could not save the picture settings" in response.json()["error"]
    assert requests.get(app.url + "/api/camera/settings", timeout=5).json()["night_mode"] == "off"
