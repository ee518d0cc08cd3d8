"""The media service (``/onvif/media_service``): the one profile, its H.264 encoder, its addresses.

One profile, ``main``: the camera's picture as its video source, the one H.264 encode (the
``rtsp.*`` size, rate, bitrate, keyframe interval and profile) as its encoder, RTSP over TCP as its
stream (``GetStreamUri``, on the host name the client used) and ``/snapshot.jpg`` as its snapshot.
The encoder's settings are the configuration's: ``SetVideoEncoderConfiguration`` and
``CreateProfile`` are refused (a fault saying so), never half-applied.
"""

from __future__ import annotations

from appliance.onvif.device import Facts
from appliance.onvif.soap import Request, attribute, child_text, text

PROFILE = "main"
SOURCE = "camera"
SOURCE_CONFIG = "camera_config"
ENCODER = "h264"


class NoSuchProfile(Exception):
    """A token that names no profile (or configuration) of ours."""


def _source_configuration(facts: Facts, tag: str = "tt:VideoSourceConfiguration") -> str:
    width, height = facts.source_size
    return (f"<{tag} token={attribute(SOURCE_CONFIG)}><tt:Name>Camera</tt:Name><tt:UseCount>1</tt:UseCount>"
            f"<tt:SourceToken>{SOURCE}</tt:SourceToken>"
            f'<tt:Bounds x="0" y="0" width="{width}" height="{height}"/></{tag}>')


def _encoder_configuration(facts: Facts, tag: str = "tt:VideoEncoderConfiguration") -> str:
    width, height = facts.encode_size
    return (f"<{tag} token={attribute(ENCODER)}><tt:Name>H.264</tt:Name><tt:UseCount>1</tt:UseCount>"
            "<tt:Encoding>H264</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height></tt:Resolution>"
            "<tt:Quality>5</tt:Quality>"
            f"<tt:RateControl><tt:FrameRateLimit>{round(facts.fps)}</tt:FrameRateLimit>"
            f"<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>{facts.bitrate // 1000}"
            "</tt:BitrateLimit></tt:RateControl>"
            f"<tt:H264><tt:GovLength>{facts.gov_length}</tt:GovLength>"
            f"<tt:H264Profile>{facts.profile.capitalize()}</tt:H264Profile></tt:H264>"
            "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address>"
            "</tt:Address><tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
            f"<tt:SessionTimeout>PT60S</tt:SessionTimeout></{tag}>")


def _profile(facts: Facts, tag: str) -> str:
    return (f'<{tag} token={attribute(PROFILE)} fixed="true"><tt:Name>{text(facts.name)}</tt:Name>'
            f"{_source_configuration(facts)}{_encoder_configuration(facts)}</{tag}>")


def _media_uri(uri: str, tag: str) -> str:
    return (f"<{tag}><trt:MediaUri><tt:Uri>{text(uri)}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
            f"</{tag}>")


def _check_profile(request: Request) -> None:
    token = child_text(request.body, "ProfileToken")
    if token is not None and token != PROFILE:
        raise NoSuchProfile(f"no profile {token[:64]!r}: the one profile is {PROFILE!r}")


def answer(facts: Facts, request: Request, host: str) -> str | None:
    """The response body of a media operation, or None when it is not one we answer; raises
    ``NoSuchProfile`` for a token that is not ours."""
    width, height = facts.source_size
    match request.operation:
        case "GetProfiles":
            return f"<trt:GetProfilesResponse>{_profile(facts, 'trt:Profiles')}</trt:GetProfilesResponse>"
        case "GetProfile":
            _check_profile(request)
            return f"<trt:GetProfileResponse>{_profile(facts, 'trt:Profile')}</trt:GetProfileResponse>"
        case "GetStreamUri":
            _check_profile(request)
            uri = f"rtsp://{host}:{facts.rtsp_port}{facts.rtsp_path}"
            return _media_uri(uri, "trt:GetStreamUriResponse")
        case "GetSnapshotUri":
            _check_profile(request)
            return _media_uri(f"{facts.base(host)}/snapshot.jpg", "trt:GetSnapshotUriResponse")
        case "GetServiceCapabilities":
            return ('<trt:GetServiceCapabilitiesResponse><trt:Capabilities SnapshotUri="true" Rotation="false"'
                    ' VideoSourceMode="false" OSD="false"><trt:ProfileCapabilities MaximumNumberOfProfiles="1"/>'
                    '<trt:StreamingCapabilities RTPMulticast="false" RTP_TCP="true" RTP_RTSP_TCP="true"'
                    ' NonAggregateControl="false" NoRTSPStreaming="false"/></trt:Capabilities>'
                    "</trt:GetServiceCapabilitiesResponse>")
        case "GetVideoSources":
            return (f"<trt:GetVideoSourcesResponse><trt:VideoSources token={attribute(SOURCE)}>"
                    f"<tt:Framerate>{facts.fps:g}</tt:Framerate><tt:Resolution><tt:Width>{width}</tt:Width>"
                    f"<tt:Height>{height}</tt:Height></tt:Resolution></trt:VideoSources></trt:GetVideoSourcesResponse>")
        case "GetVideoSourceConfigurations":
            return (f"<trt:GetVideoSourceConfigurationsResponse>{_source_configuration(facts, 'trt:Configurations')}"
                    "</trt:GetVideoSourceConfigurationsResponse>")
        case "GetVideoSourceConfiguration":
            return (f"<trt:GetVideoSourceConfigurationResponse>{_source_configuration(facts, 'trt:Configuration')}"
                    "</trt:GetVideoSourceConfigurationResponse>")
        case "GetVideoEncoderConfigurations":
            return (f"<trt:GetVideoEncoderConfigurationsResponse>{_encoder_configuration(facts, 'trt:Configurations')}"
                    "</trt:GetVideoEncoderConfigurationsResponse>")
        case "GetVideoEncoderConfiguration":
            return (f"<trt:GetVideoEncoderConfigurationResponse>{_encoder_configuration(facts, 'trt:Configuration')}"
                    "</trt:GetVideoEncoderConfigurationResponse>")
        case "GetVideoEncoderConfigurationOptions":
            encode_width, encode_height = facts.encode_size
            return ("<trt:GetVideoEncoderConfigurationOptionsResponse><trt:Options>"
                    '<tt:QualityRange><tt:Min>5</tt:Min><tt:Max>5</tt:Max></tt:QualityRange><tt:H264>'
                    f"<tt:ResolutionsAvailable><tt:Width>{encode_width}</tt:Width><tt:Height>{encode_height}</tt:Height>"
                    f"</tt:ResolutionsAvailable><tt:GovLengthRange><tt:Min>{facts.gov_length}</tt:Min><tt:Max>"
                    f"{facts.gov_length}</tt:Max></tt:GovLengthRange><tt:FrameRateRange><tt:Min>{round(facts.fps)}"
                    f"</tt:Min><tt:Max>{round(facts.fps)}</tt:Max></tt:FrameRateRange><tt:EncodingIntervalRange>"
                    "<tt:Min>1</tt:Min><tt:Max>1</tt:Max></tt:EncodingIntervalRange>"
                    f"<tt:H264ProfilesSupported>{facts.profile.capitalize()}</tt:H264ProfilesSupported></tt:H264>"
                    "</trt:Options></trt:GetVideoEncoderConfigurationOptionsResponse>")
        case "GetVideoSourceConfigurationOptions":
            return ("<trt:GetVideoSourceConfigurationOptionsResponse><trt:Options><tt:BoundsRange>"
                    f"<tt:XRange><tt:Min>0</tt:Min><tt:Max>0</tt:Max></tt:XRange><tt:YRange><tt:Min>0</tt:Min>"
                    f"<tt:Max>0</tt:Max></tt:YRange><tt:WidthRange><tt:Min>{width}</tt:Min><tt:Max>{width}</tt:Max>"
                    f"</tt:WidthRange><tt:HeightRange><tt:Min>{height}</tt:Min><tt:Max>{height}</tt:Max>"
                    f"</tt:HeightRange></tt:BoundsRange><tt:VideoSourceTokensAvailable>{SOURCE}"
                    "</tt:VideoSourceTokensAvailable></trt:Options></trt:GetVideoSourceConfigurationOptionsResponse>")
        case "GetCompatibleVideoEncoderConfigurations":
            _check_profile(request)
            return ("<trt:GetCompatibleVideoEncoderConfigurationsResponse>"
                    f"{_encoder_configuration(facts, 'trt:Configurations')}"
                    "</trt:GetCompatibleVideoEncoderConfigurationsResponse>")
        case "GetAudioSources" | "GetAudioEncoderConfigurations":  # no audio: an empty list
            return f"<trt:{request.operation}Response/>"
    return None
