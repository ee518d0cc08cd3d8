"""The H.264 stream over RTSP, for recorders, go2rtc, Frigate and Home Assistant's stream.

``h264`` picks and drives the encoder (PyAV: the Pi's hardware encoder or libx264); ``feed`` owns the
``h264-encoder`` thread, fed by the capture thread through ``VideoSink`` only while a client watches;
``server`` is GStreamer's RTSP server on its own ``rtsp`` thread, which serves that one encoded stream
to every client with the web login and limits; ``service`` ties them and says why RTSP is off when a
library is missing.
"""
