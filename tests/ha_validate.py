"""Validate MQTT discovery payloads with Home Assistant's own schemas.

Runs inside a virtualenv where Home Assistant is installed (not the project's): reads
``{"<discovery topic>": payload, ...}`` as JSON on stdin, writes ``{"<topic>": null | "error"}``.
The component is taken from the topic, ``<prefix>/<component>/<node>/<object>/config``, exactly as
Home Assistant's discovery does, and each payload goes through that platform's DISCOVERY_SCHEMA
plus the origin schema.
"""

import asyncio
import importlib
import json
import logging
import sys
import tempfile


async def main() -> None:
    logging.disable(logging.CRITICAL)  # HA logs optional native libraries it cannot find
    from homeassistant.components.mqtt.schemas import MQTT_ORIGIN_INFO_SCHEMA
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers import frame

    hass = HomeAssistant(tempfile.mkdtemp())
    frame.async_setup(hass)  # template validators need it
    results = {}
    for topic, payload in json.load(sys.stdin).items():
        component = topic.split("/")[1]
        try:
            module = importlib.import_module(f"homeassistant.components.mqtt.{component}")
            module.DISCOVERY_SCHEMA(dict(payload))
            if "origin" in payload:
                MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
            results[topic] = None
        except Exception as exc:
            results[topic] = f"{type(exc).__name__}: {exc}"
    from homeassistant.components.mqtt.entity import MQTT_ATTRIBUTES_BLOCKED

    results["__attributes_blocked__"] = sorted(MQTT_ATTRIBUTES_BLOCKED)
    await hass.async_stop(force=True)
    json.dump(results, sys.stdout)


asyncio.run(main())
