"""Home Assistant MQTT discovery payloads: pure data, built from the topics and the device.

One config topic per entity, ``<discovery_prefix>/<component>/<device_id>/<object_id>/config``,
which every Home Assistant release with MQTT discovery understands (device-based discovery came
later and also accepts these). All entities share one device block and the availability topic.
"""

from __future__ import annotations

from typing import Any

from appliance import __version__
from appliance.config import SENSITIVITY
from appliance.mqtt.topics import Topics, topic_safe
from appliance.state import CameraState


def camera_attributes(state: CameraState, error: str | None) -> dict[str, Any]:
    """The camera problem sensor's attributes; names Home Assistant does not reserve (``state`` is)."""
    return {"camera_state": state.value, "reason": error}


def device_block(topics: Topics, name: str, model: str, configuration_url: str | None) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [f"camera_appliance_{topics.device_id}"],
        "name": name,
        "manufacturer": "Camera appliance project",
        "model": model,
        "sw_version": __version__,
    }
    if configuration_url:
        device["configuration_url"] = configuration_url
    return device


NIGHT_MODES = ("auto", "on", "off")
OBJECT_ICONS = {"person": "mdi:walk", "car": "mdi:car", "dog": "mdi:dog", "cat": "mdi:cat", "bicycle": "mdi:bicycle",
                "truck": "mdi:truck", "bird": "mdi:bird", "motorcycle": "mdi:motorbike", "bus": "mdi:bus"}


def picture_state(controls: dict[str, Any], night_mode: str, night_active: bool) -> dict[str, Any]:
    """The retained ``picture/state`` body: each control's value, night mode and whether it is on now."""
    return {**controls, "night_mode": night_mode, "night": "ON" if night_active else "OFF"}


def discovery_configs(topics: Topics, device: dict[str, Any],
                      picture: dict[str, dict[str, Any]] | None = None,
                      recording: bool = False, objects: tuple[str, ...] = (),
                      notify: bool = False) -> dict[str, dict[str, Any]]:
    """Map each discovery config topic to its payload. ``picture``: the controls the camera offers, as
    ``Control.public()`` describes them (name: kind, range or choices, default), each an entity.
    ``recording``: continuous recording or timelapses are on: a problem sensor says when their folder fails.
    ``objects``: the labels object detection alerts on: a "Person detected" binary sensor and a count each.
    ``notify``: notification targets are configured: a sensor of the last notification's result."""
    common = {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "camera-appliance", "sw_version": __version__},
    }
    uid = topics.device_id

    def entity(component: str, object_id: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return topics.discovery(component, object_id), {"unique_id": f"{uid}_{object_id}", **fields, **common}

    entities = [
        entity("switch", "camera", name="Camera", icon="mdi:cctv", command_topic=topics.camera_set,
               state_topic=topics.camera_state, payload_on="ON", payload_off="OFF",
               state_on="ON", state_off="OFF"),
        entity("binary_sensor", "motion", name="Motion", device_class="motion",
               state_topic=topics.motion_state, payload_on="ON", payload_off="OFF"),
        entity("binary_sensor", "camera_problem", name="Camera problem", device_class="problem",
               entity_category="diagnostic", state_topic=topics.camera_problem, payload_on="ON",
               payload_off="OFF", json_attributes_topic=topics.camera_attributes),
        entity("sensor", "camera_state", name="Camera state", device_class="enum",
               options=[state.value for state in CameraState], state_topic=topics.camera_status,
               entity_category="diagnostic", icon="mdi:cctv"),
        entity("switch", "motion_detection", name="Motion detection", icon="mdi:motion-sensor",
               entity_category="config", command_topic=topics.motion_detection_set,
               state_topic=topics.motion_detection, payload_on="ON", payload_off="OFF",
               state_on="ON", state_off="OFF"),
        # "custom" is shown when the threshold was set by number (config or API); it cannot be chosen.
        entity("select", "motion_sensitivity", name="Motion sensitivity", icon="mdi:tune-variant",
               entity_category="config", command_topic=topics.motion_sensitivity_set,
               state_topic=topics.motion_sensitivity, options=[*SENSITIVITY, "custom"]),
        entity("camera", "snapshot", name="Snapshot", topic=topics.snapshot),
        entity("button", "take_snapshot", name="Take snapshot", icon="mdi:camera",
               command_topic=topics.snapshot_set, payload_press="PRESS"),
        entity("sensor", "fps", name="Frame rate", state_topic=topics.stats,
               value_template="{{ value_json.fps }}", unit_of_measurement="fps", state_class="measurement",
               entity_category="diagnostic", icon="mdi:speedometer", suggested_display_precision=1),
        entity("sensor", "viewers", name="Viewers", state_topic=topics.stats,
               value_template="{{ value_json.viewers }}", state_class="measurement",
               entity_category="diagnostic", icon="mdi:eye"),
        entity("sensor", "h264_viewers", name="H.264 viewers", state_topic=topics.stats,
               value_template="{{ value_json.h264_viewers }}", state_class="measurement",
               entity_category="diagnostic", icon="mdi:eye"),
        entity("select", "night_mode", name="Night mode", icon="mdi:weather-night", entity_category="config",
               command_topic=topics.picture_set("night_mode"), state_topic=topics.picture_state,
               value_template="{{ value_json.night_mode }}", options=list(NIGHT_MODES)),
        entity("binary_sensor", "night", name="Night", icon="mdi:weather-night", state_topic=topics.picture_state,
               value_template="{{ value_json.night }}", payload_on="ON", payload_off="OFF"),
    ]
    entities.append(entity("switch", "armed", name="Armed", icon="mdi:shield-home", command_topic=topics.arming_set,
                           state_topic=topics.arming_state, payload_on="ON", payload_off="OFF", state_on="ON",
                           state_off="OFF", json_attributes_topic=topics.arming_attributes))
    if notify:
        entities.append(entity("sensor", "last_notification", name="Last notification", icon="mdi:message-badge",
                               entity_category="diagnostic", state_topic=topics.notify_state,
                               value_template="{{ 'sent' if value_json.ok else 'failed' }}",
                               json_attributes_topic=topics.notify_state))
    if recording:  # the NAS gone, read-only or full: the stats say so, with what failed as an attribute
        entities.append(entity("binary_sensor", "recording_problem", name="Recording problem", device_class="problem",
                               entity_category="diagnostic", state_topic=topics.stats,
                               value_template="{{ 'ON' if value_json.recording == 'fault' else 'OFF' }}",
                               json_attributes_topic=topics.stats,
                               json_attributes_template="{{ {'fault': value_json.recording_fault} | tojson }}"))
    for label in objects:
        key, title = topic_safe(label), label.capitalize()
        entities.append(entity("binary_sensor", f"{key}_detected", name=f"{title} detected", device_class="occupancy",
                               icon=OBJECT_ICONS.get(label, "mdi:shape"), state_topic=topics.object_count(label),
                               value_template="{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
                               payload_on="ON", payload_off="OFF"))
        entities.append(entity("sensor", f"{key}_count", name=f"{title} count", state_topic=topics.object_count(label),
                               state_class="measurement", icon=OBJECT_ICONS.get(label, "mdi:shape")))
    for name, control in (picture or {}).items():
        title = name.replace("_", " ").capitalize()
        fields: dict[str, Any] = {"name": title, "entity_category": "config", "icon": "mdi:tune",
                                  "command_topic": topics.picture_set(name), "state_topic": topics.picture_state,
                                  "value_template": f"{{{{ value_json.{name} | default('{control['default']}') }}}}"}
        if control["kind"] == "choice":
            entities.append(entity("select", name, options=list(control["choices"]), **fields))
        else:
            unit = str(control.get("unit", "")).split(",")[0] or None  # "µs, 0: automatic" -> "µs"
            wide = control["maximum"] - control["minimum"] > 1000
            entities.append(entity("number", name, min=control["minimum"], max=control["maximum"],
                                   step=control["step"] or 1, mode="box" if wide else "slider",
                                   **({"unit_of_measurement": unit} if unit else {}), **fields))
    return dict(entities)
