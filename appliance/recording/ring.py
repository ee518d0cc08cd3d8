"""The pre-roll of event clips: the last seconds of *encoded* video, back to a keyframe.

A clip must start with a keyframe, so the ring keeps whole groups of pictures: the newest ones, and
the one before as long as its keyframe is needed to reach ``seconds`` back from the newest frame.
At 1.5 Mbit/s, 3 s of pre-roll and a keyframe a second that is well under 1 MiB, where a ring of
raw frames held tens.
"""

from __future__ import annotations

from collections import deque

from appliance.h264.encoder import Packet


class PacketRing:
    """Groups of pictures, oldest first; used under its owner's lock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._groups: deque[list[Packet]] = deque()
        self.bytes = 0

    def add(self, packet: Packet) -> None:
        """Keep ``packet``; a ring that has no keyframe yet skips what it could not start from."""
        if packet.keyframe:
            self._groups.append([packet])
        elif self._groups:
            self._groups[-1].append(packet)
        else:
            return
        self.bytes += len(packet.data)
        horizon = packet.captured_at - self.seconds
        while len(self._groups) > 1 and self._groups[1][0].captured_at <= horizon:
            self.bytes -= sum(len(old.data) for old in self._groups.popleft())

    def since(self, moment: float) -> list[Packet]:
        """From the last keyframe at or before ``moment`` (else the oldest kept) to the newest."""
        groups = list(self._groups)
        start = 0
        for number, group in enumerate(groups):
            if group[0].captured_at <= moment:
                start = number
        return [packet for group in groups[start:] for packet in group]

    def clear(self) -> None:
        self._groups.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups)
