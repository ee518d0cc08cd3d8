"""The MQTT client: wraps paho (does not subclass it), listens to the controller, commands it.

- The last will (``offline``) is set before connecting; ``offline`` is also published before a
  clean disconnect, because the broker sends no will then.
- ``connect_async`` + ``loop_start`` with ``reconnect_delay_set``: the appliance starts and keeps
  working (REST, stream, button) while the broker is away.
- Subscriptions, discovery and every retained state are (re)published in ``on_connect``, so a
  reconnect or a broker restart restores everything; likewise when HA announces ``online``.
  Retained state is QoS 0 so nothing stale is re-sent after a reconnect.
- Commands go to a ``CommandMailbox`` that coalesces them (the last wanted camera state wins; one
  snapshot, one republish at a time) and carries them out on its own thread: switching the camera
  takes a moment and must not stall paho's network loop, and no flood can queue work without bound.
- Retained messages on command topics are ignored: a command is obeyed when it is sent, never again
  when the broker replays it on every reconnect.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from appliance.capture.picture import PictureControl, PictureSettingsError
from appliance.config import SENSITIVITY, ConfigError, MotionSettings, MqttSettings, PictureSettings
from appliance.motion.control import MotionControl, MotionSettingsError
from appliance.motion.events import EventChange
from appliance.mqtt.commands import CommandMailbox
from appliance.mqtt.discovery import camera_attributes, device_block, discovery_configs, picture_state
from appliance.mqtt.topics import Topics
from appliance.state import CameraState, StateChange

if TYPE_CHECKING:
    from appliance.arming.control import ArmControl, ArmedState
    from appliance.controller import CameraController
    from appliance.detection.objects import ObjectNews
    from appliance.notify.service import Notifier

log = logging.getLogger(__name__)


def read_password(settings: MqttSettings) -> str | None:
    """The password from the config (or its env override), else from ``password_file``."""
    if settings.password is not None:
        return settings.password.get_secret_value()
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file = {str(settings.password_file)!r}: cannot read it: "
                              f"{exc.strerror or exc}") from exc
    return None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class MqttBridge:
    """Connects the controller to a broker and to Home Assistant."""

    def __init__(self, settings: MqttSettings, controller: CameraController,
                 name: str, model: str, page_port: Callable[[], int], snapshot: Callable[[], bytes | None],
                 stats: Callable[[], dict[str, Any]], hostname: str | None = None,
                 motion: MotionControl | None = None, public_url: str | None = None, clips: str | None = None,
                 picture: PictureControl | None = None, recording: bool = False,
                 objects: tuple[str, ...] = (), arming: ArmControl | None = None,
                 notifier: Notifier | None = None) -> None:
        if not settings.host:
            raise ValueError("mqtt.host is not set")
        self._settings = settings
        self._controller = controller
        self._snapshot = snapshot
        self._stats = stats
        self._motion = motion
        self._picture = picture
        self._name = name
        self._model = model
        self._page_port = page_port
        self._public_url = public_url
        self._clips = clips  # the format of event clips (mp4, mjpeg), None without clips
        self._recording = recording
        self._objects = objects  # the labels object detection alerts on
        self._arming = arming
        self._notifier = notifier
        self._last_result: dict[str, Any] | None = None
        self._object_counts: dict[str, int] = dict.fromkeys(objects, 0)
        self.topics = Topics.from_settings(settings, hostname)
        # Unique per process: two Pis that share a host name must not throw each other off the broker.
        client_id = settings.client_id or f"camera-appliance-{self.topics.device_id}-{secrets.token_hex(4)}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.commands = CommandMailbox(
            switch=lambda on: controller.on(source="mqtt") if on else controller.off(source="mqtt"),
            wanted_on=lambda: controller.wanted_on, snapshot=self._take_snapshot, republish=self.publish_all,
            camera_interval=settings.command_interval, snapshot_interval=settings.snapshot_interval)
        self._counts = threading.Condition()  # guards the two counters below, for tests to wait on
        self._camera_lock = threading.Lock()
        self._camera_seq = -1  # the newest state change published
        self.retained_ignored = 0
        self.commands_received = 0  # camera commands taken from the broker (tests sync on it)
        self.last_command: str | None = None
        self.connects = 0  # successful connections: more than one means messages in flight may be lost
        self.disconnects = 0  # connections lost (their reconnection may not have happened yet)
        self._stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker acknowledged the command subscriptions
        self._subscribe_mid: int | None = None
        self._motion_active = False
        self._configure_client()

    # --- set-up --------------------------------------------------------------------------------

    def _configure_client(self) -> None:
        settings, client, topics = self._settings, self._client, self.topics
        password = read_password(settings)
        if settings.username:
            client.username_pw_set(settings.username, password)
        if settings.tls.enabled:
            client.tls_set(ca_certs=str(settings.tls.ca_file) if settings.tls.ca_file else None,
                           certfile=str(settings.tls.cert_file) if settings.tls.cert_file else None,
                           keyfile=str(settings.tls.key_file) if settings.tls.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(settings.tls.insecure)
        client.will_set(topics.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=settings.reconnect_min,
                                   max_delay=max(settings.reconnect_min, settings.reconnect_max))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.message_callback_add(topics.camera_set, self._on_camera_set)
        client.message_callback_add(topics.snapshot_set, self._on_snapshot_set)
        client.message_callback_add(topics.ha_status, self._on_ha_status)
        client.message_callback_add(topics.motion_detection_set, self._on_detection_set)
        client.message_callback_add(topics.motion_sensitivity_set, self._on_sensitivity_set)
        client.message_callback_add(topics.picture_set_all, self._on_picture_set)
        client.message_callback_add(topics.arming_set, self._on_arming_set)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected and the command topics are subscribed (the broker acknowledged them):
        a command sent from then on is heard."""
        deadline = time.monotonic() + timeout
        return self._connected.wait(timeout) and self._subscribed.wait(max(0.0, deadline - time.monotonic()))

    def start(self) -> None:
        """Listen to the controller and connect in the background; never blocks on the broker."""
        self._controller.add_listener(self._on_state)
        self._controller.add_motion_listener(self._on_motion)
        if self._objects:
            self._controller.add_object_listener(self.on_objects)
        if self._arming is not None:
            self._arming.add_listener(self._publish_arming)
        if self._notifier is not None:
            self._notifier.add_result_listener(self._publish_result)
        if self._motion is not None:
            self._motion.add_listener(self._publish_motion_settings)
        if self._picture is not None:
            self._picture.add_listener(self._publish_picture)
        self._client.connect_async(self._settings.host, self._settings.port, keepalive=self._settings.keepalive)
        self._client.loop_start()
        self.commands.start()
        self._stats_thread = threading.Thread(target=self._stats_loop, name="mqtt-stats", daemon=True)
        self._stats_thread.start()
        log.info("MQTT: connecting to %s:%d as %s (topics under %s)", self._settings.host, self._settings.port,
                 self.topics.device_id, self.topics.prefix)

    def stop(self) -> None:
        """Say ``offline`` (the broker sends no will on a clean disconnect), then disconnect."""
        self._stop.set()
        self._controller.remove_listener(self._on_state)
        self._controller.remove_motion_listener(self._on_motion)
        if self._motion is not None:
            self._motion.remove_listener(self._publish_motion_settings)
        if self._picture is not None:
            self._picture.remove_listener(self._publish_picture)
        self.commands.close(timeout=0.5)  # a camera start in flight is cut short by the controller's shutdown
        if self._connected.is_set():
            info = self._client.publish(self.topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=0.5)
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish offline: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        if self._stats_thread is not None:
            self._stats_thread.join(0.5)

    # --- connection ----------------------------------------------------------------------------

    def _configuration_url(self) -> str:
        """The page's address: ``server.public_url`` when set, else as the broker's network sees this
        device (its address on the route towards the broker)."""
        if self._public_url:
            return self._public_url + "/"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((self._settings.host, self._settings.port))
                address = probe.getsockname()[0]
        except OSError:
            address = socket.gethostname()
        return f"http://{address}:{self._page_port()}/"

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            # Not connected: paho keeps retrying with backoff. Do not pretend otherwise.
            log.error("MQTT: broker refused the connection: %s", reason)
            return
        log.info("MQTT: connected to %s:%d", self._settings.host, self._settings.port)
        with self._counts:
            self.connects += 1
        topics = self.topics
        self._subscribed.clear()
        _, self._subscribe_mid = client.subscribe(
            [(topics.camera_set, 1), (topics.snapshot_set, 1), (topics.ha_status, 1),
             (topics.motion_detection_set, 1), (topics.motion_sensitivity_set, 1), (topics.picture_set_all, 1),
             (topics.arming_set, 1)])
        self._connected.set()
        self.publish_all()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, _reasons: Any, _props: Any) -> None:
        if mid == self._subscribe_mid:
            self._subscribed.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        self._subscribed.clear()
        with self._counts:
            self.disconnects += 1
        if not self._stop.is_set():
            log.warning("MQTT: disconnected (%s); reconnecting with backoff", reason)

    def publish_all(self) -> None:
        """Discovery plus every retained state: after each connect and each HA restart."""
        topics = self.topics
        self._publish(topics.availability, "online", retain=True)
        if self._settings.discovery:
            device = device_block(topics, self._settings.device_name or self._name, self._model,
                                  self._configuration_url())
            offered = ({name: control.public() for name, control in self._picture.offered().items()}
                       if self._picture is not None else None)
            for topic, payload in discovery_configs(topics, device, offered, recording=self._recording,
                                                    objects=self._objects, notify=self._notifier is not None).items():
                self._publish(topic, json.dumps(payload), retain=True)
        self._publish_camera(self._controller.latest_change())
        self._publish(topics.motion_state, "ON" if self._motion_active else "OFF", retain=True)
        for label, count in dict(self._object_counts).items():
            self._publish(topics.object_count(label), str(count), retain=True)
        if self._arming is not None:
            self._publish_arming(self._arming.state())
        if self._last_result is not None:
            self._publish(topics.notify_state, json.dumps(self._last_result), retain=True)
        if self._motion is not None:
            self._publish_motion_settings(self._motion.settings)
        if self._picture is not None:
            self._publish_picture(self._picture.settings, self._picture.night_active)
        self._publish_stats()

    def _publish_motion_settings(self, settings: MotionSettings) -> None:
        """Detection on/off and the sensitivity, retained: HA's switch and select show them."""
        if not self._connected.is_set():
            return  # publish_all sends them after the next connect
        self._publish(self.topics.motion_detection, "ON" if settings.enabled else "OFF", retain=True)
        self._publish(self.topics.motion_sensitivity, settings.sensitivity, retain=True)

    def _publish_picture(self, settings: PictureSettings, night_active: bool) -> None:
        """Controls, night mode and whether it is on now, retained: HA's numbers, selects and sensor."""
        if self._connected.is_set():
            body = picture_state(dict(settings.controls), settings.night_mode, night_active)
            self._publish(self.topics.picture_state, json.dumps(body), retain=True)

    def _on_picture_set(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """``picture/<name>/set``: a control's value, or ``night_mode``; anything invalid is logged."""
        if self._picture is None or self._ignore_retained(message):
            return
        name = message.topic.removeprefix(self.topics.prefix + "/picture/").removesuffix("/set")
        try:
            text = message.payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = ""
        if name == "night_mode":
            changes: dict[str, Any] = {"night_mode": text.lower()}
        else:
            control = self._picture.offered().get(name)
            value: Any = text
            if control is not None and not control.choices:
                try:
                    value = float(text)
                except ValueError:
                    log.warning("MQTT: ignoring %s payload %r: expected a number", message.topic, text[:64])
                    return
            changes = {"controls": {name: value}}
        try:
            self._picture.update(changes)  # a durable write of a few hundred bytes, on paho's thread
        except (PictureSettingsError, OSError) as exc:
            log.warning("MQTT: could not apply %s from %s: %s", changes, message.topic, exc)

    def _publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        # Retained state goes out at QoS 0: every connect republishes all of it, and paho re-sends
        # QoS 1 messages left in flight by a dead connection *after* those fresh ones, which would
        # put a stale state back. Events are not retained, so they take QoS 1 and survive a blip.
        qos = 0 if retain else 1
        result = self._client.publish(topic, payload, qos=qos, retain=retain)
        if result.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("MQTT: publishing to %s failed: %s", topic, mqtt.error_string(result.rc))

    # --- outgoing: controller listeners --------------------------------------------------------

    def _publish_camera(self, change: StateChange) -> None:
        """One state change, in order. A republish after a reconnect (paho's thread) and the changes
        (the dispatcher's) may race: under one lock, a change older than one already sent is dropped,
        so the last retained state is always the newest, and every transition is still sent."""
        with self._camera_lock:
            if change.seq < self._camera_seq:
                return
            self._camera_seq = change.seq
            topics = self.topics
            self._publish(topics.camera_state, "ON" if change.wanted_on else "OFF", retain=True)
            self._publish(topics.camera_status, change.state.value, retain=True)
            self._publish(topics.camera_problem, "ON" if change.state == CameraState.ERROR else "OFF", retain=True)
            self._publish(topics.camera_attributes, json.dumps(camera_attributes(change.state, change.error)),
                          retain=True)

    def _on_state(self, change: StateChange) -> None:
        if self._connected.is_set():
            self._publish_camera(change)

    def _on_motion(self, change: EventChange, jpeg: bytes | None) -> None:
        event = change.event
        self._motion_active = change.kind == "start"
        if not self._connected.is_set():
            return
        topics = self.topics
        body = {
            "id": event.id,
            "type": change.kind,
            "time": iso(event.started_at if change.kind == "start" else event.ended_at or time.time()),
            "started_at": iso(event.started_at),
            "ended_at": iso(event.ended_at) if event.ended_at else None,
            "box": event.box.as_dict() if event.box else None,
            "area": round(event.peak_area, 4),
            "score": round(event.peak_score, 4),
        }
        if self._clips:  # the clip is being recorded from the start: its address holds from now on
            base = self._configuration_url().rstrip("/")
            body["clip"] = f"{base}/api/events/{event.id}/clip.mp4" if self._clips == "mp4" \
                else f"{base}/api/events/{event.id}/clip.mjpg"
            body["clip_download"] = f"{base}/api/events/{event.id}/clip"
        if jpeg is not None:
            self._publish(topics.snapshot, jpeg, retain=True)
        self._publish(topics.motion_state, "ON" if change.kind == "start" else "OFF", retain=True)
        self._publish(topics.motion_event, json.dumps(body))

    def on_objects(self, news: ObjectNews) -> None:
        """Counts per label as they change; for an object that alerts, its message and best picture."""
        changed = {label: count for label, count in news.counts.items()
                   if label in self._object_counts and self._object_counts[label] != count}
        self._object_counts.update(changed)
        if not self._connected.is_set():
            return
        for label, count in changed.items():
            self._publish(self.topics.object_count(label), str(count), retain=True)
        if news.kind != "alert":
            return
        base = self._configuration_url().rstrip("/")
        body = {**news.as_dict(), "time": iso(news.at), "event": None, "snapshot": None}
        if news.event_id is not None:
            body["event"] = f"{base}/api/events/{news.event_id}"
            body["snapshot"] = f"{base}/api/events/{news.event_id}/snapshot.jpg"
        if news.jpeg is not None:
            self._publish(self.topics.object_snapshot(news.label), news.jpeg, retain=True)
        self._publish(self.topics.object_event, json.dumps(body))

    def _publish_arming(self, state: ArmedState) -> None:
        if self._connected.is_set():
            self._publish(self.topics.arming_state, "ON" if state.armed else "OFF", retain=True)
            self._publish(self.topics.arming_attributes, json.dumps({"reason": state.reason, "until": state.until}),
                          retain=True)

    def _publish_result(self, target: str, result: dict[str, Any]) -> None:
        self._last_result = {"target": target, **result}
        if self._connected.is_set():
            self._publish(self.topics.notify_state, json.dumps(self._last_result), retain=True)

    def _on_arming_set(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        command = self._command(message, ("ON", "OFF"))
        if command is None or self._arming is None:
            return
        try:
            self._arming.set(command == "ON", source="mqtt")
        except OSError as exc:
            log.error("MQTT: cannot keep the arming: %s", exc)

    def _publish_stats(self) -> None:
        self._publish(self.topics.stats, json.dumps(self._stats()), retain=True)

    def publish_stats(self) -> None:
        """Now rather than at the next interval (a recording fault came or went); any thread."""
        if self._connected.is_set():
            self._publish_stats()

    def _stats_loop(self) -> None:
        while not self._stop.wait(self._settings.stats_interval):
            if self._connected.is_set():
                self._publish_stats()

    # --- incoming: commands --------------------------------------------------------------------

    def _ignore_retained(self, message: mqtt.MQTTMessage) -> bool:
        """A retained command is the broker replaying an old one: never obey it (logged once per topic)."""
        if not message.retain:
            return False
        with self._counts:
            self.retained_ignored += 1
            first = self.retained_ignored == 1
            self._counts.notify_all()
        (log.warning if first else log.debug)(
            "MQTT: ignoring a retained message on %s: commands are obeyed when sent, not replayed; "
            "clear it with: mosquitto_pub -r -n -t %s", message.topic, message.topic)
        return True

    def wait_commands_received(self, count: int, timeout: float) -> bool:
        """Block until ``count`` camera commands have come from the broker (tests)."""
        with self._counts:
            return self._counts.wait_for(lambda: self.commands_received >= count, timeout)

    def wait_last_command(self, command: str, timeout: float) -> bool:
        """Block until the newest camera command taken is ``command`` (tests)."""
        with self._counts:
            return self._counts.wait_for(lambda: self.last_command == command, timeout)

    def wait_retained_ignored(self, count: int, timeout: float) -> bool:
        """Block until ``count`` retained commands have been ignored (tests)."""
        with self._counts:
            return self._counts.wait_for(lambda: self.retained_ignored >= count, timeout)

    def _on_camera_set(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        command = self._command(message, ("ON", "OFF", "TOGGLE"))
        if command is None:
            return
        self.commands.camera(command)
        with self._counts:
            self.commands_received += 1
            self.last_command = command
            self._counts.notify_all()

    def _on_snapshot_set(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._ignore_retained(message):
            self.commands.snapshot()

    def _on_detection_set(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        command = self._command(message, ("ON", "OFF"))
        if command is not None and self._motion is not None:
            self._change_motion({"enabled": command == "ON"}, message.topic)

    def _on_sensitivity_set(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        command = self._command(message, tuple(name.upper() for name in SENSITIVITY))
        if command is not None and self._motion is not None:
            self._change_motion({"sensitivity": command.lower()}, message.topic)

    def _command(self, message: mqtt.MQTTMessage, accepted: tuple[str, ...]) -> str | None:
        """The upper-cased payload if it is one of ``accepted`` and not a retained replay; else logged, None."""
        if self._ignore_retained(message):
            return None
        try:
            command = message.payload.decode("utf-8").strip().upper()
        except UnicodeDecodeError:
            command = ""
        if command not in accepted:
            log.warning("MQTT: ignoring %s payload %r: expected %s", message.topic, message.payload[:64],
                        ", ".join(accepted))
            return None
        return command

    def _change_motion(self, changes: dict[str, Any], topic: str) -> None:
        assert self._motion is not None
        try:
            self._motion.update(changes)  # a durable write of a few hundred bytes, on paho's thread
        except (MotionSettingsError, OSError) as exc:
            log.warning("MQTT: could not apply %s from %s: %s", changes, topic, exc)

    def _take_snapshot(self) -> None:
        jpeg = self._snapshot()
        if jpeg is None:
            log.warning("MQTT: snapshot requested but the camera is %s", self._controller.state.value)
            return
        self.publish_snapshot(jpeg)

    def publish_snapshot(self, jpeg: bytes) -> None:
        """Send a JPEG to the snapshot topic (HA's camera entity); dropped while disconnected."""
        if self._connected.is_set():
            self._publish(self.topics.snapshot, jpeg, retain=True)

    def _on_ha_status(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload.strip().lower() == b"online":
            log.info("MQTT: Home Assistant came online; republishing discovery and states")
            self.commands.republish()
