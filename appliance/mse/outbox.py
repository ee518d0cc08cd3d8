"""What one browser viewer still has to receive: the init segment and fragments, in order, bounded.

H.264 cannot skip a frame in the middle of a group of pictures (every later frame refers back to
it), so a viewer whose connection cannot keep up loses whole groups: once its unsent bytes would pass
``limit``, everything not yet begun is dropped and it waits for the next keyframe with room for it,
so its picture jumps forward rather than falling further behind. What has begun going out stays (a
fragment cut in half would break the stream). A new init segment (new parameter sets: the encoder
reopened at another size) goes out before the keyframe that needs it, and again after a drop that
took it. Pure: the owner locks it and does the writing.
"""

from __future__ import annotations

from collections import deque


class Outbox:
    """One viewer's queue of bytes to send; ``offer`` from the encoder's side, ``pending``/``sent``
    from the writer's."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[tuple[bytes, bool]] = deque()  # (bytes, whether a fragment, not an init segment)
        self._offset = 0  # bytes of the first chunk already sent
        self.queued = 0  # bytes not yet sent
        self.keyed = False  # has had a keyframe since it started (or last fell behind): takes every fragment
        self.started = False  # has had its first keyframe
        self._init: bytes | None = None  # the init segment it was last given
        self.fragments = 0  # fragments queued in all
        self.skipped = 0  # fragments it never got since its start: lost by falling behind, or waiting for a keyframe
        self.behind = 0  # times it fell behind and lost what was queued
        self.sent_bytes = 0

    def offer(self, init: bytes, fragment: bytes, keyframe: bool) -> bool:
        """Queue one fragment (after ``init`` if this viewer lacks it). False when it was not taken:
        no keyframe yet to start from, or no room (the viewer fell behind and lost what was queued)."""
        new_init = init if init is not self._init else b""
        if not self.keyed:
            if not (keyframe and self._fits(len(new_init) + len(fragment))):
                self.skipped += self.started
                return False
            self.keyed = self.started = True
        elif not self._fits(len(fragment) + (len(new_init) if keyframe else 0)):
            self.skipped += self._drop() + 1
            self.behind += 1
            return False
        if new_init:
            self._put(init, False)
            self._init = init
        self._put(fragment, True)
        self.fragments += 1
        return True

    def _fits(self, size: int) -> bool:
        """Whether ``size`` more bytes may be queued: within the limit, or (so that a keyframe larger
        than the limit still goes) onto nothing but a chunk already under way."""
        under_way = len(self._chunks[0][0]) - self._offset if self._offset else 0
        return self.queued + size <= self.limit or self.queued == under_way

    def _drop(self) -> int:
        """Let go of everything not begun; the number of fragments that went."""
        begun = self._chunks.popleft() if self._offset else None
        lost = sum(is_fragment for _, is_fragment in self._chunks)
        if lost < len(self._chunks):
            self._init = None  # a new init segment went with them: the next keyframe brings it again
        self._chunks.clear()
        self.queued = 0
        if begun is not None:
            self._chunks.append(begun)
            self.queued = len(begun[0]) - self._offset
        self.keyed = False
        return lost

    def _put(self, data: bytes, is_fragment: bool) -> None:
        self._chunks.append((data, is_fragment))
        self.queued += len(data)

    def pending(self) -> memoryview | None:
        """The bytes to send next, or None when all went out."""
        if not self._chunks:
            return None
        return memoryview(self._chunks[0][0])[self._offset:]

    def sent(self, count: int) -> None:
        """``count`` bytes of ``pending()`` reached the socket."""
        self.sent_bytes += count
        self.queued -= count
        self._offset += count
        while self._chunks and self._offset >= len(self._chunks[0][0]):
            self._offset -= len(self._chunks.popleft()[0])
