"""The page's live view in H.264: Media Source Extensions fed from the one encode.

A browser viewer is one more consumer of the H.264 feed (``appliance/h264/``), like the RTSP server
and the recordings: no encoder of its own, and none running while nobody watches. ``service``
subscribes to the feed while any viewer is there, turns each access unit into an MP4 fragment once
(``h264/fmp4``) and writes the same bytes to every viewer from one thread, without blocking: the
page (``web/static/app.js``) reads the long ``/stream.mp4`` response with ``fetch`` and appends it to
a ``MediaSource`` (``ManagedMediaSource`` on iPhones). ``outbox`` is what one viewer has still to
receive, bounded: a viewer that falls behind skips to the next keyframe, one that stops reading is
dropped, and neither slows the others or the encoder.
"""
