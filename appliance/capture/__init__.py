"""The capture thread and what runs on it: from a camera's frame to the one JPEG every viewer shares.

``CapturePipeline`` owns the ``capture`` thread. Per frame it asks the motion detector, keeps the clip
pre-roll (``ClipTap``), draws the overlay and encodes once, and only when someone watches; the
``FrameBroadcaster`` hands that JPEG to every viewer. Nothing here knows who watches or where events
are stored: it reports to the controller through callbacks and to the clip writer through ``ClipSink``.
"""
