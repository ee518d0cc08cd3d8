"""SOAP 1.2 as ONVIF speaks it: requests parsed safely, responses and faults written.

A SOAP message may not carry a document type declaration (SOAP 1.2, part 1, 5), so ``parse`` refuses
any: with defusedxml's parser no DTD, entity or external reference is ever expanded or fetched
(billion laughs, external entities). The body's size is bounded before it is read, by the HTTP
server (``server.max_body_bytes``). Responses are written from templates: every value put into one
goes through ``text`` (escaped), and the namespaces are declared once on the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

ENV = "http://www.w3.org/2003/05/soap-envelope"
NAMESPACES = {
    "env": ENV,
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "ter": "http://www.onvif.org/ver10/error",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wstop": "http://docs.oasis-open.org/wsn/t-1",
    "tns1": "http://www.onvif.org/ver10/topics",
    "xs": "http://www.w3.org/2001/XMLSchema",
}
CONTENT_TYPE = "application/soap+xml; charset=utf-8"


class BadRequest(Exception):
    """The body is not a SOAP envelope we may read; the message says why."""


@dataclass(frozen=True)
class Request:
    """One SOAP call: the operation's namespace and local name, its element, and the header."""

    namespace: str
    operation: str
    body: Element
    header: Element | None


def split(tag: str) -> tuple[str, str]:
    """``{namespace}local`` → (namespace, local)."""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def parse(data: bytes) -> Request:
    """The call in ``data``; raises ``BadRequest`` for anything but a well-formed SOAP envelope
    without a DTD."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BadRequest(f"refused: {type(exc).__name__} (a SOAP message carries no DTD or entities)") from None
    except ParseError as exc:
        raise BadRequest(f"not well-formed XML: {exc}") from None
    if root.tag != f"{{{ENV}}}Envelope":
        raise BadRequest("not a SOAP 1.2 envelope")
    body = root.find(f"{{{ENV}}}Body")
    if body is None or len(body) == 0:
        raise BadRequest("the envelope has no Body with an operation in it")
    namespace, operation = split(body[0].tag)
    return Request(namespace, operation, body[0], root.find(f"{{{ENV}}}Header"))


def text(value: object) -> str:
    """A value as element content, escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def attribute(value: object) -> str:
    """A value as a quoted attribute, escaped."""
    return quoteattr(str(value))


def envelope(body: str) -> bytes:
    declarations = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NAMESPACES.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {declarations}><env:Body>{body}'
            "</env:Body></env:Envelope>").encode()


def fault(code: str, subcode: str, reason: str) -> bytes:
    """A SOAP 1.2 fault: ``code`` Sender or Receiver, ``subcode`` ONVIF's (``ter:NotAuthorized``)."""
    return envelope(f"<env:Fault><env:Code><env:Value>env:{code}</env:Value><env:Subcode><env:Value>{subcode}"
                    f'</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{text(reason)}'
                    "</env:Text></env:Reason></env:Fault>")


def child_text(element: Element | None, *path: str) -> str | None:
    """The text of the first descendant along ``path`` of local names (any namespace), or None."""
    for name in path:
        if element is None:
            return None
        element = next((child for child in element if split(child.tag)[1] == name), None)
    return None if element is None else (element.text or "")
