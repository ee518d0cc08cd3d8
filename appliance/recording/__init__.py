"""What the appliance keeps of the one H.264 encode: event clips, continuous recording, timelapses.

Each recorder subscribes to the ``appliance.h264`` feed and wants frames while the camera is on. Its
consumer runs on the encoder thread and only files packets: into the pre-roll ring (``ring``) and a
queue bounded in bytes towards its own disk thread (``worker``), which drops (and counts) when a
card or a NAS is too slow, so nothing upstream ever waits for a disk. ``clips`` writes event clips
into the history (``appliance.history.events``); ``continuous`` writes fixed-length segments and
``timelapse`` a movie per day into the recordings folder (``folder``: what is kept there, its
retention tiers, and its faults: gone, read-only, full, stalled).
"""
