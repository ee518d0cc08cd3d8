"""A subscription to the H.264 feed that wants video exactly while the camera is on.

Every recorder needs the same: subscribe at start-up, want frames if the camera is on then, and
follow each state change after. The listener is added before ``start`` reads the state, so a change
heard in between is newer than what ``start`` reads, and wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from appliance.h264.feed import Consumer, H264Feed, Subscription
from appliance.state import CameraState, StateChange


class CameraSubscription:
    """``start`` subscribes; ``on_state`` is a controller listener; ``close`` lets the feed go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None
        self._heard = False  # a camera state reached on_state

    def start(self, feed: H264Feed, consumer: Consumer, camera_on: Callable[[], bool]) -> None:
        with self._lock:
            self._subscription = feed.subscribe(consumer)
            if not self._heard:
                self._subscription.want(camera_on())

    def on_state(self, change: StateChange) -> bool:
        """Want video while the camera is on; returns whether it is."""
        on = change.state is CameraState.ON
        with self._lock:
            self._heard = True
            if self._subscription is not None:
                self._subscription.want(on)
        return on

    def request_keyframe(self) -> None:
        subscription = self._subscription
        if subscription is not None:
            subscription.request_keyframe()

    def close(self) -> None:
        subscription = self._subscription
        if subscription is not None:
            subscription.close()
