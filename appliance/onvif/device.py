"""The device service (``/onvif/device_service``): who the camera is, its clock, its services.

What each answer holds comes from ``Facts``, made once at start-up from the configuration and this
machine: a serial number stable across restarts and reinstalls (from ``/etc/machine-id``), the MAC
address of the interface that carries the default route (Home Assistant makes it the device's id),
the host name. The clock is reported as NTP-set in UTC: a client then has no reason to set it
(``SetSystemDateAndTime`` is accepted and changes nothing, as Home Assistant sends it to cameras whose
time it believes manual).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from appliance.onvif.soap import NAMESPACES, Request, text

SCOPES = ("onvif://www.onvif.org/Profile/Streaming", "onvif://www.onvif.org/type/video_encoder",
          "onvif://www.onvif.org/type/Network_Video_Transmitter")


@dataclass(frozen=True)
class Facts:
    """What the ONVIF answers say of this appliance; ``xaddr``-style addresses are made per request
    from the host name the client used."""

    name: str
    model: str
    firmware: str
    serial: str
    mac: str
    hostname: str
    location: str
    http_port: int
    https: bool
    rtsp_port: int
    rtsp_path: str
    source_size: tuple[int, int]  # the picture as the camera delivers it, turned
    encode_size: tuple[int, int]
    fps: float
    bitrate: int
    gov_length: int
    profile: str  # baseline, main, high

    def base(self, host: str) -> str:
        return f"{'https' if self.https else 'http'}://{host}:{self.http_port}"


def serial_number(machine_id: Path = Path("/etc/machine-id")) -> str:
    """Twelve hex digits from the machine's id: the same after a restart or a reinstall of the app."""
    try:
        seed = machine_id.read_text().strip()
    except OSError:
        seed = ""
    seed = seed or socket.gethostname()
    return hashlib.sha256(f"appliance-onvif:{seed}".encode()).hexdigest()[:12].upper()


def default_route_mac(net: Path = Path("/sys/class/net"), route: Path = Path("/proc/net/route")) -> str:
    """The MAC of the interface the default route leaves by, else of the first that is not loopback;
    a made-up, locally administered one (from the serial) when there is none."""
    names: list[str] = []
    with contextlib.suppress(OSError):
        for line in route.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                names.append(fields[0])
    with contextlib.suppress(OSError):
        names += sorted(entry.name for entry in net.iterdir() if entry.name != "lo")
    for name in names:
        try:
            mac = (net / name / "address").read_text().strip()
        except OSError:
            continue
        if mac and mac != "00:00:00:00:00:00":
            return mac
    digits = serial_number()
    return "02:" + ":".join(digits[i:i + 2] for i in range(0, 10, 2)).lower()


def get_system_date_and_time(now: float) -> str:
    utc = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return ("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{utc.hour}</tt:Hour><tt:Minute>{utc.minute}</tt:Minute>"
            f"<tt:Second>{utc.second}</tt:Second></tt:Time><tt:Date><tt:Year>{utc.year}</tt:Year>"
            f"<tt:Month>{utc.month}</tt:Month><tt:Day>{utc.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>")


def get_capabilities(facts: Facts, host: str) -> str:
    base = facts.base(host)
    return ("<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{text(base)}/onvif/device_service</tt:XAddr>"
            "<tt:Network><tt:IPFilter>false</tt:IPFilter><tt:ZeroConfiguration>false</tt:ZeroConfiguration>"
            "<tt:IPVersion6>false</tt:IPVersion6><tt:DynDNS>false</tt:DynDNS></tt:Network>"
            "<tt:System><tt:DiscoveryResolve>false</tt:DiscoveryResolve><tt:DiscoveryBye>false</tt:DiscoveryBye>"
            "<tt:RemoteDiscovery>false</tt:RemoteDiscovery><tt:SystemBackup>false</tt:SystemBackup>"
            "<tt:SystemLogging>false</tt:SystemLogging><tt:FirmwareUpgrade>false</tt:FirmwareUpgrade>"
            "<tt:SupportedVersions><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tt:SupportedVersions>"
            "</tt:System></tt:Device>"
            f"<tt:Events><tt:XAddr>{text(base)}/onvif/events_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport>"
            "</tt:Events>"
            f"<tt:Media><tt:XAddr>{text(base)}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>")


def get_services(facts: Facts, host: str) -> str:
    base = facts.base(host)
    services = [(NAMESPACES["tds"], "device_service"), (NAMESPACES["trt"], "media_service"),
                (NAMESPACES["tev"], "events_service")]
    entries = "".join(f"<tds:Service><tds:Namespace>{text(namespace)}</tds:Namespace><tds:XAddr>{text(base)}"
                      f"/onvif/{path}</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor>"
                      "</tds:Version></tds:Service>" for namespace, path in services)
    return f"<tds:GetServicesResponse>{entries}</tds:GetServicesResponse>"


def get_device_information(facts: Facts) -> str:
    return ("<tds:GetDeviceInformationResponse><tds:Manufacturer>Camera appliance</tds:Manufacturer>"
            f"<tds:Model>{text(facts.model)}</tds:Model><tds:FirmwareVersion>{text(facts.firmware)}"
            f"</tds:FirmwareVersion><tds:SerialNumber>{text(facts.serial)}</tds:SerialNumber>"
            f"<tds:HardwareId>{text(facts.model)}</tds:HardwareId></tds:GetDeviceInformationResponse>")


def get_network_interfaces(facts: Facts) -> str:
    return ('<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled>'
            f"<tt:Info><tt:Name>eth0</tt:Name><tt:HwAddress>{text(facts.mac)}</tt:HwAddress></tt:Info>"
            "</tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>")


def scopes(facts: Facts) -> list[str]:
    """The camera's scopes, as GetScopes and WS-Discovery give them (no spaces: they are URIs)."""
    return [*SCOPES, f"onvif://www.onvif.org/name/{quote(facts.name)}",
            f"onvif://www.onvif.org/hardware/{quote(facts.model.split(' ')[0])}",
            f"onvif://www.onvif.org/location/{quote(facts.location)}"]


def get_scopes(facts: Facts) -> str:
    items = "".join(f"<tds:Scopes><tt:ScopeDef>Fixed</tt:ScopeDef><tt:ScopeItem>{text(scope)}</tt:ScopeItem>"
                    "</tds:Scopes>" for scope in scopes(facts))
    return f"<tds:GetScopesResponse>{items}</tds:GetScopesResponse>"


def get_hostname(facts: Facts) -> str:
    return ("<tds:GetHostnameResponse><tds:HostnameInformation><tt:FromDHCP>false</tt:FromDHCP>"
            f"<tt:Name>{text(facts.hostname)}</tt:Name></tds:HostnameInformation></tds:GetHostnameResponse>")


def get_service_capabilities() -> str:
    return ("<tds:GetServiceCapabilitiesResponse><tds:Capabilities>"
            '<tds:Network IPFilter="false" ZeroConfiguration="false" IPVersion6="false" DynDNS="false"/>'
            '<tds:Security UsernameToken="true" HttpDigest="false"/>'
            '<tds:System DiscoveryResolve="false" DiscoveryBye="false" RemoteDiscovery="false" SystemBackup="false"'
            ' SystemLogging="false" FirmwareUpgrade="false"/>'
            "</tds:Capabilities></tds:GetServiceCapabilitiesResponse>")


def answer(facts: Facts, request: Request, host: str, now: float) -> str | None:
    """The response body of a device operation, or None when it is not one we answer."""
    match request.operation:
        case "GetSystemDateAndTime":
            return get_system_date_and_time(now)
        case "SetSystemDateAndTime":  # the clock is the system's (NTP): accepted, changes nothing
            return "<tds:SetSystemDateAndTimeResponse/>"
        case "GetCapabilities":
            return get_capabilities(facts, host)
        case "GetServices":
            return get_services(facts, host)
        case "GetServiceCapabilities":
            return get_service_capabilities()
        case "GetDeviceInformation":
            return get_device_information(facts)
        case "GetNetworkInterfaces":
            return get_network_interfaces(facts)
        case "GetScopes":
            return get_scopes(facts)
        case "GetHostname":
            return get_hostname(facts)
    return None

