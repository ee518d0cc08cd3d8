"""Notifications through Apprise to real receivers on loopback, triggered by the demo scene's motion.

The receivers are real servers: aiosmtpd takes the mail (with a login), an HTTP server takes Apprise's
``json://`` web hook, mosquitto takes the ``mqtt://`` message; others accept and never answer, or
refuse. The appliance runs in-process on a SceneCamera whose square moves when the test says.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.config import ConfigError, load_config
from appliance.runtime import Appliance
from tests.broker import Broker, Recorder
from tests.helpers import (
    CountingCamera,
    decode_jpeg,
    make_config,
    next_motion,
    start_scene,
    stream_rate_and_api_latency,
)
from tests.notify_receivers import Mailbox, WebHook, closed_port, stalling_server
from tests.test_mqtt import broker, broker_dir  # noqa: F401  (fixtures)

MAIL_PASSWORD = "mail-S3cret-pa55"
HOOK_TOKEN = "hookTOKEN4242abcd"
MQTT_PASSWORD = "mqtt-S3cret-w0rd"
SECRETS = (MAIL_PASSWORD, HOOK_TOKEN, MQTT_PASSWORD)

pytestmark = [pytest.mark.notify]


def mail_url(box: Mailbox) -> str:
    return (f"mailto://camera:{MAIL_PASSWORD}@127.0.0.1:{box.port}?mode=insecure"
            "&from=camera@example.com&to=me@example.com&smtp=127.0.0.1")


def hook_url(port: int, path: str = f"hook/{HOOK_TOKEN}") -> str:
    return f"json://127.0.0.1:{port}/{path}"


class Results:
    """Every send's result as the notifier reports it, for a test to wait on."""

    def __init__(self, app: Any) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        app.notifier.add_result_listener(self._hear)

    def _hear(self, name: str, result: dict[str, Any]) -> None:
        with self._cond:
            self.seen.append((name, result))
            self._cond.notify_all()

    def wait(self, check: Any, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: check(self.seen), timeout)


def target(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "cooldown": 0, **extra}


def motion(app: Any, camera: Any, feed: Any) -> dict[str, Any]:
    """The square moves until an event starts, then stops: the event's start record."""
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 20, timeout=10)
    camera.moving.set()
    try:
        return next_motion(feed, "start")
    finally:
        camera.moving.clear()


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_motion_reaches_a_mailbox_a_web_hook_and_mqtt_with_the_snapshot(
        start_appliance: Any, tmp_path: Path, broker: Broker) -> None:  # noqa: F811
    with Mailbox("camera", MAIL_PASSWORD) as box, WebHook() as hook, \
            Recorder(broker.port, ["alerts/#"]) as heard:
        app, camera, feed = start_scene(start_appliance, tmp_path, server={"public_url": "https://cam.example.net"},
                                        notify={"targets": [
                                            target("mail", mail_url(box)), target("hook", hook_url(hook.port)),
                                            target("broker", f"mqtt://127.0.0.1:{broker.port}/alerts/garden",
                                                   attach=False)]})
        results = Results(app)
        event = motion(app, camera, feed)
        mail = box.next()
        assert mail["Subject"] == "Camera appliance: Motion" and mail["To"] == "me@example.com"
        body = mail.get_body(("plain", "html"))
        assert body is not None and f"https://cam.example.net/#event-{event['id']}" in body.get_content()
        (picture,) = [part for part in mail.iter_attachments() if part.get_content_type() == "image/jpeg"]
        assert decode_jpeg(picture.get_content()).shape == (240, 320, 3)  # the event's own snapshot
        posted = hook.next()
        assert posted["path"] == f"/hook/{HOOK_TOKEN}" and posted["title"] == "Camera appliance: Motion"
        (attached,) = posted["attachments"]
        assert attached["mimetype"] == "image/jpeg"
        assert decode_jpeg(base64.b64decode(attached["base64"])).shape == (240, 320, 3)
        message = heard.wait_for("alerts/garden", timeout=30).payload.decode()
        assert "Motion at" in message and event["id"] in message
        assert results.wait(lambda seen: len(seen) == 3)
        status = requests.get(app.url + "/api/notify", timeout=5).json()
        assert {t["name"]: t["sent"] for t in status["targets"]} == {"mail": 1, "hook": 1, "broker": 1}
        assert all(t["last"]["ok"] for t in status["targets"])


@pytest.mark.timeout(180)
def test_a_service_that_hangs_or_refuses_slows_nothing_and_the_others_still_hear(start_appliance: Any,
                                                                              tmp_path: Path) -> None:
    measured = {}
    with WebHook() as hook, stalling_server() as stalled:
        for bad in (False, True):
            targets = [target("good", hook_url(hook.port))]
            if bad:
                targets += [target("hangs", hook_url(stalled, "x")), target("refuses", hook_url(closed_port(), "y"))]
            app, camera, _feed = start_scene(start_appliance, tmp_path / str(bad),
                                            notify={"targets": targets, "queue": 3, "timeout": 2, "retries": 1,
                                                    "retry_delay": 0.5})
            camera.moving.set()  # events one after another, each told to every target
            measured[bad] = stream_rate_and_api_latency(app, 8)
            camera.moving.clear()
            if bad:
                status = {t["name"]: t for t in requests.get(app.url + "/api/notify", timeout=5).json()["targets"]}
                assert status["hangs"]["queued"] <= 3 and status["refuses"]["queued"] <= 3  # bounded
                assert status["good"]["sent"] >= 1 and status["good"]["last"]["ok"]  # the good one still hears
                assert status["refuses"]["last"]["ok"] is False
            while not hook.bodies.empty():
                hook.next()
            app.stop()
    (rate_off, api_off), (rate_on, api_on) = measured[False], measured[True]
    assert rate_on >= 0.9 * rate_off, measured
    assert api_on <= max(1.1 * api_off, api_off + 0.002), measured


@pytest.mark.timeout(150)
def test_a_minute_of_motion_sends_one_message_per_cooldown(start_appliance: Any, tmp_path: Path) -> None:
    with WebHook() as hook:
        app, camera, feed = start_scene(start_appliance, tmp_path, motion={"max_event_seconds": 10},
                                        notify={"targets": [target("hook", hook_url(hook.port), cooldown=25)]})
        camera.moving.set()  # a minute of wind: an event every 10 s (their longest)
        started = time.monotonic()
        starts = []
        while time.monotonic() - started < 60:
            starts.append(next_motion(feed, "start", timeout=15))
        camera.moving.clear()
        sent = []
        while not hook.bodies.empty():
            sent.append(hook.next())
        assert len(starts) >= 6
        assert 2 <= len(sent) <= 3, [s["message"] for s in sent]  # one per 25 s, not one per event
        assert "more since" in sent[1]["message"]  # the ones held back are summed up
        held = requests.get(app.url + "/api/notify", timeout=5).json()["targets"][0]["held"]
        assert held == len(starts) - len(sent)


class Clock:
    """The appliance's wall clock, set by the test (arming's schedule reads it)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(120)
def test_the_schedule_decides_who_hears_and_by_hand_lasts_until_its_next_change(start_appliance: Any,
                                                                                tmp_path: Path) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    def at(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo("Europe/Berlin")).timestamp()

    clock = Clock(at("2026-12-07 14:00"))  # a Monday afternoon: not armed
    with WebHook() as hook:
        app, camera, feed = start_scene(
            start_appliance, tmp_path, parts={"clock": clock},
            arming={"timezone": "Europe/Berlin", "schedule": [{"days": ["mon"], "start": "22:00", "end": "06:30"}]},
            notify={"targets": [target("hook", hook_url(hook.port))]})
        assert requests.get(app.url + "/api/arming", timeout=5).json() == {
            "armed": False, "reason": "schedule", "until": at("2026-12-07 22:00")}
        motion(app, camera, feed)
        next_motion(feed, "end")
        clock.now = at("2026-12-07 23:15")  # that night: armed
        event = motion(app, camera, feed)
        assert event["id"] in hook.next()["message"]
        assert hook.bodies.empty()  # the afternoon's event told nobody
        next_motion(feed, "end")
        # Disarmed by hand: until the schedule's next change (06:30), then the schedule again.
        answer = requests.put(app.url + "/api/arming", json={"armed": False}, timeout=5).json()
        assert answer == {"armed": False, "reason": "manual until Tue 06:30", "until": at("2026-12-08 06:30")}
        motion(app, camera, feed)
        next_motion(feed, "end")
        assert hook.bodies.empty()
        clock.now = at("2026-12-14 22:30")  # a week on, armed by the schedule again
        assert requests.get(app.url + "/api/arming", timeout=5).json()["reason"] == "schedule"
        event = motion(app, camera, feed)
        assert event["id"] in hook.next()["message"]
        assert requests.put(app.url + "/api/arming", json={"armed": "yes"}, timeout=5).status_code == 400


@pytest.mark.timeout(120)
def test_a_secret_in_a_url_reaches_no_log_status_or_error(start_appliance: Any, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / "mail.url"
    with Mailbox("camera", "another-password") as box, WebHook() as hook:  # the mail login fails: logged
        secret_file.write_text(mail_url(box))
        app, camera, feed = start_scene(start_appliance, tmp_path, notify={"targets": [
            {"name": "mail", "url_file": str(secret_file), "cooldown": 0},
            target("refuses", hook_url(closed_port())), target("hook", hook_url(hook.port))],
            "retries": 1, "retry_delay": 0.2, "timeout": 3})
        results = Results(app)
        motion(app, camera, feed)
        hook.next()
        requests.post(app.url + "/api/notify/test", timeout=5).raise_for_status()
        # Until both failing targets have given up on both messages (each send's result is reported).
        assert results.wait(lambda seen: sum(1 for name, r in seen if name != "hook" and not r["ok"]) >= 4, 60)
        status = requests.get(app.url + "/api/notify", timeout=5).json()["targets"]
        assert all(t["failed"] >= 2 for t in status if t["name"] != "hook"), status
        assert any(t["last"]["error"] for t in status)
        seen = caplog.text + json.dumps(status) + requests.get(app.url + "/api/status", timeout=5).text
        assert "failed" in caplog.text  # the failures were logged ...
        for secret in SECRETS:
            assert secret not in seen  # ... without any secret
    # A URL Apprise cannot use stops start-up naming the target, not the URL.
    with pytest.raises(ConfigError) as refused:
        Appliance(make_config(tmp_path / "bad", notify={"targets": [target("odd", f"nosuch://{HOOK_TOKEN}@x")]}))
    assert "notify.targets.0 (odd)" in str(refused.value) and HOOK_TOKEN not in str(refused.value)
    with pytest.raises(ConfigError, match=r"notify.targets.0.url_env = 'NO_SUCH_VARIABLE'"):
        Appliance(make_config(tmp_path / "env", notify={"targets": [{"name": "x", "url_env": "NO_SUCH_VARIABLE"}]}))
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"notify": {"targets": [{"name": "x", "url": hook_url(1), "url_env": "X"}]}}))
    with pytest.raises(ConfigError) as echoed:
        load_config(config, environ={})
    assert "exactly one of url, url_file and url_env" in str(echoed.value) and HOOK_TOKEN not in str(echoed.value)


@pytest.mark.timeout(60)
def test_send_a_test_and_the_api_s_answers(start_appliance: Any, tmp_path: Path) -> None:
    with WebHook() as hook:
        app = start_appliance(notify={"targets": [target("hook", hook_url(hook.port))]})
        answer = requests.post(app.url + "/api/notify/test", json={"target": "hook"}, timeout=5)
        assert answer.status_code == 202 and answer.json() == {"queued": ["hook"]}
        assert hook.next()["title"] == "Camera appliance: Test message"
        assert requests.post(app.url + "/api/notify/test", json={"target": "nope"}, timeout=5).status_code == 404
        assert requests.post(app.url + "/api/notify/test", json={"to": 1}, timeout=5).status_code == 400
    bare = start_appliance()
    assert requests.post(bare.url + "/api/notify/test", timeout=5).status_code == 409
    assert requests.get(bare.url + "/api/notify", timeout=5).json() == {"enabled": False, "targets": []}


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_home_assistant_arms_by_mqtt_and_sees_the_last_result(start_appliance: Any,
                                                              broker: Broker) -> None:  # noqa: F811
    prefix = "appliance/porch"
    with WebHook() as hook, Recorder(broker.port, [f"{prefix}/arming/#", f"{prefix}/notify/#",
                                                   "homeassistant/switch/porch/armed/config"]) as heard:
        app = start_appliance(mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "porch"},
                              notify={"targets": [target("hook", hook_url(hook.port))]})
        assert app.mqtt is not None and app.mqtt.wait_connected(10)
        config = json.loads(heard.wait_for("homeassistant/switch/porch/armed/config").payload)
        assert config["command_topic"] == f"{prefix}/arming/set" and config["name"] == "Armed"
        heard.wait_for(f"{prefix}/arming/state", lambda payload: payload == b"ON")
        heard.publish(f"{prefix}/arming/set", "off")
        heard.wait_for(f"{prefix}/arming/state", lambda payload: payload == b"OFF")
        attributes = json.loads(heard.wait_for(f"{prefix}/arming/attributes",
                                               lambda payload: b"manual" in payload).payload)
        assert attributes == {"reason": "manual", "until": None} and app.arming.state().armed is False
        heard.publish(f"{prefix}/arming/set", "maybe")  # logged and ignored
        requests.post(app.url + "/api/notify/test", timeout=5).raise_for_status()
        result = json.loads(heard.wait_for(f"{prefix}/notify/state").payload)
        assert result["target"] == "hook" and result["ok"] is True and result["kind"] == "test"
        assert app.arming.state().armed is False


@pytest.mark.timeout(90)
def test_an_events_end_brings_its_clip_and_faults_are_told_armed_or_not(start_appliance: Any,
                                                                       tmp_path: Path) -> None:
    with WebHook() as hook:
        app, camera, feed = start_scene(start_appliance, tmp_path, notify={"targets": [
            target("hook", hook_url(hook.port), events=["start", "end", "fault", "back"])]})
        event = motion(app, camera, feed)
        assert hook.next()["title"] == "Camera appliance: Motion"
        next_motion(feed, "end")
        ended = hook.next()
        assert ended["title"] == "Camera appliance: Motion ended"
        assert f"/api/events/{event['id']}/clip.mp4" in ended["message"] and not ended.get("attachments")
    with WebHook() as hook:
        camera = CountingCamera(make_config(tmp_path).camera)
        app = start_appliance(backend=camera, notify={"targets": [
            target("hook", hook_url(hook.port), events=["fault", "back"])]})
        requests.put(app.url + "/api/arming", json={"armed": False}, timeout=5).raise_for_status()
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        camera.broken.set()  # unplugged
        fault = hook.next()
        assert fault["title"] == "Camera appliance: Camera fault: device unplugged (test)"  # disarmed or not
        camera.broken.clear()
        assert hook.next()["title"] == "Camera appliance: Camera back"
        assert hook.bodies.empty()  # one fault, one recovery: the retries in between are not news


@pytest.mark.timeout(60)
def test_events_that_start_disarmed_are_not_kept_when_so_set(start_appliance: Any, tmp_path: Path) -> None:
    app, camera, feed = start_scene(start_appliance, tmp_path, arming={"keep_disarmed_events": False})
    requests.put(app.url + "/api/arming", json={"armed": False}, timeout=5).raise_for_status()
    motion(app, camera, feed)
    assert next_motion(feed, "deleted")["armed"] is False  # its end: gone, and the page is told
    assert app.events.count() == 0
    requests.put(app.url + "/api/arming", json={"armed": True}, timeout=5).raise_for_status()
    kept = motion(app, camera, feed)
    assert kept["armed"] is True
    next_motion(feed, "end")
    app.recorder.flush()
    assert [event["id"] for event in app.events.list()[0]] == [kept["id"]]


@pytest.mark.timeout(60)
def test_the_demo_cameras_own_motion_notifies(start_appliance: Any) -> None:
    """The demo camera (what a newcomer sees first): its objects move 3 s of every 6, each time an event."""
    with WebHook() as hook:
        app = start_appliance(camera={"synthetic": {"objects": 3, "motion_period": 6, "motion_duration": 3}},
                              notify={"targets": [target("hook", hook_url(hook.port))]})
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        posted = hook.next(timeout=30)
        assert posted["title"] == "Camera appliance: Motion" and "#event-" in posted["message"]
        (attached,) = posted["attachments"]
        assert decode_jpeg(base64.b64decode(attached["base64"])).shape == (240, 320, 3)
