"""History on disk: motion events, their snapshots and clips, written so a power cut loses at most
what was being written.

``EventStore`` keeps the records and files within their limits; ``EventRecorder`` is the writer
thread that feeds it from the dispatcher (records) and the capture thread (clip frames); the clip
files and the AVI download are the formats they are read back in.
"""
