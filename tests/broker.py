"""A real mosquitto broker for tests, on a free loopback port, and a subscriber that records messages."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """mosquitto in the foreground; ``stop``/``start`` keep the port so clients can reconnect."""

    def __init__(self, folder: Path, extra: str = "", port: int | None = None, persistent: bool = False) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.extra = extra
        self.persistent = persistent  # retained messages survive a restart, as on a real broker
        self.log: deque[str] = deque(maxlen=200)  # the broker's last words, for failure messages
        self.proc: subprocess.Popen[str] | None = None
        # Run as root, mosquitto drops to its own user after reading the config: let it read files.
        folder.chmod(0o755)

    def start(self) -> None:
        conf = self.folder / "mosquitto.conf"
        persistence = "persistence false"
        if self.persistent:
            store = self.folder / "store"  # mosquitto writes it as its own user, after dropping root
            store.mkdir(exist_ok=True)
            store.chmod(0o777)
            persistence = f"persistence true\npersistence_location {store}/"
        conf.write_text(f"listener {self.port} 127.0.0.1\n{persistence}\nlog_dest stderr\n"
                        f"log_type error\nlog_type warning\nlog_type notice\nlog_type information\n{self.extra}\n")
        conf.chmod(0o644)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        seen = []
        for line in self.proc.stderr:  # wait for the broker to say it runs, instead of sleeping
            seen.append(line)
            if " running" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise RuntimeError("mosquitto did not start:\n" + "".join(seen))

    def _drain(self) -> None:
        proc = self.proc
        if proc is not None and proc.stderr is not None:
            for line in proc.stderr:
                self.log.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Recorder:
    """A subscriber that keeps every message and lets tests wait for one that matches."""

    port: int
    topics: list[str]
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    seen: list[mqtt.MQTTMessage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"recorder-{os.getpid()}-{id(self)}")
        tls = self.client_kwargs.get("tls")
        if tls:
            self.client.tls_set(ca_certs=tls)
        if "username" in self.client_kwargs:
            self.client.username_pw_set(self.client_kwargs["username"], self.client_kwargs["password"])
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def __enter__(self) -> Recorder:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "recorder did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, topic: str, match: Callable[[bytes], bool] = lambda p: True,
                 timeout: float = 10) -> mqtt.MQTTMessage:
        """The first message (already seen or arriving within ``timeout``) on ``topic`` that matches."""
        for index, message in enumerate(self.seen):
            if message.topic == topic and match(message.payload):
                # By index: MQTTMessage.__eq__ compares mids, and every QoS 0 message has mid 0.
                return self.seen.pop(index)
        deadline = time.monotonic() + timeout
        try:
            while True:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
                if message.topic == topic and match(message.payload):
                    return message
                self.seen.append(message)
        except queue.Empty:
            got = sorted({m.topic for m in self.seen})
            raise AssertionError(f"no matching message on {topic} within {timeout} s; saw {got}") from None

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def make_certs(folder: Path) -> None:
    """A test CA (``ca.crt``) and a server certificate for 127.0.0.1 signed by it (``server.crt/.key``)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    for path in folder.iterdir():
        path.chmod(0o644)
