"""The production WSGI server, in-process.

cheroot is chosen because it is the one server (of waitress, gunicorn, cheroot, Werkzeug) that frees
the thread of a viewer who stays connected but stops reading (its socket timeout), and its pool is
sized here for the viewer limit plus API calls so the page never waits behind streams.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cheroot import wsgi

log = logging.getLogger(__name__)


class HttpServer:
    """Serves a WSGI app on a thread pool; ``start`` binds and returns, ``stop`` joins."""

    def __init__(self, app: Any, host: str, port: int, threads: int, socket_timeout: float) -> None:
        self._server = wsgi.Server((host, port), app, numthreads=threads, max=threads,
                                   timeout=int(max(1, socket_timeout)), shutdown_timeout=1,
                                   server_name="appliance")
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    def start(self) -> None:
        """Bind now (so a busy port fails start-up loudly) and serve in a background thread."""
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)
        self._thread.start()
        log.info("serving on http://%s:%d/", self._server.bind_addr[0], self.port)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.stop()
        self._thread.join(3)
        self._thread = None
