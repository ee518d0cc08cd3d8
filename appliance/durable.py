"""Files that survive a power cut: written aside, fsynced, renamed into place, folder fsynced.

A Pi in a garden loses power at any moment; an SD card then keeps what reached it. Writing in
place can leave an empty or half file; this leaves the old file or the new one, whole.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from appliance.config import describe_errors

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
"""Temporary files start with this; start-up may remove any it finds (a write cut short)."""


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the directory entry is data too)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``; on any failure the temporary file is removed and the old file stays."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_leftovers(folder: Path) -> int:
    """Remove what writes cut short by a power cut or a kill left in ``folder``; how many were removed.

    Called at start-up for every folder ``durable_write`` writes into, before anything writes there:
    a temporary file is never anyone's data, only the old file or the new one is.
    """
    removed = 0
    for leftover in folder.glob(TEMP_PREFIX + "*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d file(s) left by a write cut short in %s", removed, folder)
    return removed


S = TypeVar("S", bound=BaseModel)


class KeptSettings(Generic[S]):
    """Settings a user changes at run time (the page, the API, MQTT): changed all or nothing, kept in
    a file in the state folder with ``durable_write`` (they win over the config file at the next
    start), and told to every listener, on the thread that made the change (keep listeners short).

    A subclass says which keys a change may have (``ACCEPTED``) and which are kept (``KEPT``), what
    it calls itself (``WHAT``), and turns a change into settings values (``_prepared``, raising
    ``REFUSED`` with a message that names the key); the settings model checks the rest.
    """

    ACCEPTED: tuple[str, ...] = ()
    KEPT: tuple[str, ...] = ()
    WHAT = "settings"
    REFUSED: type[Exception] = ValueError

    def __init__(self, initial: S, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._listeners: list[Callable[..., None]] = []
        self._settings = initial
        if path is not None and path.exists():
            try:
                self._settings = self._merged(initial, json.loads(path.read_text()))
            except (OSError, ValueError, self.REFUSED) as exc:
                log.warning("ignoring saved %s in %s: %s", self.WHAT, path, exc)

    @property
    def settings(self) -> S:
        return self._settings

    def add_listener(self, listener: Callable[..., None]) -> None:
        """Hear every change, with what ``_news`` gives (the settings, and for some more)."""
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Callable[..., None]) -> None:
        self._listeners = [known for known in self._listeners if known != listener]

    def update(self, changes: Any) -> S:
        """Apply ``changes``, keep them and tell the listeners; raises ``REFUSED``, and changes
        nothing, if any of them is invalid, and OSError, changing nothing, if they cannot be kept."""
        with self._lock:
            updated = self._merged(self._settings, changes)
            if self._path is not None:
                kept = {key: value for key, value in updated.model_dump(mode="json").items() if key in self.KEPT}
                durable_write(self._path, json.dumps(kept, indent=1).encode())
            self._settings = updated
            self._settled(updated)
        self._tell()
        return updated

    def _settled(self, settings: S) -> None:
        """What follows from new settings at once, before the listeners hear them (nothing by default)."""

    def _news(self) -> tuple[Any, ...]:
        return (self._settings,)

    def _tell(self) -> None:
        news = self._news()
        for listener in self._listeners:
            try:
                listener(*news)
            except Exception:
                log.exception("%s listener failed", self.WHAT)

    def _merged(self, current: S, changes: Any) -> S:
        """``current`` with ``changes`` applied, all checked; ``REFUSED`` names what is wrong."""
        if not isinstance(changes, dict):
            raise self.REFUSED(f"{self.WHAT} must be a JSON object, not {type(changes).__name__}")
        unknown = sorted(set(changes) - set(self.ACCEPTED))
        if unknown:
            raise self.REFUSED(f"unknown key(s): {', '.join(unknown)}; accepted: {', '.join(self.ACCEPTED)}")
        values = self._prepared(current, dict(changes))
        try:
            return type(current).model_validate({**current.model_dump(), **values})
        except ValidationError as exc:
            raise self.REFUSED("; ".join(describe_errors(exc))) from None

    def _prepared(self, current: S, values: dict[str, Any]) -> dict[str, Any]:
        """The change as settings values (as given, by default)."""
        return values
