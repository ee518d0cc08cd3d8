"""ONVIF (Profile S): added like a store-bought IP camera by Home Assistant, NVRs and ONVIF tools.

On the HTTP port, under ``/onvif/``: ``soap`` parses each request with no DTD and no entities (a
hostile body is refused before anything reads it) and writes SOAP 1.2 envelopes and faults;
``wsse`` checks the WS-Security UsernameToken clients sign each call with (the web login, its nonces
remembered so none is used twice, its ``Created`` within minutes); ``device`` and ``media`` answer
the operations clients call, with values from the running configuration (the RTSP address and the
snapshot address as the client reached the appliance, the H.264 encode's size, rate and bitrate);
``service`` routes a call to its operation and says which need no login.
"""
