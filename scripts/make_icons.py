"""Draw the page's home-screen icons (committed under appliance/web/static; run again after a change).

The appliance serves them itself: a phone adding the page to its home screen must not need the
internet. One design for every size: a full-bleed blue square (so Android may mask it to any shape)
with a white camera inside the central 60 %, the safe zone of a maskable icon.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

STATIC = Path(__file__).resolve().parent.parent / "appliance" / "static"
BLUE = (235, 111, 31)  # BGR of #1f6feb, the page's accent colour


def icon(size: int) -> np.ndarray:
    big = size * 4  # drawn large, then scaled down: smooth edges
    image = np.zeros((big, big, 3), np.uint8)
    image[:] = BLUE
    s = big / 100
    white = (255, 255, 255)
    cv2.rectangle(image, (int(22 * s), int(36 * s)), (int(78 * s), int(72 * s)), white, -1, cv2.LINE_AA)
    cv2.rectangle(image, (int(38 * s), int(29 * s)), (int(58 * s), int(37 * s)), white, -1, cv2.LINE_AA)
    cv2.circle(image, (int(50 * s), int(54 * s)), int(13 * s), BLUE, -1, cv2.LINE_AA)
    cv2.circle(image, (int(50 * s), int(54 * s)), int(8 * s), white, -1, cv2.LINE_AA)
    cv2.circle(image, (int(71 * s), int(42 * s)), int(3 * s), (40, 40, 210), -1, cv2.LINE_AA)  # the red "on" light
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def main() -> None:
    for name, size in (("icon-192.png", 192), ("icon-512.png", 512), ("apple-touch-icon.png", 180)):
        cv2.imwrite(str(STATIC / name), icon(size), [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main()
