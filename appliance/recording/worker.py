"""A thread that does one recorder's disk work in order, fed by a queue bounded in bytes.

The encoder thread offers video (``offer``): past ``max_bytes`` waiting, it is refused at once, and
the caller drops it and starts again at the next keyframe; the capture side never waits for a disk.
Small control work (open, close) is always queued (``call``). While a job runs, ``busy_for`` says
how long: a write stuck on a NAS that stopped answering shows as a stall in the status, and the
thread is left behind at shutdown (a daemon) rather than holding the appliance up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class DiskWorker:
    """``start`` it, ``offer``/``call`` work, ``stop`` it: the owner joins it within a budget."""

    def __init__(self, name: str, max_bytes: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._max_bytes = max_bytes
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Job, int]] = deque()
        self._queued_bytes = 0
        self._busy_since: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped_bytes = 0
        self.dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def offer(self, job: Job, size: int) -> bool:
        """Queue ``job`` carrying ``size`` bytes of video; False (and counted) when too much waits."""
        with self._cond:
            if self._stopping:
                return False
            if self._queued_bytes + size > self._max_bytes:
                self.dropped += 1
                self.dropped_bytes += size
                return False
            self._jobs.append((job, size))
            self._queued_bytes += size
            self._cond.notify_all()
            return True

    def call(self, job: Job) -> None:
        """Queue control work (open, close a file): always taken, in order with the video."""
        with self._cond:
            if not self._stopping:
                self._jobs.append((job, 0))
                self._cond.notify_all()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def busy_for(self) -> float:
        """Seconds the job in hand has taken so far; 0 when idle."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, self._monotonic() - since)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued job is done (tests, shutdown); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and self._busy_since is None, timeout)

    def stop(self, timeout: float, last: Job | None = None) -> None:
        """Finish what is queued (then ``last``) within ``timeout``; a thread stuck on a disk is left."""
        with self._cond:
            if last is not None and not self._stopping:
                self._jobs.append((last, 0))
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
            if self._thread.is_alive():
                log.warning("%s: a write did not end within %.1f s (a stalled disk?); left behind", self.name,
                            timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._stopping)
                if not self._jobs:
                    return
                job, size = self._jobs.popleft()
                self._queued_bytes -= size
                self._busy_since = self._monotonic()
            try:
                job()
            except Exception:  # a bug of ours in one job must not end the recordings
                log.exception("%s: a job failed", self.name)
            finally:
                with self._cond:
                    self._busy_since = None
                    self._cond.notify_all()
