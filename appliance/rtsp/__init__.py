"""The H.264 stream over RTSP, for recorders, go2rtc, Frigate and Home Assistant's stream.

``server`` is GStreamer's RTSP server on its own ``rtsp`` thread: each shared media it builds
subscribes to the appliance's one H.264 feed (``appliance/h264/``), wants frames while a client plays,
and serves that encode to every client with the web login and limits; ``service`` ties it to the
camera's state and says why RTSP is off when a library is missing.
"""
