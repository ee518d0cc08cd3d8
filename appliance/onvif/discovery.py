"""WS-Discovery: ONVIF clients find the camera by a Probe on UDP 3702 (multicast or to its address).

One socket, one thread (``ws-discovery``). A Probe (multicast to 239.255.255.250, or sent straight to
the appliance) whose types and scopes we match gets a ProbeMatch sent back to its sender: type
``dn:NetworkVideoTransmitter``, the scopes (Profile Streaming, name, hardware, location) and the
device service's address on the interface that reaches the sender. A Hello goes out at start and a
Bye at stop, so a client that listens sees the camera come and go.

Why not PyPI's ``WSDiscovery``, which Home Assistant's client side uses (and the tests use against
this): as a publisher it parses every datagram with ``minidom`` (DTDs and all), runs a thread that
polls the network interfaces, has no bound on how often it answers, and its README warns that it
"may crash, and might contain security holes". What a camera needs of the protocol is this one
answer; here each datagram is bounded in size, parsed by defusedxml (no DTD, no entities), and the
answers are bounded in rate, in all and per sender, so the camera cannot be made to flood the LAN.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from xml.etree.ElementTree import Element

from appliance.onvif.soap import BadRequest, child_text, parse, text

log = logging.getLogger(__name__)

GROUP = "239.255.255.250"
PORT = 3702
MAX_DATAGRAM = 8192  # bytes: a Probe is a few hundred; anything larger is not read
ANSWERS_PER_SECOND = 20  # in all
ANSWERS_PER_SENDER = 4  # a second, from one address
ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
DISCOVERY = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
TYPES = "dn:NetworkVideoTransmitter tds:Device"
TYPE_NAMES = {"NetworkVideoTransmitter", "Device"}


def _envelope(action: str, header: str, body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            f'xmlns:a="{ADDRESSING}" xmlns:d="{DISCOVERY}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl" '
            'xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><s:Header>'
            f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID><a:Action>{DISCOVERY}/{action}</a:Action>{header}"
            f"</s:Header><s:Body>{body}</s:Body></s:Envelope>").encode()


class RateLimit:
    """At most ``per_second`` answers a second in all, and ``per_sender`` to one address."""

    def __init__(self, per_second: int, per_sender: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second, self._per_sender, self._clock = per_second, per_sender, clock
        self._second = -1
        self._count = 0
        self._senders: dict[str, int] = {}

    def allows(self, sender: str) -> bool:
        second = int(self._clock())
        if second != self._second:
            self._second, self._count, self._senders = second, 0, {}
        if self._count >= self._per_second or self._senders.get(sender, 0) >= self._per_sender:
            return False
        self._count += 1
        self._senders[sender] = self._senders.get(sender, 0) + 1
        return True


class DiscoveryResponder:
    """Answers WS-Discovery Probes for this camera; ``start``/``stop`` own the thread and the socket."""

    def __init__(self, endpoint: str, scopes: list[str], http_port: int, port: int = PORT,
                 limit: RateLimit | None = None) -> None:
        self.endpoint = endpoint  # urn:uuid:..., stable: the same camera after a restart
        self.scopes = scopes
        self.http_port = http_port
        self.port = port
        self._limit = limit or RateLimit(ANSWERS_PER_SECOND, ANSWERS_PER_SENDER)
        self._sock: socket.socket | None = None
        self._wake_recv, self._wake_send = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sequence = 0
        self._instance = int(time.time())
        self.answered = 0
        self.ignored = 0  # not a Probe for us, not XML, too large, or over the rate

    def start(self) -> None:
        """Bind (an error the caller reports if the port is taken), join the group where there is
        multicast, say Hello, and answer from the thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", self.port))
        self.port = sock.getsockname()[1]
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0")))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        except OSError as exc:  # no multicast route (a container, no network yet): unicast Probes still work
            log.warning("WS-Discovery: no multicast here (%s); only Probes sent to this address are answered", exc)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="ws-discovery", daemon=True)
        self._thread.start()
        self._announce("Hello")
        log.info("WS-Discovery: answering Probes on UDP %d", self.port)

    def stop(self, timeout: float = 1.0) -> None:
        if self._sock is None:
            return
        self._announce("Bye")
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_send.send(b"\0")
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()
        self._wake_recv.close()
        self._wake_send.close()
        self._sock = None

    def _next(self) -> str:
        self._sequence += 1
        return f'<d:AppSequence InstanceId="{self._instance}" MessageNumber="{self._sequence}"/>'

    def _match(self, host: str) -> str:
        xaddr = f"http://{host}:{self.http_port}/onvif/device_service"
        return (f"<a:EndpointReference><a:Address>{self.endpoint}</a:Address></a:EndpointReference>"
                f"<d:Types>{TYPES}</d:Types><d:Scopes>{text(' '.join(self.scopes))}</d:Scopes>"
                f"<d:XAddrs>{text(xaddr)}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>")

    def _announce(self, action: str) -> None:
        """Hello or Bye to the group; nothing when there is no multicast."""
        if self._sock is None:
            return
        body = f"<d:{action}>{self._match(_local_address(GROUP))}</d:{action}>" if action == "Hello" else \
            f"<d:Bye><a:EndpointReference><a:Address>{self.endpoint}</a:Address></a:EndpointReference></d:Bye>"
        header = f"<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>{self._next()}"
        with contextlib.suppress(OSError):
            self._sock.sendto(_envelope(action, header, body), (GROUP, PORT))

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([sock, self._wake_recv], [], [])
                if sock not in ready:
                    continue
                data, sender = sock.recvfrom(MAX_DATAGRAM + 1)
            except OSError:
                return  # closed under us: stopping
            try:
                self._answer(data, sender)
            except Exception:  # a bug of ours must not end discovery: logged, the next datagram goes on
                log.exception("WS-Discovery: error answering %s", sender[0])

    def _answer(self, data: bytes, sender: tuple[str, int]) -> None:
        if len(data) > MAX_DATAGRAM:
            self.ignored += 1
            return
        try:
            probe = parse(data)
        except BadRequest:
            self.ignored += 1
            return
        if (probe.namespace, probe.operation) != (DISCOVERY, "Probe") or not self._wanted(probe.body) \
                or not self._limit.allows(sender[0]):
            self.ignored += 1
            return
        message_id = child_text(probe.header, "MessageID") or ""
        header = (f"<a:RelatesTo>{text(message_id[:256])}</a:RelatesTo>"
                  f"<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>{self._next()}")
        body = f"<d:ProbeMatches><d:ProbeMatch>{self._match(_local_address(sender[0]))}</d:ProbeMatch></d:ProbeMatches>"
        assert self._sock is not None
        self.answered += 1  # counted first: a client may read the answer before this thread goes on
        self._sock.sendto(_envelope("ProbeMatches", header, body), sender)

    def _wanted(self, probe: Element) -> bool:
        """Whether the Probe's types (any of ours, by local name: the parser keeps no prefixes) and
        scopes (each a prefix of one of ours) match; a Probe with neither asks for every device."""
        types = (child_text(probe, "Types") or "").split()
        if types and not any(item.rpartition(":")[2] in TYPE_NAMES for item in types):
            return False
        scopes = (child_text(probe, "Scopes") or "").split()
        return all(any(ours.startswith(scope.rstrip("/")) for ours in self.scopes) for scope in scopes)


def _local_address(peer: str) -> str:
    """The address of this machine on the way to ``peer`` (no packet is sent); for a multicast peer,
    the address of the default route's interface, else loopback's."""
    for candidate in (peer, "192.0.2.1"):  # 192.0.2.1: a documentation address, only looked up
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((candidate, PORT))
                address = probe.getsockname()[0]
        except OSError:
            continue
        if address != "0.0.0.0":
            return address
    return "127.0.0.1"
